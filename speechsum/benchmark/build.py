"""Build the bundled benchmark: documents -> espeak-ng audio -> manifests, in a process pool, atomically.

Layout of ``OUT``::

    audio/<doc_id>.wav     16 kHz mono PCM-16, turns joined by 0.2–0.5 s pauses; shared by its instructions
    train.jsonl val.jsonl test.jsonl test_unseen.jsonl test_xling.jsonl   (one line per instruction)
    kd_train.jsonl         only with --kd-train-docs N: more training audio with transcripts and
                           instructions but no ``summary`` (the paper's KD set needs no references)
    benchmark.json         version, seed, size, counts, hours of audio, build seconds

Everything except ``benchmark.json``'s timing is a pure function of the seed: every document draws
from its own ``random.Random(f"{seed}/{doc_id}/...")``, so the worker count does not matter. The
build runs in a temporary sibling of ``OUT`` (:func:`speechsum.training.callbacks.write_dir_atomically`) and is
renamed into place only when complete.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechsum.benchmark.documents import GENRES, XLING_LANGS, Document, generate_document
from speechsum.benchmark.instructions import choose_instructions, render_reference
from speechsum.benchmark.lexicon import GENRE_NOUN, WORLDS
from speechsum.utils.io import write_dir_atomically

BENCHMARK_VERSION = "1.0"
SAMPLE_RATE = 16000
MIN_SECONDS, MAX_SECONDS = 15.0, 90.0
SPLITS = ("train", "val", "test", "test_unseen", "test_xling")
KD_SPLIT = "kd_train"  # written only when it has documents
ALL_SPLITS = (*SPLITS, KD_SPLIT)


@dataclass(frozen=True)
class SplitPlan:
    """``documents`` documents with ``instructions`` instructions (distinct styles) each."""

    documents: int
    instructions: int


SIZES: dict[str, dict[str, SplitPlan]] = {
    "tiny": {"train": SplitPlan(4, 3), "val": SplitPlan(2, 1), "test": SplitPlan(2, 1),
             "test_unseen": SplitPlan(2, 1), "test_xling": SplitPlan(2, 1), KD_SPLIT: SplitPlan(0, 3)},
    "small": {"train": SplitPlan(100, 3), "val": SplitPlan(20, 1), "test": SplitPlan(30, 1),
              "test_unseen": SplitPlan(30, 1), "test_xling": SplitPlan(30, 1), KD_SPLIT: SplitPlan(0, 3)},
    "default": {"train": SplitPlan(1000, 3), "val": SplitPlan(100, 1), "test": SplitPlan(100, 2),
                "test_unseen": SplitPlan(100, 2), "test_xling": SplitPlan(100, 2), KD_SPLIT: SplitPlan(0, 3)},
}


def doc_language_and_genre(split: str, index: int) -> tuple[str, str]:
    """Genres cycle through the documents of a split; cross-lingual documents alternate languages."""
    if split == "test_xling":
        count = len(XLING_LANGS)
        return XLING_LANGS[index % count], GENRES[(index // count) % len(GENRES)]
    return "en", GENRES[index % len(GENRES)]


def synthesize_document(doc: Document, seed: int) -> np.ndarray:
    """The document's audio: float32 mono at 16 kHz, 0.15 s lead-in, 0.2–0.5 s between turns."""
    from speechsum.benchmark.tts import synthesize_many

    rng = random.Random(f"{seed}/{doc.doc_id}/audio")
    speech = synthesize_many([(turn.text, doc.speakers[turn.speaker].voice) for turn in doc.turns], SAMPLE_RATE)
    parts = [np.zeros(int(0.15 * SAMPLE_RATE), np.float32)]
    for position, samples in enumerate(speech):
        if position:
            parts.append(np.zeros(int(rng.uniform(0.2, 0.5) * SAMPLE_RATE), np.float32))
        parts.append(samples)
    parts.append(np.zeros(int(0.2 * SAMPLE_RATE), np.float32))
    return np.concatenate(parts)


