"""Speech LLM backbones behind one interface (:class:`speechsum.models.base.SpeechLLM`).

Importing this package is cheap: the backbones (which import transformers) load only through
:func:`import_backbones`.
"""

from __future__ import annotations

import importlib

# Every backbone module: importing one registers its SpeechLLM subclasses, so jsonargparse (the
# Lightning CLI, the checkpoint loader) resolves short class names such as ``ComposedSpeechLLM``.
BACKBONE_MODULES = (
    "speechsum.models.composed",
    "speechsum.models.phi4mm",
    "speechsum.models.qwen2_audio",
    "speechsum.models.text_llm",
)


def import_backbones() -> None:
    """Import every module of :data:`BACKBONE_MODULES` (idempotent)."""
    for name in BACKBONE_MODULES:
        importlib.import_module(name)
