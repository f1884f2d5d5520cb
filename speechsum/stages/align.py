"""Stage 0, speech–text alignment: CTC on transcripts trains the student's CTC projector, so that
its audio tokens are (mixtures of) the LLM's own token embeddings before SFT begins."""

from __future__ import annotations

from torch import Tensor

from speechsum.data.batch import SpeechBatch
from speechsum.data.transcripts import spoken_text
from speechsum.losses import ctc_alignment_loss
from speechsum.models.asr import word_edit_distance
from speechsum.models.base import SpeechLLM
from speechsum.models.projectors import ctc_collapse
from speechsum.stages.base import SpeechStageModule


class CTCAlignModule(SpeechStageModule):
    """CTC alignment of a ``ComposedSpeechLLM(projector="ctc")``: loss
    :func:`speechsum.losses.ctc_alignment_loss` between the projector's CTC logits and the
    transcript's tokens (the LLM's tokenizer). Train the projector only (``policy.llm: frozen``);
    the SFT stage then starts from this checkpoint (``init_from``).

    Args:
        strip_speaker_labels: remove a leading ``Name:`` from each transcript line (see
            :func:`spoken_text`).
        learning_rate / warmup_steps: as in SpeechStageModule, with this stage's own defaults.
        **kwargs: the other shared stage options (SpeechStageModule; ``generation`` is unused here).
    Validation logs ``val/ctc_loss`` and ``val/token_error_rate`` (greedy CTC transcript vs the
    transcript's tokens: Σ edit distance / Σ reference tokens) and writes greedy transcripts as
    samples. Clips too short for their transcript (CTC needs at least one frame per token, plus
    one between repeated tokens) carry no loss and are counted in ``train/ctc_infeasible``.
    """

    def __init__(
        self,
        model: SpeechLLM,
        strip_speaker_labels: bool = False,
        learning_rate: float = 2e-3,
        warmup_steps: int = 20,
        **kwargs,
    ):
        super().__init__(model, learning_rate=learning_rate, warmup_steps=warmup_steps, **kwargs)
        self.strip_speaker_labels = strip_speaker_labels

    def required_fields(self, split: str) -> tuple[str, ...]:
        return ("transcript",)

    def spoken_texts(self, batch: SpeechBatch) -> list[str]:
        missing = [i for i, text in zip(batch.ids, batch.transcripts) if not text]
        if missing:
            raise ValueError(f"CTC alignment needs a `transcript` on every manifest line; missing for {missing[:3]}")
        return [spoken_text(t, self.strip_speaker_labels) for t in batch.transcripts]

    def transcript_tokens(self, batch: SpeechBatch) -> list[list[int]]:
        return self.processor.tokenizer(self.spoken_texts(batch), add_special_tokens=False)["input_ids"]

    def ctc_step(self, batch: SpeechBatch) -> tuple[Tensor, Tensor, Tensor, Tensor, list[list[int]]]:
        """CTC loss, infeasible-row count, logits ``(B, T', V + 1)``, frame counts ``(B,)``, targets."""
        logits, frame_counts = self.model.ctc_logits(batch.audio)
        targets = self.transcript_tokens(batch)
        loss, infeasible = ctc_alignment_loss(logits, frame_counts, targets, self.model.projector.blank)
        return loss, infeasible, logits, frame_counts, targets

    def training_step(self, batch: SpeechBatch, batch_idx: int) -> Tensor:
        loss, infeasible, *_ = self.ctc_step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        blank = self.model.projector.blank_embedding
        if blank.requires_grad:  # DDP refuses a trainable weight the loss never reaches: CTC does not use it
            loss = loss + 0.0 * blank.sum()  # a gradient of 0, and no update (no weight decay on vectors)
        self.log("train/ctc_infeasible", infeasible.float(), reduce_fx="sum", on_step=False, on_epoch=True,
                 batch_size=len(batch))
        return loss

    def validation_step(self, batch: SpeechBatch, batch_idx: int) -> None:
        loss, infeasible, logits, frame_counts, targets = self.ctc_step(batch)
        blank = self.model.projector.blank
        labels = logits.argmax(-1).cpu()
        hypotheses = [ctc_collapse(labels[i], int(n), blank) for i, n in enumerate(frame_counts)]
        errors = sum(word_edit_distance(ref, hyp) for ref, hyp in zip(targets, hypotheses))
        total = sum(len(ref) for ref in targets)
        # a batch with no feasible clip has no loss to average in: weight 0, but logged all the same, as every rank
        # must sync the same metrics (a rank that never logged it left the others waiting in that sync for ever)
        feasible = int(infeasible) < len(batch)
        self.log("val/ctc_loss", loss, prog_bar=True, batch_size=max(total, 1) if feasible else 0, sync_dist=True)
        # weighted by reference tokens: Σ errors / Σ tokens over the epoch (a mean of that across ranks)
        self.log("val/token_error_rate", errors / max(total, 1), prog_bar=True, batch_size=max(total, 1),
                 sync_dist=True)
        decode = self.processor.tokenizer.decode
        self.collect_val_samples(batch, [decode(h) for h in hypotheses], [decode(t) for t in targets])

    def predict_step(self, batch: SpeechBatch, batch_idx: int) -> list[dict[str, str | None]]:
        """Greedy CTC transcripts (``prediction``) next to what the audio says (``reference``); none for a
        DDP rank's padding batch (another rank writes its rows)."""
        if batch.padding:
            return []
        logits, frame_counts = self.model.ctc_logits(batch.audio)
        labels = logits.argmax(-1).cpu()
        decode = self.processor.tokenizer.decode
        return [
            {"id": i, "reference": ref, "prediction": decode(ctc_collapse(labels[row], int(n), self.model.projector.blank))}
            for row, (i, ref, n) in enumerate(zip(batch.ids, self.spoken_texts(batch), frame_counts))
        ]
