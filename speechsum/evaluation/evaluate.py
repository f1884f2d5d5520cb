"""`speechsum evaluate`: systems × test manifests → ``predictions.jsonl`` + ``metrics.json`` per system.

For each system (see :mod:`speechsum.evaluation.systems`) and each manifest, generation runs
through a Lightning ``Trainer.predict`` loop (batched, greedy unless sampling is asked for; the
accelerator, devices, strategy and precision are Lightning's), every example is scored
(:mod:`speechsum.evaluation.scoring`), and ``<out>/<system>/`` receives, each written atomically:

- ``predictions.jsonl``: one line per example: id, system, split, instruction, reference,
  prediction, transcript (what a text LM read; ``asr_transcript`` for the cascade), audio path,
  genre/style/lang from ``meta``, ``scores`` (all metrics), ``truncated``, ``num_tokens``,
  ``hallucinated`` entities and the judges' details;
- ``metrics.json``: the system (name, kind, role, stage, path), generation settings, metric
  descriptions, and ``results``: means with 95 % bootstrap CIs over all examples, per split,
  per genre and per instruction style, ``num_examples`` (scored) and ``skipped``: the examples left
  out under ``on_bad_example="skip"`` (``--on-bad-example skip``: a bad manifest line, or audio that
  fails when read), each ``{split, line, reason}``, never in the predictions nor the means;
- ``predictions.csv``: the same rows flattened for spreadsheets.

Under DDP every rank generates and scores its share; the scores are aggregated through the
torchmetrics collector ``ExampleScores`` (synced across ranks, padded duplicates dropped) and the
rows are gathered to rank 0, which writes the files: two CPU processes write what one writes
(tests/evaluation/test_evaluate_ddp.py).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import lightning as L
import torch

from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.data.dataset import SpeechSumDataset
from speechsum.data.loader import SkippedExample
from speechsum.data.manifest import (
    Example,
    ManifestError,
    OnBadExample,
    SkippedLine,
    load_manifest,
    loaded_records,
)
from speechsum.evaluation.runs import FORMAT
from speechsum.evaluation.scoring import REFERENCE_FREE, Scorer, aggregate, collect_scores
from speechsum.evaluation.systems import SystemSpec, build_model
from speechsum.models.base import SpeechLLM
from speechsum.models.generation import GenerationSettings, generate_texts
from speechsum.utils.cpu_bf16 import cpu_precision
from speechsum.utils.distributed import gather_objects
from speechsum.utils.io import write_atomic, write_jsonl

log = logging.getLogger(__name__)


class GenerationModule(L.LightningModule):
    """Wraps a ``SpeechLLM`` for ``Trainer.predict``: each batch → rows ``{id, prediction,
    truncated, num_tokens}`` via :func:`speechsum.models.generation.generate_texts` (the same
    decoding every stage uses)."""

    def __init__(self, model: SpeechLLM, generation: GenerationSettings):
        super().__init__()
        self.model = model
        self.generation = generation

    @property
    def processor(self):
        return self.model.processor

    def predict_step(self, batch, batch_idx: int) -> list[dict]:
        generated = generate_texts(self.model, batch, self.generation)
        return [
            {"id": i, "prediction": text, "truncated": cut, "num_tokens": n}
            for i, text, cut, n in zip(
                batch.ids, generated.texts, generated.truncated.tolist(), generated.num_tokens.tolist()
            )
        ]


@dataclass
class EvalOptions:
    """How to run: decoding, batching, Lightning trainer settings, output folder."""

    out: str
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 8
    max_batch_seconds: float = 600.0
    accelerator: str = "auto"
    devices: str | int = 1
    strategy: str = "auto"
    precision: str | None = None
    seed: int = 0
    num_resamples: int = 1000
    asr_cache: str | None = None  # JSONL of Whisper transcripts (cascade); None: <out>/asr_cache.jsonl
    asr_dtype: str = "float32"  # the cascade's Whisper: float32 | bfloat16
    on_bad_example: OnBadExample = "error"  # "skip": leave bad lines / unreadable audio out, listed in metrics.json
    require_reference: bool = True  # a `summary` on every line; False when no metric compares with one (REFERENCE_FREE)
    trainer_kwargs: dict = field(default_factory=dict)

    @property
    def generation(self) -> GenerationSettings:
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens, do_sample=self.do_sample, temperature=self.temperature,
            top_p=self.top_p,
        )


def predict_trainer(options: EvalOptions) -> L.Trainer:
    """The Lightning trainer of every predict loop here (no logger, no checkpoints)."""
    kwargs = dict(
        accelerator=options.accelerator, devices=options.devices, strategy=options.strategy,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
    )
    if options.precision:
        kwargs["precision"] = cpu_precision(options.precision, options.accelerator)
    return L.Trainer(**(kwargs | options.trainer_kwargs))


def _gather(rows: list[dict]) -> list[dict]:
    """All ranks' rows on every rank (identity in a single process)."""
    return [row for part in gather_objects(rows) for row in part]


