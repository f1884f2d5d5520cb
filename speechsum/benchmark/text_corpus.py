"""Text-only training data for the benchmark's text LMs ("pretraining" text of the offline world).

The paper's text models (Phi-4-mini, GPT-4o) arrive pretrained: they can already copy names and
numbers out of a transcript. Ours start from random weights, and the few hundred spoken training
documents are far too few for a small LM to learn that. Text costs nothing to generate (the audio
is what is slow), so this writes *extra* training documents drawn by the benchmark's own
generator, in the benchmark's own world (``world`` in ``benchmark.json``: its names, cities,
numbers and document shape), never a test document (document ids ``lmtext-NNNNNN`` seed their own
draws), each with ``instructions`` instruction/summary pairs.

Like a real LLM's pretraining text, the corpus may be broader than the speech the student trains
on: ``unseen_share`` of the documents use the unseen-phrasing fact and instruction templates and
``xling_share`` are Spanish or German transcripts with English summaries. The held-out splits
(``test_unseen``, ``test_xling``) then test what they test in the paper (FLORAS): whether a
*speech* student trained on English train-phrasing audio only carries over what its text LLM
knows. Both shares default to 0 (train phrasing, English only).

``unlabeled_share`` of the documents (an independent draw) have their transcript written as the
audio says it: no ``Name:`` turn labels, one paragraph (:func:`speechsum.data.transcripts.spoken_text`),
as ASR output without diarisation reads. A real LLM has read both kinds; without them, text LMs
trained only on labeled transcripts cannot read what a speech student hears (docs/world.md).

The extra lines join the benchmark's real ``train.jsonl`` lines in ``OUT/train.jsonl``;
``OUT/val.jsonl`` is the benchmark's val split. Every line's ``audio`` points at the real clip
(benchmark lines) or at one short silent WAV (text-only lines): manifests stay valid, and text LMs
never decode audio anyway. A text-only line's ``duration`` is that WAV's length, 0.1 s, what loading
measures (before 2026-12-07 it was a nominal spoken length, 2.5 words/s, which every text LM stage
warned about as a line naming the wrong file).

    speechsum benchmark textcorpus --data BENCH_DIR --out DIR [--documents N] [--unseen-share F] [--xling-share F]
                                   [--unlabeled-share F]
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speechsum.benchmark.build import doc_language_and_genre, make_records
from speechsum.benchmark.documents import XLING_LANGS, generate_document
from speechsum.benchmark.lexicon import WORLDS
from speechsum.data.transcripts import spoken_text
from speechsum.utils.arguments import MAX_TEXT_DOCUMENTS, at_least
from speechsum.utils.arguments import share as share_arg
from speechsum.utils.io import check_not_a_file, check_replaceable_folder, jsonl_lines, write_dir_atomically
from speechsum.utils.repeated_options import OnceParser

SILENCE = "silence.wav"
SILENCE_RATE = 16000
SILENCE_FRAMES = 1600
SILENCE_SECONDS = SILENCE_FRAMES / SILENCE_RATE  # the silent WAV's length: the text-only lines' 'duration'


def _absolute_audio(record: dict, bench: Path) -> dict:
    return {**record, "audio": str((bench / record["audio"]).resolve())}


def _read_split(bench: Path, split: str) -> list[dict]:
    path = bench / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the benchmark first (speechsum benchmark build)")
    records = []
    for number, line in jsonl_lines(path):
        try:
            records.append(_absolute_audio(json.loads(line), bench))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: not a benchmark record ({err})") from err
    return records


def benchmark_world(bench: Path) -> str:
    """The world ``bench/benchmark.json`` was built in (``full`` when it names none)."""
    path = bench / "benchmark.json"
    if not path.is_file():
        return "full"
    try:
        world = json.loads(path.read_text(encoding="utf-8")).get("world", "full")
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{path}: not a benchmark summary ({err})") from err
    if world not in WORLDS:
        raise ValueError(f"{path}: field 'world' is {world!r}; expected one of {', '.join(WORLDS)}")
    return world


def document_kind(seed: int, index: int, unseen_share: float, xling_share: float) -> tuple[str, bool]:
    """``(language, unseen phrasing)`` of text-only document ``index``: a seeded draw per document,
    ``xling_share`` Spanish/German (alternating), ``unseen_share`` English with unseen phrasing."""
    draw = random.Random(f"{seed}/lmtext-{index:06d}/kind").random()
    if draw < xling_share:
        return XLING_LANGS[index % len(XLING_LANGS)], False
    return "en", draw < xling_share + unseen_share


def is_unlabeled(seed: int, index: int, unlabeled_share: float) -> bool:
    """Whether text-only document ``index`` is written without speaker labels: a seeded draw per
    document, independent of :func:`document_kind`'s."""
    return random.Random(f"{seed}/lmtext-{index:06d}/unlabeled").random() < unlabeled_share


