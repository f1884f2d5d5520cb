"""The bundled benchmark: spoken documents with known facts, synthesised offline with espeak-ng."""