def _is_global_zero() -> bool:
    initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    return not initialized or torch.distributed.get_rank() == 0


def read_for_asr(examples: list[Example], on_bad_example: OnBadExample) -> tuple[list[Example], list, list[SkippedLine]]:
    """``(examples, their 16 kHz waveforms, skipped)``: read as a :class:`SpeechSumDataset` reads its
    items, so audio that fails raises or, under "skip", is left out, logged and listed."""
    dataset = SpeechSumDataset(examples, 16_000, on_bad_example=on_bad_example)
    kept, waveforms, skipped = [], [], []
    for item in map(dataset.__getitem__, range(len(dataset))):
        if isinstance(item, SkippedExample):
            log.warning("skipping %s", item.message)
            skipped.append(SkippedLine(item.line, item.reason))
        else:
            kept.append(item[0])
            waveforms.append(item[1])
    return kept, waveforms, skipped


def cascade_manifest(manifest: Path, out: Path, transcriber, examples: list[Example],
                     on_bad_example: OnBadExample = "error") -> tuple[Path, list[Example], list[SkippedLine]]:
    """A copy of ``manifest`` whose ``transcript`` is Whisper's transcript of the audio (the
    reference transcript is kept as ``meta.reference_transcript``), written to ``out``; returns
    ``(out, examples as in the copy, examples skipped for their audio)`` so the copy need not be
    parsed (and its audio probed) again."""
    examples, waveforms, skipped = read_for_asr(examples, on_bad_example)
    transcripts = transcriber.transcribe(waveforms, sample_rate=16_000, progress=True)
    lines, cascaded = [], []
    records = loaded_records(manifest, examples)
    for example, transcript in zip(examples, transcripts):
        record = dict(records[example.id])
        record["meta"] = dict(record.get("meta") or {}) | {"reference_transcript": record.get("transcript")}
        record["audio"] = example.audio  # absolute: the copy lives elsewhere
        record["transcript"] = transcript or " "
        lines.append(record)
        cascaded.append(replace(example, transcript=record["transcript"], meta=record["meta"]))
    write_jsonl(out, lines)
    return out, cascaded, skipped


def generate_split(model: SpeechLLM, manifest: Path, options: EvalOptions,
                   examples: list[Example] | None = None) -> tuple[list[dict], list[SkippedLine]]:
    """This rank's predictions ``{id, prediction, truncated, num_tokens}`` for ``manifest`` (all of
    them in a single process), and the lines skipped (``options.on_bad_example``) at load or read;
    ``examples``: the manifest's, loaded and checked already (then only read-time skips are new)."""
    datamodule = predict_datamodule(model, manifest, options, examples)
    outputs = predict_trainer(options).predict(GenerationModule(model, options.generation), datamodule=datamodule)
    rows = list({row["id"]: row for batch in outputs or [] for row in batch}.values())
    return rows, datamodule.skipped.get("predict", [])


