"""Sequence log-probs of preference pairs, and the DPO reference's log-probs precomputed once and
cached on disk (keyed by the reference weights and the data), so a DPO step needs one forward.

Shapes: B pairs, R response tokens (chosen and rejected padded to one length).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import DynamicCache

from speechsum.data.batch import SpeechBatch
from speechsum.losses import token_log_probs
from speechsum.models.base import SpeechLLM
from speechsum.models.decode import generation_positions
from speechsum.models.static_decoder import LAYOUTS
from speechsum.utils.io import atomic_path

log = logging.getLogger(__name__)


def encode_audio_once(model: SpeechLLM, audio: dict[str, Tensor]) -> dict[str, Tensor]:
    """The audio dict with the encoder already applied when the backbone can
    (``SpeechLLM.precompute_audio``): forwards that reuse it skip the encoder. Backbones that
    cannot split encoding off return ``audio`` unchanged."""
    return model.precompute_audio(audio)


def encoder_trains(model: SpeechLLM) -> bool:
    """Whether the audio encoder has trainable weights (then a reference must encode on its own)."""
    return any(p.requires_grad for p in model.module_groups().encoder.parameters())


def _two_copies(value):
    """``[x; x]`` along dim 0 for every tensor and list of the audio dict (rows follow the batch)."""
    if isinstance(value, Tensor):
        return torch.cat([value, value], dim=0)
    if isinstance(value, dict):
        return {key: _two_copies(item) for key, item in value.items()}
    if isinstance(value, list):  # per-clip lists (e.g. content keys)
        return value + value
    return value


def _pad_right(ids: Tensor, mask: Tensor, length: int, pad_id: int) -> tuple[Tensor, Tensor]:
    extra = length - ids.shape[1]
    return nn.functional.pad(ids, (0, extra), value=pad_id), nn.functional.pad(mask, (0, extra), value=0)


def pair_token_logprobs(
    model: SpeechLLM, batch: SpeechBatch, audio: dict[str, Tensor] | None = None, share_prompt: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-token log-probs of the chosen and the rejected response, sharing each example's prompt.

    ``audio``: the batch's audio, already encoded by :func:`encode_audio_once` so the encoder runs
    once per example. With ``share_prompt`` and where the backbone allows
    (:func:`shared_prefix_pair_logprobs`) the prompt
    runs once and both responses continue from its cache; otherwise the batch runs as ``2B`` rows
    ``[chosen rows; rejected rows]`` in one forward. Returns ``(chosen_logps, chosen_mask,
    rejected_logps, rejected_mask)``, each ``(B, R)``, log-probs 0 on padding; sums over R are the
    sequence log-probs.
    """
    if batch.chosen_ids is None or batch.rejected_ids is None:
        raise ValueError("DPO needs `chosen` and `rejected` on every manifest line (data: preference: true)")
    length = max(batch.chosen_ids.shape[1], batch.rejected_ids.shape[1])
    pad_id = model.processor.pad_id
    chosen_ids, chosen_mask = _pad_right(batch.chosen_ids, batch.chosen_mask, length, pad_id)
    rejected_ids, rejected_mask = _pad_right(batch.rejected_ids, batch.rejected_mask, length, pad_id)
    audio = batch.audio if audio is None else audio
    shared = share_prompt and shared_prefix_pair_logprobs(
        model, batch, audio, chosen_ids, chosen_mask, rejected_ids, rejected_mask)
    if shared:
        return shared[0], chosen_mask, shared[1], rejected_mask
    doubled = replace(
        batch,
        ids=batch.ids + batch.ids,
        audio=_two_copies(audio),
        prompt_ids=_two_copies(batch.prompt_ids),
        prompt_mask=_two_copies(batch.prompt_mask),
    )
    logps = model.response_logprobs(
        doubled, torch.cat([chosen_ids, rejected_ids]), torch.cat([chosen_mask, rejected_mask])
    )
    size = len(batch)
    return logps[:size], chosen_mask, logps[size:], rejected_mask


