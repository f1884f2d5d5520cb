"""``speechsum benchmark build | info | tokenizer | textcorpus``: build the bundled benchmark and inspect it."""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
from collections import Counter, defaultdict
from pathlib import Path

from speechsum.utils.arguments import MAX_DOCUMENTS, at_least
from speechsum.utils.io import check_output_path, jsonl_lines
from speechsum.utils.repeated_options import OnceParser

DESCRIPTION = """\
The bundled spoken-summarisation benchmark (espeak-ng speech, facts known by construction).

  speechsum benchmark build --out DIR [--size tiny|small|default] [--seed S] [--workers W]
  speechsum benchmark info DIR
  speechsum benchmark textcorpus ...     write the text LMs' training manifests (see its --help)
  speechsum benchmark tokenizer ...      train the benchmark's byte-level BPE (see its --help)
"""


def _parser() -> argparse.ArgumentParser:
    from speechsum.benchmark.build import ALL_SPLITS, KD_SPLIT, SIZES
    from speechsum.benchmark.instructions import STYLES
    from speechsum.benchmark.lexicon import WORLDS

    parser = OnceParser(prog="speechsum benchmark", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sizes = "; ".join(f"{name}: " + ", ".join(f"{s} {p.documents}x{p.instructions}" for s, p in plan.items())
                      for name, plan in SIZES.items())
    build = commands.add_parser("build", help="generate documents, synthesise audio, write the manifests",
                                description=f"Sizes (documents x instructions per split): {sizes}.")
    build.add_argument("--out", required=True, help="output directory (created; built atomically next to it)")
    build.add_argument("--size", default="default", choices=list(SIZES),
                       help="preset: tiny (tests, seconds), small (~300 train examples), default "
                            "(3000 train examples, 100 val, 200 per test split; the default)")
    build.add_argument("--seed", type=int, default=0, help="seed; same seed -> identical manifests and audio (default 0)")
    build.add_argument("--workers", type=at_least(1), default=2, help="processes synthesising audio (default 2)")
    build.add_argument("--world", default="full", choices=list(WORLDS),
                       help="pools and document shape: full (the original generator, hundreds of entity words) "
                            "or compact (10 first and 10 last names, 6 cities, 8 numbers, shorter documents: every entity word "
                            "is heard hundreds of times in an hour of speech), or compact-unnamed (compact whose "
                            "references say 'it was decided to ...' instead of naming the speaker who decided, "
                            "which only the turn label and voice say: docs/world.md), or compact-heard (compact where another "
                            "speaker answers each decision by the decider's name, so who decided is said). Default full")
    build.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    build.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    for split in ALL_SPLITS:
        flag = split.replace("_", "-")
        help_text = (f"number of {split} documents, at most {MAX_DOCUMENTS:,} (overrides the size preset)" if split != KD_SPLIT else
                     f"number of {KD_SPLIT} documents (default 0: no {KD_SPLIT}.jsonl): more training audio whose "
                     "lines have a transcript and instructions but no summary, for on-policy KD")
        # 0 kd_train documents is what its help calls the default (it was refused when written)
        build.add_argument(f"--{flag}-docs", type=at_least(0 if split == KD_SPLIT else 1, MAX_DOCUMENTS), default=None, metavar="N",
                           help=help_text)
    build.add_argument("--train-instructions", type=at_least(1, len(STYLES)), default=None, metavar="K",
                       help="instructions (distinct styles, 1-6) per training (and kd_train) document "
                            "(overrides the preset)")
    build.add_argument("--eval-instructions", type=at_least(1, len(STYLES)), default=None, metavar="K",
                       help=f"instructions (distinct styles, 1-{len(STYLES)}) per document of val and the test splits "
                            "(overrides the preset)")
    info = commands.add_parser("info", help="print counts and durations per split, genre, style, language")
    info.add_argument("dir", help="a built benchmark directory")
    commands.add_parser("tokenizer", help="train the byte-level BPE on a benchmark (speechsum.benchmark.bpe)",
                        add_help=False)
    commands.add_parser("textcorpus", help="train split + text-only documents for the text LMs "
                        "(speechsum.benchmark.text_corpus)", add_help=False)
    return parser


def _record_problem(err: Exception) -> str:
    """What a benchmark manifest line lacks: a ``KeyError`` said only the key (``('duration')``)."""
    if not isinstance(err, KeyError):
        return str(err)
    key = err.args[0]
    return f"no field {key!r}" if key in ("meta", "duration") else f"no field 'meta.{key}'"


def benchmark_info(directory: str | Path) -> str:
    """A plain-text table: documents, examples, hours per split; counts per genre, style, language."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: " + ("a file, not a folder" if directory.exists() else "no such folder")
                                + "; give the folder `speechsum benchmark build --out` wrote")
    lines = []
    summary_path = directory / "benchmark.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
            if not isinstance(summary, dict) or not {"version", "size", "seed", "build_seconds", "workers"} <= summary.keys():
                raise ValueError("not the summary `speechsum benchmark build` writes")
        except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
            raise ValueError(f"{summary_path}: {err}; rebuild with `speechsum benchmark build`") from None
        lines.append(f"benchmark v{summary['version']} size={summary['size']} "
                     f"world={summary.get('world', 'full')} seed={summary['seed']} "
                     f"built in {summary['build_seconds']} s with {summary['workers']} worker(s)")
    manifests = sorted(directory.glob("*.jsonl"))
    if not manifests:
        raise FileNotFoundError(f"no *.jsonl manifests in {directory}; build one with `speechsum benchmark build`")
    lines.append(f"{'split':<12} {'docs':>6} {'examples':>9} {'hours':>7} {'mean s':>7} {'min s':>6} {'max s':>6}")
    breakdown: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for manifest in manifests:
        durations: dict[str, float] = {}
        examples = 0
        for number, line in jsonl_lines(manifest):
            try:
                record = json.loads(line)
                meta = record["meta"]
                durations[meta["doc_id"]] = float(record["duration"])
                if not 0 <= durations[meta["doc_id"]] < float("inf"):
                    raise ValueError(f"duration {record['duration']!r} is not a number of seconds")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError) as err:
                raise ValueError(f"{manifest}:{number}: not a benchmark record ({_record_problem(err)}); give the "
                                 "folder `speechsum benchmark build --out` wrote") from err
            examples += 1
            for field in ("genre", "style", "lang"):
                breakdown[field][manifest.stem][meta.get(field, "?")] += 1
        values = list(durations.values()) or [0.0]
        lines.append(f"{manifest.stem:<12} {len(durations):>6} {examples:>9} {sum(values) / 3600:>7.3f} "
                     f"{sum(values) / len(values):>7.1f} {min(values):>6.1f} {max(values):>6.1f}")
    for field in ("genre", "style", "lang"):
        lines.append(f"examples per {field}:")
        for split, counts in breakdown[field].items():
            lines.append(f"  {split:<12} " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return "\n".join(lines)


SUBTOOLS = {"tokenizer": "speechsum.benchmark.bpe", "textcorpus": "speechsum.benchmark.text_corpus"}


def main(argv: list[str]) -> None:
    if argv and argv[0] in SUBTOOLS:  # their own options: hand the rest over untouched
        importlib.import_module(SUBTOOLS[argv[0]]).main(argv[1:])
        return
    args = _parser().parse_args(argv)
    if args.command == "info":
        try:
            print(benchmark_info(args.dir))
        except (ValueError, FileNotFoundError) as err:
            raise SystemExit(f"speechsum benchmark info: {err}") from None
        return
    from speechsum.benchmark.build import ALL_SPLITS, KD_SPLIT, build_benchmark, usable_workers

    check_output_path(args.out, "--out", folder=True)

    # SIGTERM -> SystemExit, so a killed build removes its temporary folder and stops its workers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    documents = {split: getattr(args, f"{split}_docs") for split in ALL_SPLITS}
    instructions = {split: args.train_instructions if split in ("train", KD_SPLIT) else args.eval_instructions
                    for split in ALL_SPLITS}
    workers = usable_workers(args.workers, lambda note: print(f"speechsum benchmark build: warning: {note}", file=sys.stderr))
    summary = build_benchmark(args.out, size=args.size, seed=args.seed, workers=workers,
                              documents=documents, instructions=instructions, world=args.world,
                              overwrite=args.overwrite,
                              progress=not args.no_progress)
    print(f"wrote {args.out}: {summary['total_examples']} examples, {summary['total_audio_hours']:.2f} h of audio "
          f"in {summary['build_seconds']} s")
    print(benchmark_info(args.out))
