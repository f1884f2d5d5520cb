"""A tiny synthetic audio-instruction set for smoke runs and tests: a "tone language".

Each word of a small vocabulary is a pure tone of its own pitch; a clip says 3–8 words. The
instruction asks for the distinct words or for the first word, and the summary answers it, so a
model has to listen to get it right. Clips are written at mixed sample rates, some in stereo,
to exercise loading and resampling. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from speechsum.utils.arguments import at_least
from speechsum.utils.io import atomic_path, check_output_path, read_numbered_jsonl, write_jsonl
from speechsum.utils.repeated_options import OnceParser
from speechsum.utils.temp_owner import remove_dead_writers_temporaries

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
INSTRUCTIONS = {
    "keywords": ("List the words you hear.", "Which words were spoken?", "Summarise the recording."),
    "first": ("What was the first word?", "Name the opening word."),
}
SAMPLE_RATES = (16_000, 22_050, 8_000)
TOY_REFERENCE_STARTS = ("The first word", "Words:")  # how summary_for's two kinds of answer begin
WORD_SECONDS, GAP_SECONDS = 0.25, 0.05
# per split: a WAV each, about 60 kB, so 6 GB at most (--train 100000000 wrote until the disk was full);
# the files' 5-digit numbers are named for it too
MAX_EXAMPLES = 100_000


def tone_clip(words: list[str], sample_rate: int) -> np.ndarray:
    """Mono float32 waveform: one tone per word (word i of WORDS at 300 + 150·i Hz) and short gaps."""
    t = np.arange(int(WORD_SECONDS * sample_rate)) / sample_rate
    gap = np.zeros(int(GAP_SECONDS * sample_rate), dtype=np.float32)
    parts = []
    for word in words:
        frequency = 300.0 + 150.0 * WORDS.index(word)
        parts += [(0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), gap]
    return np.concatenate(parts)


def summary_for(style: str, words: list[str]) -> str:
    if style == "first":
        return f"The first word was {words[0]}."
    distinct = list(dict.fromkeys(words))
    return "Words: " + ", ".join(distinct) + "."


def toy_audio_named(manifest: Path, split: str) -> set[str]:
    """The WAVs (``audio/{split}-NNNNN.wav``, as toydata names them) that ``manifest``, an earlier toy
    set's, names; none for a missing file (lines that are no JSON object are passed over)."""
    pattern, named = re.compile(rf"audio/{re.escape(split)}-\d{{5}}\.wav"), set()
    try:
        lines = manifest.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return named
    for line in lines:
        try:
            audio = json.loads(line).get("audio")
        except (ValueError, AttributeError):
            continue
        if isinstance(audio, str) and pattern.fullmatch(audio):
            named.add(audio)
    return named


def write_toy_dataset(out: str | Path, sizes: dict[str, int] | None = None, seed: int = 0) -> dict[str, Path]:
    """Write ``{split}.jsonl`` manifests and WAVs under ``out``; returns the manifest paths. The WAVs an
    earlier toy set's manifest of a split named and the new one does not (an earlier, larger run's) are
    removed once the new manifest is written; other files in ``out`` are left alone."""
    sizes = sizes or {"train": 256, "val": 32, "test": 32}
    out = Path(out)
    earlier = {split: toy_audio_named(out / f"{split}.jsonl", split) for split in sizes}
    (out / "audio").mkdir(parents=True, exist_ok=True)
    remove_dead_writers_temporaries(out / "audio")  # the WAV a killed earlier run was writing
    rng = random.Random(seed)
    manifests = {}
    for split, size in sizes.items():
        lines = []
        for index in range(size):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
            style = rng.choice(sorted(INSTRUCTIONS))
            rate = rng.choice(SAMPLE_RATES)
            waveform = tone_clip(words, rate)
            if rng.random() < 0.25:
                waveform = np.stack([waveform, waveform], axis=1)  # stereo
            name = f"audio/{split}-{index:05d}.wav"
            with atomic_path(out / name) as temporary:  # never a cut WAV, also on Ctrl-C
                sf.write(temporary, waveform, rate, format="WAV")
            lines.append(
                {
                    "id": f"{split}-{index:05d}",
                    "audio": name,
                    "instruction": rng.choice(INSTRUCTIONS[style]),
                    "summary": summary_for(style, words),
                    "transcript": " ".join(words),
                    "lang": "en",
                }
            )
        path = out / f"{split}.jsonl"
        write_jsonl(path, lines)
        manifests[split] = path
        for stale in sorted(earlier[split] - {line["audio"] for line in lines}):
            (out / stale).unlink(missing_ok=True)
    return manifests


