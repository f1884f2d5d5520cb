"""Training the benchmark's text LMs from scratch: SFT plus a language-model loss on the prompt.

A random-init LM that only ever sees the loss on its few summary tokens learns the summary
*style* but not to copy names, numbers and dates out of the transcript. Pretrained LLMs (the
paper's Phi-4-mini and GPT-4o) learnt that from their pretraining text. This module gives the
benchmark's text LMs some of the same: next-token loss on every prompt token as well (transcripts
repeat names, "Hi, this is Kofi Ali … Kofi Ali: …"), weighted by ``prompt_loss_weight``. On its
own that was not enough to make them copy within minutes; the copy circuits come from the
initialisation (``TextLLM(copy_init=True)``, :mod:`speechsum.models.copy_init`):

    loss = CE(response tokens) + prompt_loss_weight · CE(prompt tokens)

each a token mean (:func:`speechsum.losses.masked_cross_entropy`); the prompt term predicts
prompt token ``i+1`` from tokens ``≤ i`` on real (non-padding) tokens only. Validation and test
report the response loss alone, as :class:`~speechsum.stages.sft.SFTModule` does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from speechsum.data.batch import SpeechBatch
from speechsum.losses import masked_cross_entropy
from speechsum.models.base import SpeechLLM, sequence_positions
from speechsum.stages.sft import SFTModule


def prompt_lm_loss(logits: Tensor, prompt_ids: Tensor, prompt_mask: Tensor) -> Tensor:
    """Token-mean CE of each prompt token given the ones before it.

    ``logits`` (B, P, V) for the left-padded ``prompt_ids`` (B, P); position ``i`` predicts token
    ``i+1`` where both are real tokens: mask ``prompt_mask[:, :-1] · prompt_mask[:, 1:]``.
    """
    mask = prompt_mask[:, :-1] * prompt_mask[:, 1:]
    return masked_cross_entropy(logits[:, :-1], prompt_ids[:, 1:], mask)


class TextLMModule(SFTModule):
    """SFT of a text LM with an extra next-token loss on its prompt (transcript + instruction).

    Args:
        model: the text LM (``speechsum.models.text_llm.TextLLM``).
        prompt_loss_weight: weight of the prompt LM loss (0: plain SFT).
        **kwargs: everything :class:`~speechsum.stages.base.SpeechStageModule` takes.
    """

    def __init__(self, model: SpeechLLM, prompt_loss_weight: float = 1.0, **kwargs):
        super().__init__(model, **kwargs)
        self.prompt_loss_weight = prompt_loss_weight

    def training_step(self, batch: SpeechBatch, batch_idx: int) -> Tensor:
        if batch.response_ids is None:
            raise ValueError("TextLMModule needs a reference `summary` on every manifest line")
        prompt_length = batch.prompt_ids.shape[1]
        input_ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)
        attention_mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1)
        logits = self.model(batch.audio, input_ids, attention_mask, sequence_positions(attention_mask))
        response_loss = masked_cross_entropy(
            logits[:, prompt_length - 1 : -1], batch.response_ids, batch.response_mask
        )
        prompt_loss = prompt_lm_loss(logits[:, :prompt_length], batch.prompt_ids, batch.prompt_mask)
        loss = response_loss + self.prompt_loss_weight * prompt_loss
        self.log("train/loss", response_loss, prog_bar=True, batch_size=len(batch))
        self.log("train/prompt_loss", prompt_loss, batch_size=len(batch))
        return loss
