"""Stage 3, DPO: the stage module and the cached reference log-probs."""

from speechsum.stages.dpo.module import DPOModule

__all__ = ["DPOModule"]
