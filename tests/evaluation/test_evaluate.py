"""`speechsum evaluate` end to end on tiny real models: every stored score equals the metric
functions' own value, means/CIs equal the bootstrap of those scores, W&B offline, no key leaks."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from speechsum.evaluation import metrics
from speechsum.evaluation.cli import evaluate_parser
from speechsum.evaluation.scoring import Scorer, ScoringOptions, aggregate, collect_scores, summarise
from speechsum.evaluation.systems import SystemSpec, build_model, load_systems_file
from speechsum.judges.fact import FactJudge
from speechsum.utils.io import read_jsonl
from tests.eval_fixtures import FAKE_OPENAI_KEY, FAKE_WANDB_KEY, eval_run  # noqa: F401  (session fixture)

SYSTEMS = {"teacher": ("text", "teacher", None), "backbone": ("text", "backbone", None),
           "sft": ("student", "student", "sft"), "base": ("student", "student", "base"),
           "cascade": ("cascade", "cascade", None)}


def manifest_rows(eval_run) -> dict[str, dict]:  # noqa: F811
    return {row["id"]: row for path in eval_run["manifests"].values() for row in read_jsonl(path)}


def test_every_system_has_all_examples_and_fields(eval_run):  # noqa: F811
    for name, (kind, role, stage) in SYSTEMS.items():
        rows = read_jsonl(eval_run["out"] / name / "predictions.jsonl")
        assert [r["split"] for r in rows] == ["test"] * 4 + ["test_unseen"] * 2
        assert all(r["system"] == name and r["genre"] and r["style"] and r["reference"] for r in rows)
        for row in rows:  # max_new_tokens 12: truncated ⇔ no end-of-turn within 12 tokens
            assert row["num_tokens"] <= 12 and (not row["truncated"] or row["num_tokens"] == 12)
        result = json.loads((eval_run["out"] / name / "metrics.json").read_text())
        assert (result["system"]["kind"], result["system"]["role"], result["system"]["stage"]) == (kind, role, stage)
        assert result["num_examples"] == 6 and result["generation"]["do_sample"] is False
    assert (eval_run["out"] / "summary.csv").read_text().count("\n") > 50


def test_stored_scores_equal_the_metric_functions(eval_run):  # noqa: F811
    sources = manifest_rows(eval_run)
    judge, bert = FactJudge(), metrics.BertScorer()
    for name in SYSTEMS:
        rows = read_jsonl(eval_run["out"] / name / "predictions.jsonl")
        predictions, references = [r["prediction"] for r in rows], [r["reference"] for r in rows]
        rouge = metrics.rouge_scores(predictions, references)
        bertscore = bert.f1(predictions, references, progress=False)
        for row, rouge_row, f1 in zip(rows, rouge, bertscore):
            scores, meta = row["scores"], sources[row["id"]]["meta"]
            assert {k: scores[k] for k in rouge_row} == rouge_row
            assert scores["bertscore_f1"] == pytest.approx(f1, abs=1e-6)
            verdict = judge.score(row["prediction"], meta, row["instruction"])
            assert (scores["fact_judge"], scores["fact_recall"]) == (verdict.score, verdict.recall)
            assert row["hallucinated"] == metrics.hallucinated_entities(row["prediction"], row["transcript"])
            assert scores["hallucination"] == float(bool(row["hallucinated"]))
            assert scores["repetition"] == metrics.repetition_rate(row["prediction"], 3)
            assert scores["compression"] == pytest.approx(metrics.compression_ratio(row["prediction"], row["transcript"]))
            assert scores["truncated"] == float(row["truncated"])
            assert 1 <= scores["llm_judge"] <= 7


def test_metrics_json_means_and_cis_are_the_bootstrap_of_the_scores(eval_run):  # noqa: F811
    for name in SYSTEMS:
        rows = read_jsonl(eval_run["out"] / name / "predictions.jsonl")
        result = json.loads((eval_run["out"] / name / "metrics.json").read_text())
        for group_by, group, subset in [("all", None, rows), ("split", "test_unseen", rows[4:]),
                                        ("genre", "meeting", [r for r in rows if r["genre"] == "meeting"]),
                                        ("style", "bullets", [r for r in rows if r["style"] == "bullets"])]:
            stats = result["results"]["all"] if group is None else result["results"][group_by][group]
            for metric in ("rougeL", "bertscore_f1", "fact_judge", "llm_judge", "truncated", "length_words"):
                values = [r["scores"][metric] for r in subset]
                mean, low, high = metrics.bootstrap_ci(values, 0.95, 200, 0)
                assert stats[metric] == pytest.approx({"mean": mean, "low": low, "high": high, "n": len(values)})
                assert low <= mean <= high
        described = result["metrics"]
        assert "layer 6" in described["bertscore_f1"] and "rescaled no" in described["bertscore_f1"]
        assert "MiniLM" in described["bertscore_f1"] and "rubric-v1-" in described["llm_judge"]
        assert result["unjudged"] == 0


def test_cascade_reads_whisper_transcripts(eval_run):  # noqa: F811
    from speechsum.models.asr import word_error_rate

    rows = read_jsonl(eval_run["out"] / "cascade" / "predictions.jsonl")
    spoken = [" ".join(line.partition(": ")[2] for line in r["transcript"].splitlines()) for r in rows]
    assert word_error_rate(spoken, [r["asr_transcript"] for r in rows]) < 0.5  # espeak speech, Whisper tiny.en
    asr_manifest = read_jsonl(eval_run["out"] / "cascade" / "asr" / "test.jsonl")
    assert [r["transcript"] for r in asr_manifest] == [r["asr_transcript"] for r in rows[:4]]


def test_student_checkpoint_weights_are_loaded(eval_run):  # noqa: F811
    import torch

    checkpoint = eval_run["root"] / "sft" / "checkpoints" / "last.ckpt"
    spec = SystemSpec("student", "sft", str(checkpoint))
    model = build_model(spec)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    own = model.state_dict()
    assert spec.stage == "sft" and len(state) > 10
    for key, value in state.items():
        assert torch.equal(own[key.removeprefix("model.")], value)


def test_wandb_offline_table_and_no_key_anywhere(eval_run):  # noqa: F811
    runs = list((eval_run["out"] / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    tables = list(runs[0].rglob("*.table.json"))
    assert {p.name.split("_")[0] for p in tables} == set(SYSTEMS)
    table = json.loads(tables[0].read_text())
    assert table["columns"][:6] == ["id", "split", "audio", "instruction", "reference", "prediction"]
    assert eval_run["judge_requests"] > 0  # the judge was called with the key from the environment
    for path in eval_run["root"].rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert FAKE_OPENAI_KEY.encode() not in data and FAKE_WANDB_KEY.encode() not in data, path


def test_scorer_on_hand_checked_examples():
    transcript = "Maria: The budget is forty thousand euros."  # 7 words
    rows = [
        {"prediction": "The budget is 40,000 euros.", "reference": "The budget is 40,000 euros.",
         "instruction": "Summarise.", "transcript": transcript, "truncated": False},
        {"prediction": "Kevin Brown pays 99 euros. pays 99 euros.", "reference": "The budget is 40,000 euros.",
         "instruction": "Summarise.", "transcript": transcript, "truncated": True},
    ]
    Scorer(ScoringOptions(metrics=("rouge",))).score(rows)
    exact, invented = rows[0]["scores"], rows[1]["scores"]
    assert exact["rouge1"] == exact["rouge2"] == exact["rougeL"] == exact["rougeLsum"] == 1.0
    assert exact["hallucination"] == 0.0 and exact["compression"] == 5 / 7 and exact["length_words"] == 5
    assert rows[1]["hallucinated"] == ["kevin brown", "99"] and invented["hallucinated_entities"] == 2.0
    # "kevin brown pays 99 euros pays 99 euros": 6 trigrams, "pays 99 euros" twice → 1 - 5/6
    assert invented["repetition"] == pytest.approx(1 - 5 / 6) and invented["truncated"] == 1.0
    # rouge1 F1 (stemmed; "40,000" is two tokens): overlap {euro} = 1 of 6 reference and 8 prediction
    # unigrams → P = 1/8, R = 1/6, F = 2PR/(P+R)
    assert invented["rouge1"] == pytest.approx(2 * (1 / 8) * (1 / 6) / (1 / 8 + 1 / 6))


def test_aggregate_hand_checked():
    values = {"x": np.array([1.0, 0.0, math.nan, 1.0])}
    result = aggregate(values, {"split": ["a", "a", "b", "b"], "genre": [None, "g", "g", None]}, num_resamples=100)
    assert result["all"]["x"]["mean"] == pytest.approx(2 / 3) and result["all"]["x"]["n"] == 3
    assert result["split"]["a"]["x"]["mean"] == 0.5 and result["split"]["a"]["x"]["n"] == 2
    assert result["split"]["b"]["x"] == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 1}
    assert result["genre"]["g"]["x"] == {"mean": 0.0, "low": 0.0, "high": 0.0, "n": 1}


def test_collect_scores_of_a_single_example_are_arrays():
    # the torchmetrics cat state hands one example back as a 0-d tensor; evaluate iterates over them
    values = collect_scores([{"index": 0, "scores": {"fact_judge": 4.5, "rougeL": None}}], ["fact_judge", "rougeL"])
    assert values["fact_judge"].tolist() == [4.5] and values["example_position"].tolist() == [0]
    assert np.isnan(values["rougeL"]).tolist() == [True]


def test_system_specs_and_errors(tmp_path):
    assert SystemSpec.parse(f"text:teacher:{tmp_path}").role == "teacher"
    assert SystemSpec.parse(f"text:other:{tmp_path}").role == "text"
    with pytest.raises(ValueError, match="kind:name:path"):
        SystemSpec.parse("student:sft")
    with pytest.raises(ValueError, match="kind must be one of"):
        SystemSpec.parse(f"audio:x:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SystemSpec.parse("student:x:/no/such.ckpt")
    bad = tmp_path / "systems.yaml"
    bad.write_text(f"- {{kind: text, name: t, path: {tmp_path}, colour: red}}\n")
    with pytest.raises(ValueError, match=r"systems.yaml: system #1: unknown field\(s\) \['colour'\]"):
        load_systems_file(bad)
    with pytest.raises(ValueError, match="students need a checkpoint or config"):
        build_model(SystemSpec("student", "s", str(tmp_path)))


@pytest.mark.parametrize(("entry", "message"), [
    ("{kind: student, name: a}", "system #1: missing field(s) path"),  # was SystemSpec.__init__() missing 1 ...
    ("{kind: text, name: 5, path: x}", "system #1: field(s) name (int) must be text"),  # was "expected string ..."
    ("{name: 5, path: [x]}", "system #1: missing field(s) kind; field(s) name (int), path (list) must be text"),
    # <out>/.. : the run folder was --out's parent (metrics.json, predictions.jsonl written there)
    ("{kind: text, name: '..', path: .}", "system #1: system name '..': use letters, digits, '_', '-', '.', '+' "
                                         "only (not '.' or '..')"),
    ("{kind: text, name: '.', path: .}", "system #1: system name '.': use letters"),
])
def test_a_bad_systems_file_entry_names_the_field(tmp_path, entry, message):
    systems = tmp_path / "systems.yaml"
    systems.write_text(f"- {entry}\n")
    with pytest.raises(ValueError) as info:
        load_systems_file(systems)
    assert str(info.value).startswith(f"{systems}: {message}")
    with pytest.raises(ValueError, match=r"system name '\.\.': use letters"):
        SystemSpec.parse(f"text:..:{tmp_path}")


def test_system_splits_restrict_a_system_to_named_splits(tmp_path):
    manifests = {"test": tmp_path / "test.jsonl", "test_unseen": tmp_path / "u.jsonl"}
    spec = SystemSpec("text", "backbone", str(tmp_path), splits=["test"])
    assert spec.manifests(manifests) == {"test": manifests["test"]}
    assert SystemSpec("text", "teacher", str(tmp_path)).manifests(manifests) == manifests
    with pytest.raises(ValueError, match=r"splits \['test_xling'\] are not among the test manifests \(test, test_unseen\)"):
        SystemSpec("text", "b", str(tmp_path), splits=["test_xling"]).manifests(manifests)
    with pytest.raises(ValueError, match="splits must be a list of split names"):
        SystemSpec("text", "b", str(tmp_path), splits="test")
    systems = tmp_path / "systems.yaml"
    systems.write_text(f"- {{kind: text, name: t, path: {tmp_path}, splits: [test_unseen]}}\n")
    assert load_systems_file(systems)[0].splits == ["test_unseen"]


def test_system_splits_option_end_to_end(tmp_path, capsys):
    """`--system-splits backbone=test_unseen`: that system answers the test_unseen examples only,
    the other every split; a bad option names what is wrong."""
    from speechsum.evaluation.cli import evaluate_main
    from tests.eval_fixtures import save_tiny_text_lm, write_eval_set

    manifests = write_eval_set(tmp_path / "data")
    backbone = save_tiny_text_lm(tmp_path / "backbone", seed=2)
    common = ["--system", f"text:backbone:{backbone}", "--system", f"text:teacher:{backbone}",
              "--manifest", str(manifests["test"]), "--manifest", f"test_unseen={manifests['test_unseen']}",
              "--out", str(tmp_path / "out"), "--max-new-tokens", "4", "--metrics", "fact_judge",
              "--accelerator", "cpu", "--bootstrap-resamples", "20"]
    evaluate_main([*common, "--system-splits", "backbone=test_unseen"])
    rows = {name: read_jsonl(tmp_path / "out" / name / "predictions.jsonl") for name in ("backbone", "teacher")}
    assert {r["split"] for r in rows["backbone"]} == {"test_unseen"} and len(rows["backbone"]) == 2
    assert {r["split"] for r in rows["teacher"]} == {"test", "test_unseen"} and len(rows["teacher"]) == 6
    metrics = json.loads((tmp_path / "out" / "backbone" / "metrics.json").read_text())
    assert list(metrics["splits"]) == ["test_unseen"] and metrics["system"]["splits"] == ["test_unseen"]
    for bad, message in (("nobody=test", "NAME one of the systems (backbone, teacher)"),
                         ("backbone=", "expected NAME=SPLIT"),
                         ("backbone=test_xling", "are not among the test manifests")):
        with pytest.raises(SystemExit, match=re.escape(message)):
            evaluate_main([*common, "--system-splits", bad])


def test_evaluate_help_documents_every_option():
    parser = evaluate_parser()
    for action in parser._actions:
        assert action.help, action.dest
    text = parser.format_help()
    for option in ("--system", "--systems", "--system-splits", "--manifest", "--max-new-tokens", "--do-sample", "--judge-model",
                   "--api-key-env", "--bertscore-model", "--bertscore-layer", "--wandb", "--devices"):
        assert option in text


def test_a_split_name_given_twice_is_refused(tmp_path):
    """Two manifests with one split name (same stem, or the same SPLIT=): refused, not one dropped."""
    from speechsum.evaluation.cli import _manifests

    for folder in ("A", "B"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "test.jsonl").write_text("{}\n")
    a, b = tmp_path / "A" / "test.jsonl", tmp_path / "B" / "test.jsonl"
    for manifests in ([str(a), str(b)], [f"test={a}", f"test={b}"], [str(a), f"test={b}"]):
        args = evaluate_parser().parse_args(["--out", str(tmp_path / "out"), *[x for m in manifests for x in ("--manifest", m)]])
        with pytest.raises(SystemExit, match=r"split 'test' given twice .*--manifest SPLIT=PATH"):
            _manifests(args)
    args = evaluate_parser().parse_args(["--out", "o", "--manifest", str(a), "--benchmark-dir", str(tmp_path / "B")])
    with pytest.raises(SystemExit, match="split 'test' given twice"):
        _manifests(args)
    args = evaluate_parser().parse_args(["--out", "o", "--manifest", f"a={a}", "--manifest", f"b={b}"])
    assert _manifests(args) == {"a": a, "b": b}


def test_without_a_transcript_hallucination_is_unscored_not_every_name_invented():
    # a student manifest of audio and summary only: every name and number counted invented, hallucination 1.0
    rows = [{"prediction": "Maria meets Kevin Brown on 12 March.", "reference": "r", "instruction": "Summarise."},
            {"prediction": "Maria meets Kevin Brown on 12 March.", "reference": "r", "instruction": "Summarise.",
             "transcript": "Maria says she meets Kevin Brown on 12 March."}]
    Scorer(ScoringOptions(metrics=())).score(rows)
    bare, heard = rows[0]["scores"], rows[1]["scores"]
    assert (bare["hallucination"], bare["hallucinated_entities"], bare["compression"]) == (None, None, None)
    assert rows[0]["hallucinated"] == [] and (bare["repetition"], bare["length_words"]) == (0.0, 7.0)
    assert (heard["hallucination"], heard["hallucinated_entities"], heard["compression"]) == (0.0, 0.0, 7 / 9)
    values = collect_scores([dict(row, index=i) for i, row in enumerate(rows)], ["hallucination"])
    assert summarise(values)["hallucination"] == {"mean": 0.0, "low": 0.0, "high": 0.0, "n": 1}  # counted, not 1.0


def test_predictions_csv_names_each_column_once():
    """The ``truncated`` score was written as a second ``truncated`` column (pandas read it as
    ``truncated.1``, csv.DictReader kept one of the two)."""
    import csv
    import io

    from speechsum.evaluation.evaluate import predictions_csv

    row = {"id": "a", "system": "s", "split": "test", "genre": "call", "style": "bullets", "lang": "en",
           "instruction": "i", "reference": "r", "prediction": "p", "truncated": True, "num_tokens": 16,
           "scores": {"truncated": 1.0, "rougeL": 0.5}}
    header, values = list(csv.reader(io.StringIO(predictions_csv([row]))))
    assert header == ["id", "system", "split", "genre", "style", "lang", "instruction", "reference", "prediction",
                      "truncated", "num_tokens", "rougeL"]
    assert values[9:] == ["True", "16", "0.5"]