def predict_datamodule(model: SpeechLLM, manifest: Path, options: EvalOptions,
                       examples: list[Example] | None = None) -> SpeechSumDataModule:
    """The data module every system's predict loop reads ``manifest`` through: manifest order, at
    most ``options.batch_size`` examples and ``options.max_batch_seconds`` of audio per batch.
    ``examples``: the manifest's, loaded and checked already (:func:`load_split`)."""
    datamodule = SpeechSumDataModule(
        predict_manifest=str(manifest), max_batch_seconds=options.max_batch_seconds,
        max_batch_size=options.batch_size, num_buckets=1, require_transcript=_reads_transcripts(model),
        allow_paths_outside_manifest_dir=True, on_bad_example=options.on_bad_example,
    )
    datamodule.processor = model.processor
    if examples is not None:
        datamodule.checked_examples["predict"] = examples  # not parsed and its audio probed a second time
    return datamodule


def load_split(spec: SystemSpec, manifest: Path, model: SpeechLLM, options: EvalOptions) -> tuple[list[Example], list[SkippedLine]]:
    """The examples of ``manifest`` that ``spec`` is evaluated on (each with a reference summary unless
    ``options.require_reference`` is off; with the reference transcript for a text LM) and the lines skipped (``options.on_bad_example``)."""
    needs_transcript = _reads_transcripts(model) and spec.kind != "cascade"  # a cascade reads Whisper's
    try:
        return load_manifest(manifest, require_summary=options.require_reference, require_transcript=needs_transcript,
                             allow_paths_outside_manifest_dir=True, on_bad_example=options.on_bad_example,
                             reserved_text=model.processor.reserved_text)
    except ManifestError as err:
        if "missing field 'summary'" not in err.reason:
            raise
        raise ManifestError(err.path, err.line, f"{err.reason}: the reference summary ROUGE and BERTScore compare "
                            f"with; without references evaluate with --metrics {','.join(REFERENCE_FREE)} (the fact "
                            "judge needs meta.facts), or add a summary to every line") from err


def _reads_transcripts(model: SpeechLLM) -> bool:
    return getattr(model.processor, "reads_transcripts", False)


def _example_row(spec: SystemSpec, split: str, example: Example, index: int) -> dict:
    meta = example.meta or {}
    return {
        "id": example.id, "system": spec.name, "split": split, "instruction": example.instruction,
        "reference": example.summary, "transcript": example.transcript, "audio": example.audio,
        "lang": example.lang, "genre": meta.get("genre"), "style": meta.get("style"), "meta": meta, "index": index,
    }


def _split_rows(spec: SystemSpec, split: str, manifest: Path, model: SpeechLLM, options: EvalOptions,
                transcribers: dict, first_index: int) -> tuple[list[dict], list[dict], list[dict]]:
    """(info rows of every example of the split, this rank's generated rows joined with their info,
    the skipped lines ``{split, line, reason}`` this rank knows of)."""
    examples, skipped = load_split(spec, manifest, model, options)
    source = manifest
    if spec.kind == "cascade":
        if spec.asr_model not in transcribers:
            from speechsum.models.asr import WhisperTranscriber

            cache = options.asr_cache or Path(options.out) / "asr_cache.jsonl"  # per-rank shards under DDP (JsonlCache)
            transcribers[spec.asr_model] = WhisperTranscriber(spec.asr_model, batch_size=options.batch_size, cache=cache,
                                                              dtype=options.asr_dtype)
        asr_path = Path(options.out) / spec.name / "asr" / f"{split}.jsonl"
        source, examples, unread = cascade_manifest(manifest, asr_path, transcribers[spec.asr_model], examples,
                                                    options.on_bad_example)
        skipped += unread
    info = [_example_row(spec, split, e, first_index + i) for i, e in enumerate(examples)]
    by_id = {row["id"]: row for row in info}
    local = []
    generated_rows, read_skipped = generate_split(model, source, options, examples)
    known = {s.line for s in skipped}  # lines skipped at load are not in `examples`: only read-time skips are new
    skipped += [s for s in read_skipped if s.line not in known]
    for generated in generated_rows:
        row = by_id[generated["id"]] | generated
        if spec.kind == "cascade":
            row["asr_transcript"] = row["transcript"]
            row["transcript"] = row["meta"].get("reference_transcript")
        local.append(row)
    return info, local, [{"split": split, "line": s.line, "reason": s.reason} for s in skipped]


