"""A manifest whose ``transcript`` is the alignment stage's greedy CTC transcript, so a text LM can
be evaluated on what the aligned projector heard (docs/align.md):

    speechsum predict --config RUN/align/config.yaml --ckpt_path RUN/align/checkpoints/last.ckpt
    python benchmarks/align_probe/ctc_manifest.py RUN/data/test.jsonl RUN/align/ctc_transcripts.jsonl RUN/data/test_ctc.jsonl
    speechsum evaluate --system text:backbone:RUN/text_lm/model --manifest test=RUN/data/test_ctc.jsonl --out OUT
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", help="the manifest the transcripts were predicted for")
    parser.add_argument("transcripts", help="`speechsum predict` output of the align stage (id, prediction)")
    parser.add_argument("out", help="the manifest to write (next to the source one: audio paths are relative)")
    args = parser.parse_args(argv)
    heard = {}
    for line in Path(args.transcripts).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        heard[row["id"]] = row["prediction"]
    lines = []
    for number, line in enumerate(Path(args.manifest).read_text(encoding="utf-8").splitlines(), start=1):
        record = json.loads(line)
        if record["id"] not in heard:
            raise SystemExit(f"{args.manifest}:{number}: id {record['id']!r} has no CTC transcript in {args.transcripts}")
        lines.append(json.dumps({**record, "transcript": heard[record["id"]]}, ensure_ascii=False))
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