def build_document(task: tuple[str, int, int, int, str, str]) -> list[dict]:
    """Worker: one document's audio file and manifest records. ``task = (split, index, seed, n, world, dir)``."""
    import soundfile as sf

    split, index, seed, count, world, out_dir = task
    doc_id = f"{split}-{index:06d}"
    lang, genre = doc_language_and_genre(split, index)
    for attempt in range(8):
        doc = generate_document(doc_id, split, seed, genre, lang, unseen=split == "test_unseen", attempt=attempt,
                                world=world)
        audio = synthesize_document(doc, seed)
        duration = len(audio) / SAMPLE_RATE
        if MIN_SECONDS <= duration <= MAX_SECONDS:
            break
    else:  # pragma: no cover - generator sizes keep documents well inside the range
        raise RuntimeError(f"{doc_id}: no draw within {MIN_SECONDS}-{MAX_SECONDS} s after 8 attempts")
    relative = f"audio/{doc_id}.wav"
    sf.write(os.path.join(out_dir, relative), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    records = make_records(doc, seed, count, relative, duration)
    if split == KD_SPLIT:  # KD learns from the teacher reading the transcript: no reference summary
        for record in records:
            del record["summary"]
    return records


def make_records(doc: Document, seed: int, count: int, audio: str, duration: float,
                 unseen: bool | None = None) -> list[dict]:
    """Manifest records (one per instruction) of a synthesised document. ``unseen``: draw from the
    unseen instruction templates (default: only for ``test_unseen`` documents)."""
    rng = random.Random(f"{seed}/{doc.doc_id}/instructions")
    genre_noun = GENRE_NOUN[doc.genre]
    unseen = doc.split == "test_unseen" if unseen is None else unseen
    chosen = choose_instructions(rng, doc.facts, count, genre_noun=genre_noun,
                                 first_names=[s.first for s in doc.speakers], unseen=unseen)
    records = []
    for k, instruction in enumerate(chosen):
        summary = render_reference(instruction.style, doc.facts, instruction.required_facts,
                                   genre_noun=genre_noun, topic=doc.topic, recipient=instruction.recipient)
        meta = {
            "doc_id": doc.doc_id, "split": doc.split, "genre": doc.genre, "style": instruction.style,
            "lang": doc.lang, "speakers": [s.name for s in doc.speakers], "facts": doc.facts,
            "required_facts": instruction.required_facts, "entities": doc.entities,
            "filler_entities": doc.filler_entities, "topic": doc.topic,
            "instruction_template": instruction.template,
            "voices": [f"{s.voice.name}@{s.voice.rate}wpm/p{s.voice.pitch}" for s in doc.speakers],
        }
        if instruction.recipient is not None:
            meta["recipient"] = instruction.recipient
        if doc.lang != "en":
            meta["transcript_en"] = doc.transcript(english=True)
        records.append({
            "id": f"{doc.doc_id}-{instruction.style}-{k}", "audio": audio, "instruction": instruction.text,
            "summary": summary, "transcript": doc.transcript(), "lang": doc.lang,
            "duration": round(duration, 3), "meta": meta,
        })
    return records


def resolve_plan(size: str, documents: dict[str, int] | None = None,
                 instructions: dict[str, int] | None = None) -> dict[str, SplitPlan]:
    """The size preset with per-split overrides of document and instruction counts."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    plan = dict(SIZES[size])
    for split, value in (documents or {}).items():
        if value is not None:
            low = 0 if split == KD_SPLIT else 1
            if value < low:
                raise ValueError(f"--{split.replace('_', '-')}-docs must be >= {low}, got {value}")
            plan[split] = SplitPlan(value, plan[split].instructions)
    for split, value in (instructions or {}).items():
        if value is not None:
            if not 1 <= value <= 6:
                raise ValueError(f"instructions per document must be 1-6 (one per style), got {value}")
            plan[split] = SplitPlan(plan[split].documents, value)
    return plan


WORKERS_PER_CORE = 4  # synthesis is CPU-bound: beyond this, processes only add memory and start-up time


def usable_workers(workers: int, say: Callable[[str], None] | None = None) -> int:
    """``workers``, or :data:`WORKERS_PER_CORE` per CPU core when it asks for more, saying so with
    ``say`` (None: a ``UserWarning``) (``--workers 100000`` tried to spawn 100,000 Python processes).
    The manifests and audio do not depend on the count; ``benchmark.json`` records the count used."""
    cores = os.cpu_count() or 1
    most = max(1, int(WORKERS_PER_CORE * cores))
    if workers <= most:
        return workers
    note = (f"--workers {workers} is more than {WORKERS_PER_CORE} processes per CPU core ({cores} here): using "
            f"{most} (the benchmark does not depend on the count; more processes would only add memory)")
    if say is None:
        warnings.warn(note, stacklevel=3)
    else:
        say(note)
    return most


def check_replaceable(out: Path) -> None:
    """Refuse ``--overwrite`` of a non-empty folder that no build wrote (no ``benchmark.json`` with a
    ``version``): ``--out ~/data --overwrite`` deleted the user's files with the old folder."""
    summary = out / "benchmark.json"
    try:
        built = isinstance(loaded := json.loads(summary.read_text(encoding="utf-8")), dict) and "version" in loaded
    except (OSError, ValueError):  # missing, unreadable, not JSON
        built = False
    if not built:
        raise FileExistsError(f"{out} is not empty and is not a benchmark folder (no {summary.name} a build wrote): "
                              "--overwrite replaces only a folder `speechsum benchmark build` wrote, never other "
                              "files; give a new or empty --out, or remove that folder yourself")


def check_voices(langs: set[str]) -> None:
    """Refuse, before the first document, an espeak-ng install that lacks a voice the documents of
    ``langs`` draw from: the build stopped at the first document that drew it, advising a voice name
    the build takes no option for."""
    from speechsum.benchmark import documents
    from speechsum.benchmark.tts import voice_exists

    missing = [voice for lang in sorted(langs) for voice in documents.VOICES[lang] if not voice_exists(voice)]
    if missing:
        import espeakng_loader

        raise FileNotFoundError(f"espeak-ng (data {espeakng_loader.get_data_path()}) has no voice {', '.join(missing)}, which "
                           "the benchmark's speakers use; nothing was built: reinstall its voice data with "
                           "`pip install --force-reinstall espeakng-loader`")


def build_benchmark(out: str | Path, *, size: str = "default", seed: int = 0, workers: int = 2,
                    documents: dict[str, int] | None = None, instructions: dict[str, int] | None = None,
                    world: str = "full", overwrite: bool = False, progress: bool = True) -> dict:
    """Build every split into ``out``; returns the ``benchmark.json`` summary. ``world``: the pools and
    document shape (``lexicon.WORLDS``; ``full`` is the original generator)."""
    from tqdm import tqdm

    out = Path(out)
    if out.is_symlink():  # build where it points: renaming into place replaced the link, left '.OUT.old-*' beside it
        out = Path(os.path.realpath(out))
    plan = resolve_plan(size, documents, instructions)
    if Path.cwd().is_relative_to(out.resolve()):  # '.' failed after the whole build ("has an empty name")
        raise ValueError(f"--out {out} is the current folder or holds it: the build is renamed into place, replacing "
                         "that folder whole; give a new folder such as --out bench, or run from outside it")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
        check_replaceable(out)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    workers = usable_workers(workers)
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; choose one of {', '.join(WORLDS)}")
    start = time.perf_counter()
    tasks = [(split, i, seed, plan[split].instructions, world)
             for split in ALL_SPLITS for i in range(plan[split].documents)]
    check_voices({doc_language_and_genre(split, i)[0] for split, i, *_ in tasks})
    workers = max(1, min(workers, len(tasks)))  # one process per document at most: more only started and idled
    chunk = min(4, -(-len(tasks) // workers)) or 1  # every process gets documents (4 at a time when there are many)
    written = [split for split in ALL_SPLITS if split in SPLITS or plan[split].documents]
    summaries: list[dict] = []

    def write(tmp: Path) -> None:
        (tmp / "audio").mkdir()
        records: dict[str, list[dict]] = {split: [] for split in written}
        bar = tqdm(total=len(tasks), desc="benchmark documents", unit="doc", disable=not progress)
        if workers == 1:
            results = map(build_document, [(*task, str(tmp)) for task in tasks])
            pool = None
        else:
            pool = multiprocessing.get_context("spawn").Pool(workers)
            results = pool.imap(build_document, [(*task, str(tmp)) for task in tasks], chunksize=chunk)
        try:
            for task, doc_records in zip(tasks, results):
                records[task[0]].extend(doc_records)
                bar.update(1)
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()
        for split in written:
            with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as handle:
                for record in records[split]:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        summaries.append(_summary(records, plan, size, seed, workers, time.perf_counter() - start, world))
        (tmp / "benchmark.json").write_text(json.dumps(summaries[0], indent=2) + "\n")

    write_dir_atomically(out, write)
    return summaries[0]


def _summary(records: dict[str, list[dict]], plan: dict[str, SplitPlan], size: str, seed: int,
             workers: int, seconds: float, world: str = "full") -> dict:
    import speechsum

    splits = {}
    for split, rows in records.items():
        durations = {r["meta"]["doc_id"]: r["duration"] for r in rows}
        splits[split] = {
            "documents": len(durations), "examples": len(rows),
            "instructions_per_document": plan[split].instructions,
            "audio_hours": round(sum(durations.values()) / 3600, 4),
            "mean_duration_s": round(sum(durations.values()) / max(1, len(durations)), 2),
            "languages": sorted({r["lang"] for r in rows}),
        }
    return {
        "version": BENCHMARK_VERSION, "speechsum_version": speechsum.__version__, "size": size, "world": world, "seed": seed,
        "sample_rate": SAMPLE_RATE, "splits": splits,
        "total_examples": sum(s["examples"] for s in splits.values()),
        "total_audio_hours": round(sum(s["audio_hours"] for s in splits.values()), 4),
        "build_seconds": round(seconds, 1), "workers": workers, "cpu_count": os.cpu_count(),
    }