def activation_checkpointing(module: nn.Module) -> bool:
    """Whether a HF model recomputes activations in training (``is_activation_checkpointing`` in
    transformers ≥ 5.x, ``is_gradient_checkpointing`` before)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # the first never warns
        try:
            return bool(getattr(module, name))
        except AttributeError:
            continue
    return False


def shared_prefix_pair_logprobs(
    model: SpeechLLM, batch: SpeechBatch, audio: dict[str, Tensor],
    chosen_ids: Tensor, chosen_mask: Tensor, rejected_ids: Tensor, rejected_mask: Tensor,
) -> tuple[Tensor, Tensor] | None:
    """Chosen and rejected log-probs ``(B, R)`` from ONE prompt forward: the prompt (its attended
    positions only) fills a ``DynamicCache``, which is repeated for rows ``[c0, r0, c1, r1, …]``
    whose responses then run on it; the prompt's last logits predict each response's first token.
    The LM reads P + 2R positions per pair instead of 2(P + R), with the same log-probs and
    gradients as the doubled forward (tests). None where it does not apply: backbones whose prompt
    carries extra inputs (Phi-4-MM, Qwen2-Audio), or gradient checkpointing (no cache in training)."""
    lm = model.causal_lm()
    if lm is None or activation_checkpointing(lm):
        return None
    prompt = model.decode_prompt(audio, batch.prompt_ids, batch.prompt_mask)
    if prompt.extra:
        return None
    prompt = prompt.attended_only()
    cache = DynamicCache(config=lm.config)
    first = lm(input_ids=prompt.ids, inputs_embeds=prompt.embeds, attention_mask=prompt.mask,
               position_ids=generation_positions(prompt.mask), cache=cache, use_cache=True, logits_to_keep=1).logits
    if cache.get_seq_length() != prompt.mask.shape[1]:
        return None  # the LM kept no cache
    cache.batch_repeat_interleave(2)
    responses = torch.stack([chosen_ids, rejected_ids], 1).flatten(0, 1)  # (2B, R): c0, r0, c1, r1, …
    response_mask = torch.stack([chosen_mask, rejected_mask], 1).flatten(0, 1)
    prompt_mask = prompt.mask.repeat_interleave(2, dim=0)
    inputs = {"input_ids": responses, "attention_mask": torch.cat([prompt_mask, response_mask], 1),
              "position_ids": prompt_mask.sum(1, keepdim=True) + torch.arange(responses.shape[1], device=responses.device),
              "cache": cache, "use_cache": True}
    # the prompt's last logits predict each response's first token: (2B, 1)
    first_logps = token_log_probs(first[:, -1].repeat_interleave(2, dim=0), responses[:, 0])[:, None]
    if plain_head(lm):  # the LM head on the response tokens only, not on their padding
        hidden = lm.get_decoder()(**inputs).last_hidden_state[:, :-1]  # [:, j] predicts responses[:, j + 1]
        rest = kept_token_logprobs(lm.get_output_embeddings(), hidden, responses[:, 1:], response_mask[:, 1:])
    else:
        rest = token_log_probs(lm(**inputs).logits[:, :-1], responses[:, 1:])
    logps = (torch.cat([first_logps, rest], 1) * response_mask).view(len(batch), 2, -1)
    return logps[:, 0], logps[:, 1]


def plain_head(lm: nn.Module) -> bool:
    """Whether ``lm``'s logits are its output embedding applied to its decoder's last hidden states
    (no logit scaling or soft-capping after the head): the decoder layouts the static decoder knows."""
    config = lm.config
    return (config.model_type in LAYOUTS and not getattr(config, "final_logit_softcapping", None)
            and lm.get_output_embeddings() is not None)


def kept_token_logprobs(head: nn.Module, hidden: Tensor, token_ids: Tensor, mask: Tensor) -> Tensor:
    """``log softmax(head(hidden))[token_ids]`` ``(N, R)`` float32, with ``head`` run only where
    ``mask`` ``(N, R)`` is 1 (0 elsewhere). ``hidden`` ``(N, R, C)``. Where responses of one batch
    differ in length most padded positions are never scored; with a large vocabulary the head is
    most of the work, so its cost follows the real tokens, not the padded ``N · R``."""
    keep = mask.bool()
    values = token_log_probs(head(hidden[keep]), token_ids[keep])
    return torch.zeros(token_ids.shape, dtype=values.dtype, device=values.device).masked_scatter(keep, values)


def weights_fingerprint(model: nn.Module, frozen_sample: int = 4096) -> str:
    """SHA-256 identity of a model's weights: every trainable tensor in full, and for frozen ones
    name, shape, dtype and an evenly strided sample of ``frozen_sample`` values (cheap even for
    billions of frozen weights, yet a different checkpoint or backbone changes it)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict(keep_vars=True).items()):
        values = tensor.detach()
        digest.update(f"{name}|{tuple(values.shape)}|{values.dtype}|".encode())
        if not (isinstance(tensor, nn.Parameter) and tensor.requires_grad):
            flat = values.reshape(-1)
            values = flat[:: max(1, flat.numel() // frozen_sample)]
        digest.update(values.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def data_fingerprint(dataset: Any) -> str:
    """SHA-256 of what a split's reference log-probs depend on (``dataset``: a
    :class:`~speechsum.data.dataset.SpeechSumDataset`): every example's fields and, for an audio
    file, its size and modification time, so that a clip replaced at the same path is recomputed, never
    served stale; for a Hugging Face split (audio in its table) the table's fingerprint as well."""
    digest = hashlib.sha256(str(getattr(getattr(dataset.open_audio, "table", None), "_fingerprint", "")).encode())
    for example in dataset.examples:
        fields = {name: value for name, value in asdict(example).items() if name != "origin"}  # where, not what
        digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
        if dataset.open_audio is None:  # `audio` is a file's path
            try:
                stat = os.stat(example.audio)
                digest.update(f"|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(b"|unreadable\n")
    return digest.hexdigest()


def cache_path(cache_dir: str | Path, reference_id: str, data: str, settings: str) -> Path:
    """``{cache_dir}/reference-{hash}.pt``, the hash over (reference weights, the data's
    :func:`data_fingerprint`, settings such as precision and audio truncation) — a different model,
    data set or changed clip never hits it."""
    key = hashlib.sha256(f"{reference_id}|{data}|{settings}".encode()).hexdigest()[:24]
    return Path(cache_dir) / f"reference-{key}.pt"


@torch.no_grad()
def compute_reference_logps(
    sequence_logps: Callable[[SpeechBatch], tuple[Tensor, Tensor]],
    batches: Iterable[SpeechBatch],
    total: int | None = None,
    desc: str = "reference log-probs",
) -> dict[str, tuple[float, float]]:
    """``{example id: (chosen sum, rejected sum)}`` over ``batches`` with ``sequence_logps(batch)``
    returning the reference's ``(B,)`` chosen and rejected sequence log-probs."""
    table: dict[str, tuple[float, float]] = {}
    for batch in tqdm(batches, total=total, desc=desc, unit="batch"):
        chosen, rejected = sequence_logps(batch)
        for example_id, c, r in zip(batch.ids, chosen.tolist(), rejected.tolist()):
            table[example_id] = (c, r)
    return table


def save_table(path: Path, table: dict[str, tuple[float, float]], info: dict) -> None:
    """Write atomically (:func:`speechsum.utils.io.atomic_path`): a crash never leaves half a cache."""
    ids = sorted(table)
    payload = {
        "ids": ids,
        "chosen": torch.tensor([table[i][0] for i in ids], dtype=torch.float64),
        "rejected": torch.tensor([table[i][1] for i in ids], dtype=torch.float64),
        "info": info,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_table(path: Path) -> dict[str, tuple[float, float]] | None:
    """The cached table at ``path``; None when there is none or it cannot be read (damaged outside
    :func:`save_table`'s atomic write, e.g. a copy cut short): it is then computed again, said in a
    warning naming it (a torch.load traceback before)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return {i: (c, r) for i, c, r in zip(payload["ids"], payload["chosen"].tolist(), payload["rejected"].tolist(),
                                             strict=True)}
    except (RuntimeError, EOFError, KeyError, TypeError, ValueError, AttributeError, pickle.UnpicklingError) as err:
        log.warning("%s: unreadable reference log-probs (%s: %s); computing them again", path, type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "")
        return None
