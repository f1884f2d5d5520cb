"""Which facts a system misses: fact recall by fact kind and the fact judge by instruction style.

A speech student can score like its peers on average and still never recall one kind of fact (the
date, the new role) or one style: this splits each system's recall of the required facts by the
facts' ``kind`` (the fact judge's own rule, :func:`speechsum.judges.fact.recalls`) and its mean judge
score by ``style``. Predictions are ``speechsum evaluate``'s ``predictions.jsonl``; the facts come
from the manifests the systems ran on, joined by id::

    python -m benchmarks.fact_kinds --manifest RUN/data/val.jsonl --split val \\
        teacher=RUN/baselines/teacher/predictions.jsonl sft=RUN/evaluate/sft/predictions.jsonl
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from speechsum.judges.fact import judged_facts, recalls
from speechsum.utils.io import read_jsonl
from speechsum.utils.text_analysis import normalise_text


def fact_kind_table(predictions: list[dict], manifest: dict[str, dict], split: str | None = None,
                    metric: str = "fact_judge") -> tuple[dict[str, tuple[int, int]], dict[str, list[float]]]:
    """``({kind: (recalled, required)}, {style: [metric per example]})`` over the rows of ``split``
    (every row when None). A row whose id the manifests lack is an error naming it."""
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    styles: dict[str, list[float]] = defaultdict(list)
    for row in predictions:
        if split is not None and row.get("split") != split:
            continue
        if row["id"] not in manifest:
            raise ValueError(f"prediction id {row['id']!r} is in no --manifest")
        meta = manifest[row["id"]].get("meta")
        facts, required = judged_facts(meta)
        text = normalise_text(row.get("prediction") or "")
        for fact in (facts[index] for index in required):
            kinds[fact["kind"]][0] += recalls(text, fact)
            kinds[fact["kind"]][1] += 1
        score = (row.get("scores") or {}).get(metric)
        if score is not None:
            styles[meta.get("style") or "-"].append(float(score))
    return {k: (v[0], v[1]) for k, v in kinds.items()}, dict(styles)


def markdown(tables: dict[str, tuple[dict, dict]]) -> str:
    """One row per system: recall per fact kind (of n required), then the mean metric per style."""
    kinds = sorted({k for recall, _ in tables.values() for k in recall})
    styles = sorted({s for _, by_style in tables.values() for s in by_style})
    lines = ["| system | " + " | ".join([*kinds, *styles]) + " |", "|---" * (1 + len(kinds) + len(styles)) + "|"]
    for name, (recall, by_style) in tables.items():
        cells = [f"{recall[k][0] / recall[k][1]:.2f} ({recall[k][1]})" if recall.get(k, (0, 0))[1] else "–"
                 for k in kinds]
        cells += [f"{sum(by_style[s]) / len(by_style[s]):.2f} ({len(by_style[s])})" if by_style.get(s) else "–"
                  for s in styles]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("systems", nargs="+", metavar="NAME=PREDICTIONS",
                        help="a system's predictions.jsonl (speechsum evaluate), named")
    parser.add_argument("--manifest", action="append", required=True, type=Path,
                        help="a manifest the predictions ran on (repeatable); its `meta` holds the facts")
    parser.add_argument("--split", default=None, help="only rows of this split (default: every row)")
    parser.add_argument("--metric", default="fact_judge", help="the per-example score averaged by style")
    args = parser.parse_args(argv)
    manifest = {}
    for path in args.manifest:
        try:
            manifest |= {row["id"]: row for row in read_jsonl(path) if isinstance(row, dict) and "id" in row}
        except (OSError, ValueError) as err:
            parser.error(f"--manifest {path}: {err}")
    tables = {}
    for item in args.systems:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"expected NAME=PREDICTIONS, got {item!r}")
        try:
            tables[name] = fact_kind_table(read_jsonl(Path(path)), manifest, args.split, args.metric)
        except (OSError, ValueError) as err:
            parser.error(f"{path}: {err}")
    print(markdown(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
