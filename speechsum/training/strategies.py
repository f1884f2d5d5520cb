"""Helpers for Lightning's distributed strategies (no home-made distributed machinery)."""

from __future__ import annotations

from torch import nn


class TransformerBlocks:
    """FSDP wrap / activation-checkpointing policy that picks transformer blocks by class name.

    Follows the ``auto_wrap_policy`` callable protocol ``(module, recurse, nonwrapped_numel) →
    bool``: it recurses everywhere and wraps every module whose class name ends with one of
    ``suffixes`` (``LlamaDecoderLayer``, ``WhisperEncoderLayer``, ``Phi4MultimodalDecoderLayer``…),
    so one YAML works for any backbone.
    """

    def __init__(self, suffixes: list[str] | None = None):
        self.suffixes = tuple(suffixes or ["DecoderLayer", "EncoderLayer"])

    def __call__(self, module: nn.Module, recurse: bool, nonwrapped_numel: int = 0) -> bool:
        return recurse or type(module).__name__.endswith(self.suffixes)
