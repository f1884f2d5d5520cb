"""``speechsum evaluate --encode-only``: the students' frozen-encoder frames of every test clip, written
to their feature cache ahead of the evaluations.

A composed student whose encoder is frozen and that has a ``feature_cache`` reads each clip's encoder
frames from disk when they are there (:mod:`speechsum.models.feature_cache`), else encodes the clip
and writes them. The pipeline evaluates three students with the same frozen encoder on the same test
audio, two of them side by side: without this, both encoded the clips neither had written yet. Here
the encoder runs once per clip, through the same predict loop, data module and batches as the
evaluation (:func:`~speechsum.evaluation.evaluate.predict_datamodule`), so the frames on disk are the
ones the evaluation would have computed itself and its predictions do not change
(tests/evaluation/test_encode.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L

from speechsum.evaluation.evaluate import EvalOptions, load_split, predict_datamodule, predict_trainer
from speechsum.evaluation.systems import SystemSpec, build_model
from speechsum.models.base import SpeechLLM

log = logging.getLogger(__name__)


class EncodingModule(L.LightningModule):
    """Wraps a ``SpeechLLM`` for ``Trainer.predict``: each batch's audio through
    :meth:`~speechsum.models.base.SpeechLLM.precompute_audio` (for a composed student with a cache:
    cached clips read, the others encoded and written); returns the batch's example count."""

    def __init__(self, model: SpeechLLM):
        super().__init__()
        self.model = model

    def predict_step(self, batch, batch_idx: int) -> int:
        self.model.precompute_audio(batch.audio)
        return len(batch.ids)


def cache_reason(model: SpeechLLM) -> str | None:
    """None when ``model`` reads frozen-encoder frames from a feature cache; else why encoding ahead
    would write nothing it reads."""
    if getattr(model, "feature_cache", None) is None:
        return "it has no feature cache (model.init_args.feature_cache)"
    if not model.encoder_frozen():
        return "its encoder trains (the cache holds frozen encoders' frames only)"
    return None


def encode_system(spec: SystemSpec, manifests: dict[str, Path], options: EvalOptions) -> dict:
    """Fill ``spec``'s feature cache with the frames of every clip of its test manifests; returns
    ``{system, cache, splits: {split: {examples, clips_encoded, clips_cached}}, seconds}`` (this
    process's counts), or ``{system, skipped}`` with the reason when the student reads no cache."""
    if spec.kind != "student":
        raise ValueError(f"system {spec.name!r}: --encode-only takes student systems (speech LLMs on audio), "
                         f"not kind {spec.kind}")
    started = time.time()
    L.seed_everything(options.seed, verbose=False)
    model = build_model(spec)
    reason = cache_reason(model)
    if reason is not None:
        log.warning("%s: nothing to encode ahead: %s", spec.name, reason)
        return {"system": spec.name, "skipped": reason}
    cache = model.feature_cache
    splits = {}
    for split, manifest in spec.manifests(manifests).items():
        hits, misses = cache.hits, cache.misses
        examples, _ = load_split(spec, manifest, model, options)
        datamodule = predict_datamodule(model, manifest, options, examples)
        counts = predict_trainer(options).predict(EncodingModule(model), datamodule=datamodule) or []
        if cache.unwritable:  # read only: the stage's work would be lost, though evaluating from it works
            raise PermissionError(f"{spec.name}: feature cache {cache.root}: cannot write to it ({cache.unwritable}), "
                                  "so encoding ahead stores nothing; make it writable or set "
                                  "model.init_args.feature_cache to a folder that is")
        splits[split] = {"examples": sum(counts), "clips_encoded": cache.misses - misses,
                         "clips_cached": cache.hits - hits}
        log.info("%s, %s: %d clips encoded, %d already cached, in %s", spec.name, split,
                 splits[split]["clips_encoded"], splits[split]["clips_cached"], cache.root)
    return {"system": spec.name, "cache": str(cache.root), "splits": splits,
            "seconds": round(time.time() - started, 2)}
