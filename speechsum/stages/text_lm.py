"""Training the benchmark's text LMs from scratch: SFT plus a language-model loss on the prompt.

A random-init LM that only ever sees the loss on its few summary tokens learns the summary
*style* but not to copy names, numbers and dates out of the transcript. Pretrained LLMs (the
paper's Phi-4-mini and GPT-4o) learnt that from their pretraining text. This module gives the
benchmark's text LMs some of the same: next-token loss on every prompt token as well (transcripts
repeat names, "Hi, this is Kofi Ali … Kofi Ali: …"), weighted by ``prompt_loss_weight``. On its
own that was not enough to make them copy within minutes; the copy circuits come from the
initialisation (``TextLLM(copy_init=True)``, :mod:`speechsum.models.copy_init`):

    loss = CE(response tokens) + prompt_loss_weight · CE(prompt tokens)

each a token mean (:func:`text_lm_losses`); the prompt term predicts
prompt token ``i+1`` from tokens ``≤ i`` on real (non-padding) tokens only. Validation and test
report the response loss alone, as :class:`~speechsum.stages.sft.SFTModule` does.

Each training row is one left-padded block, prompt then response (:func:`joint_left_padded`):
a batch's width is its longest prompt + response, not its longest prompt plus its longest
response (same losses). That saves little on random batches and most of the padding on batches of
similar lengths (``data.num_buckets`` > 1; benchmarks/RESULTS.md, ``text_lm_speed``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from speechsum.data.batch import SpeechBatch
from speechsum.losses import masked_mean, token_log_probs
from speechsum.models.base import SpeechLLM, sequence_positions
from speechsum.stages.sft import SFTModule


def joint_left_padded(
    prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Each row's prompt and response as one left-padded block.

    ``prompt_ids``/``prompt_mask`` (B, P) are left-padded, ``response_ids``/``response_mask`` (B, R)
    right-padded. Returns ``input_ids``, ``attention_mask`` and ``is_response`` (all (B, N),
    N = max over rows of prompt + response length): row ``b`` holds ``N − P_b − R_b`` padding
    positions (mask 0, ids copied from elsewhere in the row), its ``P_b`` prompt tokens, then its
    ``R_b`` response tokens (``is_response`` 1).
    """
    sequence_ids = torch.cat([prompt_ids, response_ids], dim=1)
    sequence_mask = torch.cat([prompt_mask, response_mask], dim=1)
    response_lengths = response_mask.sum(1, keepdim=True)
    width = int((prompt_mask.sum(1, keepdim=True) + response_lengths).max())
    # new position j of row b is old position j + P + R_b − N (before 0: padding)
    source = torch.arange(width, device=sequence_ids.device) + prompt_ids.shape[1] + response_lengths - width
    inside = source >= 0
    source = source.clamp(min=0)
    attention_mask = sequence_mask.gather(1, source) * inside
    is_response = (source >= prompt_ids.shape[1]) & inside
    return sequence_ids.gather(1, source), attention_mask, is_response.long()


def text_lm_losses(
    logits: Tensor, input_ids: Tensor, attention_mask: Tensor, is_response: Tensor
) -> tuple[Tensor, Tensor]:
    """``(response loss, prompt loss)`` of rows laid out by :func:`joint_left_padded`.

    ``logits`` (B, N, V); position ``i`` predicts token ``i+1``. The response loss is the token-mean
    CE of the response tokens; the prompt loss that of every prompt token whose previous token is
    real (mask ``attention_mask[:, :-1] · attention_mask[:, 1:] · (1 − is_response[:, 1:])``). One
    log-softmax serves both.
    """
    # every position's row is scored (the last against a dummy id, then dropped): the logits'
    # gradient is then written whole, with no (B, N, V) zero-padding for a [:, :-1] slice
    next_ids = torch.cat([input_ids[:, 1:], input_ids[:, :1]], dim=1)
    next_token_log_probs = token_log_probs(logits, next_ids)[:, :-1]
    is_next_response = is_response[:, 1:]
    prompt_pairs = attention_mask[:, :-1] * attention_mask[:, 1:] * (1 - is_next_response)
    return masked_mean(-next_token_log_probs, is_next_response), masked_mean(-next_token_log_probs, prompt_pairs)


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
        input_ids, attention_mask, is_response = joint_left_padded(
            batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask
        )
        logits = self.model(batch.audio, input_ids, attention_mask, sequence_positions(attention_mask))
        response_loss, prompt_loss = text_lm_losses(logits, input_ids, attention_mask, is_response)
        loss = response_loss + self.prompt_loss_weight * prompt_loss
        self.log("train/loss", response_loss, prog_bar=True, batch_size=len(batch))
        self.log("train/prompt_loss", prompt_loss, batch_size=len(batch))
        return loss
