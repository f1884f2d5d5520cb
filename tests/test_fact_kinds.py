"""benchmarks/fact_kinds.py: recall by fact kind and the judge by style, hand-counted."""

from __future__ import annotations

import json

import pytest

from benchmarks.fact_kinds import fact_kind_table, main, markdown

FACTS = [
    {"kind": "date", "keys": ["board meeting", "june 5"], "text": "the board meeting is on June 5"},
    {"kind": "action", "keys": ["tom", "prepare the agenda"], "text": "Tom will prepare the agenda"},
    {"kind": "place", "keys": ["concert", "lisbon"], "text": "the concert will take place in Lisbon"},
]
MANIFEST = {
    "a": {"id": "a", "meta": {"facts": FACTS, "required_facts": [0, 1, 2], "entities": [], "style": "bullets"}},
    "b": {"id": "b", "meta": {"facts": FACTS, "required_facts": [1], "entities": [], "style": "action_items"}},
}
ROWS = [
    {"id": "a", "split": "val", "prediction": "The Board Meeting is on June 5. Tom will prepare the agenda.",
     "scores": {"fact_judge": 5.0}},
    {"id": "b", "split": "val", "prediction": "- Tom: call the supplier.", "scores": {"fact_judge": 1.0}},
    {"id": "a", "split": "test", "prediction": "The concert is in Lisbon.", "scores": {"fact_judge": 3.0}},
]


def test_recall_by_kind_and_judge_by_style_hand_counted():
    recall, styles = fact_kind_table(ROWS, MANIFEST, split="val")
    assert recall == {"date": (1, 1), "action": (1, 2), "place": (0, 1)}
    assert styles == {"bullets": [5.0], "action_items": [1.0]}
    recall, styles = fact_kind_table(ROWS, MANIFEST)  # every split
    assert recall == {"date": (1, 2), "action": (1, 3), "place": (1, 2)}
    assert styles == {"bullets": [5.0, 3.0], "action_items": [1.0]}
    table = markdown({"s": (recall, styles)})
    assert table.splitlines()[0] == "| system | action | date | place | action_items | bullets |"
    assert table.splitlines()[2] == "| s | 0.33 (3) | 0.50 (2) | 0.50 (2) | 1.00 (1) | 4.00 (2) |"


def test_unknown_id_and_bad_arguments_are_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="'zzz' is in no --manifest"):
        fact_kind_table([{"id": "zzz", "split": "val", "prediction": "x"}], MANIFEST)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in MANIFEST.values()))
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["--manifest", str(manifest), "--split", "val", f"kd={predictions}"]) == 0
    assert "| kd | 0.50 (2) | 1.00 (1) | 0.00 (1) | 1.00 (1) | 5.00 (1) |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--manifest", str(manifest), str(predictions)])  # no NAME=
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["--manifest", str(manifest), f"kd={tmp_path / 'missing.jsonl'}"])
    assert "missing.jsonl" in capsys.readouterr().err
