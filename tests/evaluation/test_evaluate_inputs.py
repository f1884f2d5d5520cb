"""`speechsum evaluate` on inputs a user's own manifests bring: checked before any system generates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.eval_fixtures import save_tiny_text_lm


def write_manifest(folder: Path, metas: list[dict]) -> Path:
    """One line per ``meta``, each with a 1 s clip, a transcript and a reference summary."""
    sf.write(folder / "a.wav", (0.1 * np.sin(np.arange(16_000) / 5)).astype("float32"), 16_000)
    lines = [{"id": f"x{i}", "audio": "a.wav", "instruction": "Summarise.", "summary": "Maria set the budget.",
              "transcript": "Maria: the budget is set.", "meta": meta} for i, meta in enumerate(metas)]
    path = folder / "test.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = {"facts": [{"kind": "person", "text": "Maria", "keys": ["maria"]}], "required_facts": [0], "entities": ["maria"]}


@pytest.mark.parametrize(("meta", "problem"), [
    # keys as one string were read letter by letter (m, a, r, i, a): every summary with those letters recalled it
    (GOOD | {"facts": [{"kind": "person", "text": "Maria", "keys": "maria"}]},
     "fact 0 needs non-empty string 'keys' (a list: meta.facts[0].keys), got 'maria'"),
    (GOOD | {"speakers": "Maria"}, "meta.speakers must be a list of strings, got 'Maria'"),  # letters, silently
    (GOOD | {"entities": [40000]}, "meta.entities must be a list of strings, got [40000]"),  # a TypeError, late
    ({"facts": [{"keys": ["budget"]}]}, "lacks list field 'required_facts' in its meta (benchmark manifests carry it; see speechsum/benchmark)"),
])
def test_a_fact_meta_the_judge_cannot_read_stops_before_any_system_generates(tmp_path, meta, problem):
    from speechsum.evaluation.cli import evaluate_main

    manifest = write_manifest(tmp_path, [GOOD, meta])
    lm = save_tiny_text_lm(tmp_path / "lm", seed=1)
    with pytest.raises(ValueError) as bad:
        evaluate_main(["--system", f"text:lm:{lm}", "--manifest", str(manifest), "--out", str(tmp_path / "out"),
                       "--metrics", "fact_judge", "--max-new-tokens", "2", "--accelerator", "cpu"])
    assert str(bad.value) == (f"{manifest}:2: fact judge: {problem}; fix the line's meta, or leave fact_judge out of "
                              "--metrics (e.g. --metrics rouge,bertscore)")
    assert not (tmp_path / "out" / "lm").exists()  # nothing generated


def test_a_second_evaluation_into_one_out_keeps_the_other_systems_summary_rows(tmp_path):
    """summary.csv held only the last run's systems: evaluating `other` after `backbone` into one --out
    dropped backbone's means from it, though its folder (and metrics.json) stayed."""
    from speechsum.evaluation.cli import evaluate_main

    manifest = write_manifest(tmp_path, [GOOD])
    out = tmp_path / "out"
    args = ["--manifest", str(manifest), "--out", str(out), "--metrics", "rouge", "--max-new-tokens", "2",
            "--accelerator", "cpu", "--bootstrap-resamples", "5"]
    evaluate_main([*args, "--system", f"text:backbone:{save_tiny_text_lm(tmp_path / 'backbone', seed=2)}"])
    first = (out / "summary.csv").read_text().splitlines()
    gone = "gone" + first[1][len("backbone"):]  # a row of a system whose folder is removed since: dropped
    (out / "summary.csv").write_text("\n".join([*first, gone]) + "\n")
    evaluate_main([*args, "--system", f"text:other:{save_tiny_text_lm(tmp_path / 'other', seed=3)}"])
    lines = (out / "summary.csv").read_text().splitlines()
    assert lines[:len(first)] == first  # backbone's rows as they were, then other's
    assert {line.split(",")[0] for line in lines[1:]} == {"backbone", "other"}
    assert len(lines) == 2 * len(first) - 1


def test_lines_without_a_reference_summary_are_scored_by_the_reference_free_metrics(tmp_path):
    """A manifest without `summary` (KD-style data: audio and queries only) was refused whatever the
    metrics; the fact judge and the LLM judge need no reference, nor do the basic scores. ROUGE and
    BERTScore do: their refusal now says so, and how to go on."""
    from speechsum.evaluation.cli import evaluate_main
    from speechsum.utils.io import read_jsonl

    manifest = write_manifest(tmp_path, [GOOD, GOOD])
    manifest.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "summary"}) + "\n"
                                for row in read_jsonl(manifest)))
    lm = save_tiny_text_lm(tmp_path / "lm", seed=1)
    args = ["--system", f"text:lm:{lm}", "--manifest", str(manifest), "--out", str(tmp_path / "out"),
            "--max-new-tokens", "2", "--accelerator", "cpu", "--bootstrap-resamples", "5"]
    with pytest.raises(ValueError) as refused:
        evaluate_main([*args, "--metrics", "rouge,fact_judge"])
    assert str(refused.value) == (f"{manifest}:1: missing field 'summary': the reference summary ROUGE and BERTScore "
                                  "compare with; without references evaluate with --metrics fact_judge,llm_judge (the "
                                  "fact judge needs meta.facts), or add a summary to every line")
    evaluate_main([*args, "--metrics", "fact_judge"])
    rows = read_jsonl(tmp_path / "out" / "lm" / "predictions.jsonl")
    assert [row["reference"] for row in rows] == [None, None]
    assert all(1.0 <= row["scores"]["fact_judge"] <= 7.0 for row in rows)
    results = json.loads((tmp_path / "out" / "lm" / "metrics.json").read_text())["results"]["all"]
    assert results["fact_judge"]["n"] == 2 and "rougeL" not in results and results["length_words"]["n"] == 2


def test_split_without_a_benchmark_dir_is_refused_not_ignored(tmp_path):
    """--split picks splits of --benchmark-dir; beside --manifest alone it was ignored, and every
    manifest was evaluated."""
    from speechsum.evaluation.cli import evaluate_main

    manifest = write_manifest(tmp_path, [GOOD])
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "config.json").write_text("{}")  # refused before any model is read
    with pytest.raises(SystemExit) as stop:
        evaluate_main(["--system", f"text:lm:{tmp_path / 'lm'}", "--manifest", str(manifest), "--split", "test_xling",
                       "--out", str(tmp_path / "out")])
    assert str(stop.value) == ("speechsum evaluate: --split test_xling picks a split of --benchmark-dir, which is not "
                               "given; name a --manifest's split as --manifest SPLIT=PATH, or run a system on some "
                               "splits only with --system-splits NAME=SPLIT")