def evaluate_system(spec: SystemSpec, manifests: dict[str, Path], options: EvalOptions, scorer: Scorer,
                    transcribers: dict | None = None) -> dict:
    """Generate, score and write one system's run folder; returns its ``metrics.json`` content
    (on global rank 0; ``{}`` on the other ranks)."""
    started = time.time()
    manifests = spec.manifests(manifests)
    L.seed_everything(options.seed, verbose=False)
    model = build_model(spec)
    run_dir = Path(options.out) / spec.name
    transcribers = {} if transcribers is None else transcribers
    info: list[dict] = []
    local: list[dict] = []
    skipped: list[dict] = []
    for split, manifest in manifests.items():
        split_info, split_local, split_skipped = _split_rows(spec, split, manifest, model, options, transcribers,
                                                             len(info))
        info += split_info
        local += split_local
        skipped += split_skipped
    scorer.score(local)  # each rank scores its own share
    values = collect_scores(local, sorted(scorer.descriptions))
    rows = sorted({row["index"]: row for row in _gather(local)}.values(), key=lambda row: row["index"])
    skipped = sorted({(s["split"], s["line"]): s for s in _gather(skipped)}.values(),
                     key=lambda s: (list(manifests).index(s["split"]), s["line"]))
    if not _is_global_zero():
        return {}
    positions = values.pop("example_position")
    groups = {field: [info[p][field] for p in positions] for field in ("split", "genre", "style")}
    result = {
        "format": FORMAT,
        "system": spec.to_dict(),
        "generation": asdict(options.generation),
        "splits": {split: str(path) for split, path in manifests.items()},
        "metrics": scorer.descriptions,
        "results": aggregate(values, groups, options.num_resamples, options.seed),
        "unjudged": sum(1 for row in rows if "llm_judge" in row and row["scores"].get("llm_judge") is None),
        "num_examples": len(rows),
        "skipped": skipped,
        "seconds": round(time.time() - started, 2),
    }
    for row in rows:
        row.pop("meta", None)  # large (facts, entities); the manifest has it
        row.pop("index", None)
    # metrics.json last, and an earlier run's gone first: a folder with it holds one run's files, never
    # this run's predictions beside the last run's metrics (speechsum report refuses a folder without it)
    (run_dir / "metrics.json").unlink(missing_ok=True)
    write_jsonl(run_dir / "predictions.jsonl", rows)
    write_atomic(run_dir / "predictions.csv", predictions_csv(rows))
    write_atomic(run_dir / "metrics.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    log.info("%s: %d examples, metrics in %s", spec.name, len(rows), run_dir / "metrics.json")
    if skipped:
        log.warning("%s: %d example(s) skipped (bad line or unreadable audio), not scored; listed under `skipped` "
                    "in %s", spec.name, len(skipped), run_dir / "metrics.json")
    return result


def predictions_csv(rows: list[dict]) -> str:
    """Rows flattened: fixed columns, then one column per score not among them (the ``truncated``
    score, 1.0 or 0.0, is the ``truncated`` column: its header was written twice)."""
    columns = ["id", "system", "split", "genre", "style", "lang", "instruction", "reference", "prediction",
               "truncated", "num_tokens"]
    score_keys = sorted({key for row in rows for key in row["scores"]} - set(columns))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns + score_keys)
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns] + [row["scores"].get(k, "") for k in score_keys])
    return buffer.getvalue()


def evaluate(specs: list[SystemSpec], manifests: dict[str, Path], options: EvalOptions, scorer: Scorer) -> dict[str, dict]:
    """Every system on every manifest; returns ``{system name: metrics.json content}``."""
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"system names must be unique, got {names}")
    for name in names:  # an earlier run's results of the systems about to run again are not theirs any more: a
        # rerun killed midway left them complete-looking, and `speechsum report` took them as current; now each
        # folder holds this run's metrics.json once it is complete, or none (report names the folder unfinished)
        (Path(options.out) / name / "metrics.json").unlink(missing_ok=True)
    transcribers: dict = {}
    return {spec.name: evaluate_system(spec, manifests, options, scorer, transcribers) for spec in specs}