def score_predictions(path: str | Path) -> dict[str, float]:
    """Scores of a ``predictions.jsonl`` on the toy set: exact match, first-word accuracy, and
    word-level F1 of the word lists (the distinct words heard vs. the reference's)."""
    numbered = read_numbered_jsonl(path)
    if not numbered:
        raise ValueError(f"{path}: no predictions (an empty file)")
    first_line_of: dict[object, int] = {}
    for number, row in numbered:
        bad = [key for key in ("prediction", "reference") if not isinstance(row, dict) or not isinstance(row.get(key), str)]
        if bad:
            raise ValueError(f"{path}:{number}: needs string field(s) {', '.join(bad)} (a `speechsum predict` row)")
        if not row["reference"].startswith(TOY_REFERENCE_STARTS):  # other data scored 0.0x, looking like a bad model
            raise ValueError(f"{path}:{number}: reference {row['reference'][:60]!r} is not one of the toy set's "
                             "('The first word was …' or 'Words: …'): toyscore scores predictions on `speechsum "
                             "toydata` data; score other data with `speechsum evaluate`")
        example = row.get("id")
        if isinstance(example, str | int) and first_line_of.setdefault(example, number) != number:
            raise ValueError(f"{path}:{number}: id {example!r} is also on line {first_line_of[example]} (each example "
                             "once: a repeated one would count twice)")
    rows = [row for _, row in numbered]
    first = [r for r in rows if r["reference"].startswith(TOY_REFERENCE_STARTS[0])]
    lists = [r for r in rows if r["reference"].startswith(TOY_REFERENCE_STARTS[1])]
    f1_scores = []
    for row in lists:
        said = {w for w in WORDS if w in row["prediction"]}
        truth = {w for w in WORDS if w in row["reference"]}
        overlap = len(said & truth)
        f1_scores.append(2 * overlap / (len(said) + len(truth)) if said or truth else 1.0)
    return {
        "examples": len(rows),
        "exact_match": _mean([r["prediction"] == r["reference"] for r in rows]),
        "first_word_accuracy": _mean([r["prediction"] == r["reference"] for r in first]),
        "word_list_f1": _mean(f1_scores),
    }


def _mean(values: list) -> float | None:
    """The mean, None when there is nothing to average (printed "n/a", not a score of 0)."""
    return sum(values) / len(values) if values else None


def score_main(argv: list[str] | None = None) -> None:
    parser = OnceParser(
        prog="speechsum toyscore", description="Score predictions.jsonl of a model on the toy tone-language set."
    )
    parser.add_argument("predictions", help="predictions.jsonl written by `speechsum predict`")
    path = parser.parse_args(argv).predictions
    try:
        scores = score_predictions(path)
    except FileNotFoundError as err:
        raise SystemExit(f"speechsum toyscore: {path}: {err.strerror or err}; `speechsum predict --config ... "
                         "--ckpt_path last` writes it where the config's PredictionWriter output_path says "
                         "(configs/trainer/cpu.yaml: runs/default/predictions.jsonl)") from None
    except OSError as err:
        raise SystemExit(f"speechsum toyscore: {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise SystemExit(f"speechsum toyscore: {err}") from None
    print(f"{scores['examples']} test examples")
    for name in ("exact_match", "first_word_accuracy", "word_list_f1"):
        value = scores[name]
        print(f"  {name:<20} {'n/a (no examples of this kind)' if value is None else f'{value:.3f}'}")


def check_no_other_manifests(out: Path) -> None:
    """Refuse an ``--out`` holding a train/val/test manifest that is not the toy set's (its first
    line no toy answer): ``toydata --out runs/x/data`` replaced a benchmark's manifests silently."""
    for split in ("train", "val", "test"):
        path = out / f"{split}.jsonl"
        if not path.is_file():
            continue
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = next((line for line in handle if line.strip()), "")
        try:
            summary = json.loads(first).get("summary") if first else ""
        except (ValueError, AttributeError):
            summary = None
        if first and not (isinstance(summary, str) and summary.startswith(TOY_REFERENCE_STARTS)):
            raise SystemExit(f"speechsum toydata: --out {out}: {path} is not a toy-set manifest and would be "
                             "replaced; give a new or empty folder (or an earlier toydata folder)")


def main(argv: list[str] | None = None) -> None:
    parser = OnceParser(
        prog="speechsum toydata",
        description="Write a tiny synthetic tone-language audio-instruction set (manifests + WAVs).",
    )
    parser.add_argument("--out", required=True, help="folder for train/val/test .jsonl manifests and audio/ (an "
                        "earlier toy set there is replaced: its WAVs the new manifests do not name are removed, other "
                        "files kept)")
    count = at_least(1, MAX_EXAMPLES)
    parser.add_argument("--train", type=count, default=256, help=f"training examples (default 256, at most {MAX_EXAMPLES:,})")
    parser.add_argument("--val", type=count, default=32, help="validation examples (default 32)")
    parser.add_argument("--test", type=count, default=32, help="test examples (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    check_output_path(args.out, "--out", folder=True)
    check_no_other_manifests(Path(args.out))
    paths = write_toy_dataset(args.out, {"train": args.train, "val": args.val, "test": args.test}, args.seed)
    for split, path in paths.items():
        print(f"{split}: {path}")
