"""Text-only training data for the benchmark's text LMs ("pretraining" text of the offline world).

The paper's text models (Phi-4-mini, GPT-4o) arrive pretrained: they can already copy names and
numbers out of a transcript. Ours start from random weights, and the few hundred spoken training
documents are far too few for a small LM to learn that. Text costs nothing to generate (the audio
is what is slow), so this writes *extra* training documents drawn by the benchmark's own
generator: same genres, lexicon and the train split's templates (never the unseen-phrasing
templates, never a test document: document ids ``lmtext-NNNNNN`` seed their own draws), each with
``instructions`` instruction/summary pairs. They join the benchmark's real ``train.jsonl`` lines
in ``OUT/train.jsonl``; ``OUT/val.jsonl`` is the benchmark's val split. Every line's ``audio``
points at the real clip (benchmark lines) or at one short silent WAV (text-only lines): manifests
stay valid, and text LMs never decode audio anyway.

    speechsum benchmark textcorpus --data BENCH_DIR --out DIR [--documents N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speechsum.benchmark.build import doc_language_and_genre, make_records
from speechsum.benchmark.documents import generate_document
from speechsum.utils.io import write_dir_atomically

SILENCE = "silence.wav"
WORDS_PER_SECOND = 2.5  # nominal duration of a text-only document, for its manifest line


def _absolute_audio(record: dict, bench: Path) -> dict:
    return {**record, "audio": str((bench / record["audio"]).resolve())}


def _read_split(bench: Path, split: str) -> list[dict]:
    path = bench / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the benchmark first (speechsum benchmark build)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(_absolute_audio(json.loads(line), bench))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{number}: not a benchmark record ({err})") from err
    return records


def text_records(documents: int, instructions: int, seed: int, audio: str) -> list[dict]:
    """``documents`` text-only train-style documents × ``instructions`` manifest records each."""
    records = []
    for index in tqdm(range(documents), desc="text-only documents", unit="doc"):
        doc_id = f"lmtext-{index:06d}"
        _, genre = doc_language_and_genre("train", index)
        doc = generate_document(doc_id, "train", seed, genre)
        duration = len(doc.transcript().split()) / WORDS_PER_SECOND
        records += make_records(doc, seed, instructions, audio, duration)
    return records


def write_text_corpus(bench: str | Path, out: str | Path, documents: int = 12000, instructions: int = 1,
                      seed: int = 1) -> Path:
    """Write ``out/train.jsonl`` (benchmark train + text-only documents), ``out/val.jsonl`` and the
    silent WAV, atomically; returns ``out``."""
    bench = Path(bench)
    train, val = _read_split(bench, "train"), _read_split(bench, "val")
    out = Path(out)

    def write(tmp: Path) -> None:
        sf.write(tmp / SILENCE, np.zeros(1600, np.float32), 16000)
        extra = text_records(documents, instructions, seed, str((out / SILENCE).resolve()))
        for name, records in (("train", train + extra), ("val", val)):
            (tmp / f"{name}.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")

    write_dir_atomically(out, write)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="speechsum benchmark textcorpus",
        description="Write the text LMs' training manifests: the benchmark's train split plus extra "
        "text-only documents from the benchmark's generator (train templates only; no audio).",
    )
    parser.add_argument("--data", required=True, help="benchmark directory (train.jsonl, val.jsonl)")
    parser.add_argument("--out", required=True, help="output directory (replaced whole if it exists)")
    parser.add_argument("--documents", type=int, default=12000,
                        help="extra text-only documents (default 12000: ~10 s to write, ~1 pass of the text LMs)")
    parser.add_argument("--instructions", type=int, default=1,
                        help="instructions (distinct styles) per extra document (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the extra documents (default 1)")
    args = parser.parse_args(argv)
    out = write_text_corpus(args.data, args.out, args.documents, args.instructions, args.seed)
    lines = sum(1 for _ in (out / "train.jsonl").open(encoding="utf-8"))
    print(f"text corpus: {lines} training lines → {out / 'train.jsonl'}")


if __name__ == "__main__":
    main()
