"""The parts of ``speechsum serve``: backend interface, OpenAI JSON format, HTTP layer, HF backend."""