def _check_shares(unseen_share: float, xling_share: float, unlabeled_share: float = 0.0) -> None:
    for name, share in (("unseen_share", unseen_share), ("xling_share", xling_share),
                        ("unlabeled_share", unlabeled_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {share}")
    if unseen_share + xling_share > 1.0:
        raise ValueError(f"unseen_share + xling_share must be <= 1, got {unseen_share} + {xling_share}")


def text_records(documents: int, instructions: int, seed: int, audio: str, world: str = "full",
                 unseen_share: float = 0.0, xling_share: float = 0.0, unlabeled_share: float = 0.0,
                 audio_seconds: float = SILENCE_SECONDS) -> list[dict]:
    """``documents`` text-only documents of ``world`` × ``instructions`` manifest records each
    (languages and phrasing drawn by :func:`document_kind`, speaker labels by :func:`is_unlabeled`),
    each naming ``audio``, whose length ``audio_seconds`` is its ``duration``."""
    _check_shares(unseen_share, xling_share, unlabeled_share)
    records = []
    for index in tqdm(range(documents), desc="text-only documents", unit="doc"):
        doc_id = f"lmtext-{index:06d}"
        _, genre = doc_language_and_genre("train", index)
        lang, unseen = document_kind(seed, index, unseen_share, xling_share)
        doc = generate_document(doc_id, "train", seed, genre, lang, unseen=unseen, world=world)
        doc_records = make_records(doc, seed, instructions, audio, audio_seconds, unseen=unseen)
        if is_unlabeled(seed, index, unlabeled_share):
            for record in doc_records:
                record["transcript"] = spoken_text(record["transcript"], strip_speaker_labels=True)
                record["meta"]["unlabeled"] = True
        records += doc_records
    return records


def write_text_corpus(bench: str | Path, out: str | Path, documents: int = 12000, instructions: int = 1,
                      seed: int = 1, unseen_share: float = 0.0, xling_share: float = 0.0,
                      world: str | None = None, unlabeled_share: float = 0.0) -> Path:
    """Write ``out/train.jsonl`` (benchmark train + text-only documents), ``out/val.jsonl`` and the
    silent WAV, atomically; returns ``out``. ``world``: default the benchmark's own."""
    bench = Path(bench)
    train, val = _read_split(bench, "train"), _read_split(bench, "val")
    world = world or benchmark_world(bench)
    out = Path(out)

    def write(tmp: Path) -> None:
        sf.write(tmp / SILENCE, np.zeros(SILENCE_FRAMES, np.float32), SILENCE_RATE)
        extra = text_records(documents, instructions, seed, str((out / SILENCE).resolve()), world,
                             unseen_share, xling_share, unlabeled_share)
        for name, records in (("train", train + extra), ("val", val)):
            (tmp / f"{name}.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")

    write_dir_atomically(out, write)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = OnceParser(
        prog="speechsum benchmark textcorpus",
        description="Write the text LMs' training manifests: the benchmark's train split plus extra "
        "text-only documents from the benchmark's generator, in the benchmark's world (no audio).",
    )
    parser.add_argument("--data", required=True, help="benchmark directory (train.jsonl, val.jsonl)")
    parser.add_argument("--out", required=True, help="output directory: new, empty, or an earlier text corpus (replaced whole); a folder "
                        "holding anything else is refused")
    parser.add_argument("--documents", type=at_least(0, MAX_TEXT_DOCUMENTS), default=12000,
                        help="extra text-only documents (default 12000: ~10 s to write, ~1 pass of the text LMs)")
    parser.add_argument("--instructions", type=at_least(1), default=1,
                        help="instructions (distinct styles) per extra document (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the extra documents (default 1)")
    parser.add_argument("--unseen-share", type=share_arg, default=0.0,
                        help="share of the extra documents written with the unseen-phrasing templates "
                        "(like test_unseen; default 0)")
    parser.add_argument("--xling-share", type=share_arg, default=0.0,
                        help="share of the extra documents written in Spanish/German with English summaries "
                        "(like test_xling; default 0)")
    parser.add_argument("--unlabeled-share", type=share_arg, default=0.0,
                        help="share of the extra documents whose transcript has no 'Name:' speaker labels "
                        "and no line breaks, as the audio says it (an independent draw; default 0)")
    parser.add_argument("--world", choices=sorted(WORLDS), default=None,
                        help="the generator's world (default: 'world' in DATA/benchmark.json, else full)")
    args = parser.parse_args(argv)
    try:
        check_replaceable_folder(args.out, "--out", SILENCE, "text corpus")
    except (ValueError, OSError) as err:
        parser.error(str(err))
    try:
        check_not_a_file(args.data, "--data", "train.jsonl")
        out = write_text_corpus(args.data, args.out, args.documents, args.instructions, args.seed,
                                args.unseen_share, args.xling_share, args.world, args.unlabeled_share)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        parser.error(str(err))
    lines = sum(1 for _ in (out / "train.jsonl").open(encoding="utf-8"))
    print(f"text corpus: {lines} training lines → {out / 'train.jsonl'}")


if __name__ == "__main__":
    main()
