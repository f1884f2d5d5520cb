"""Stage 1, SFT: cross-entropy on the reference summary's tokens given audio + instruction."""

from __future__ import annotations

from torch import Tensor

from speechsum.data.batch import SpeechBatch
from speechsum.losses import masked_cross_entropy
from speechsum.stages.base import SpeechStageModule


class SFTModule(SpeechStageModule):
    """Supervised fine-tuning. Loss: token-mean cross-entropy on response tokens only (audio and
    prompt positions carry no loss); see :func:`speechsum.losses.masked_cross_entropy`."""

    def required_fields(self, split: str) -> tuple[str, ...]:
        return ("summary",)

    def sft_loss(self, batch: SpeechBatch) -> Tensor:
        if batch.response_ids is None:
            raise ValueError("SFT needs a reference `summary` on every manifest line")
        logits = self.model.response_logits(batch, batch.response_ids, batch.response_mask)
        return masked_cross_entropy(logits, batch.response_ids, batch.response_mask)

    def training_step(self, batch: SpeechBatch, batch_idx: int) -> Tensor:
        loss = self.sft_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def validation_step(self, batch: SpeechBatch, batch_idx: int) -> None:
        self.log("val/loss", self.sft_loss(batch), prog_bar=True, batch_size=len(batch), sync_dist=True)
        self.collect_val_samples(batch)

    def test_step(self, batch: SpeechBatch, batch_idx: int) -> None:
        self.log("test/loss", self.sft_loss(batch), batch_size=len(batch), sync_dist=True)
