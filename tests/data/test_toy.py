"""The toy tone-language set and its scorer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from speechsum.data.toy import WORDS, score_predictions, summary_for, tone_clip, write_toy_dataset


def test_each_word_is_a_tone_of_its_own_pitch():
    clip = tone_clip(["delta"], 16_000)
    assert len(clip) == int(0.25 * 16_000) + int(0.05 * 16_000)
    spectrum = np.abs(np.fft.rfft(clip[: 4000]))
    assert np.fft.rfftfreq(4000, 1 / 16_000)[spectrum.argmax()] == pytest.approx(300 + 150 * WORDS.index("delta"), abs=4)


def test_summaries_answer_the_instruction():
    assert summary_for("first", ["echo", "golf"]) == "The first word was echo."
    assert summary_for("keywords", ["echo", "golf", "echo"]) == "Words: echo, golf."


def test_dataset_is_deterministic(tmp_path):
    a = write_toy_dataset(tmp_path / "a", {"train": 5}, seed=3)
    b = write_toy_dataset(tmp_path / "b", {"train": 5}, seed=3)
    assert a["train"].read_text() == b["train"].read_text()
    assert not list(tmp_path.rglob("*.tmp"))


def test_scores_match_hand_computation(tmp_path):
    rows = [
        {"reference": "The first word was echo.", "prediction": "The first word was echo."},
        {"reference": "The first word was golf.", "prediction": "The first word was echo."},
        {"reference": "Words: echo, golf.", "prediction": "Words: echo, alpha."},  # F1 = 2·1/(2+2) = 0.5
        {"reference": "Words: hotel.", "prediction": "Words: hotel."},  # F1 = 1
    ]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores = score_predictions(path)
    assert scores == {"examples": 4, "exact_match": 0.5, "first_word_accuracy": 0.5, "word_list_f1": 0.75}


def test_a_kind_with_no_examples_is_not_applicable_not_zero(tmp_path, capsys):
    from speechsum.data.toy import score_main

    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps({"reference": "Words: hotel.", "prediction": "Words: hotel."}) + "\n")
    assert score_predictions(path)["first_word_accuracy"] is None
    score_main([str(path)])
    assert "first_word_accuracy  n/a (no examples of this kind)" in capsys.readouterr().out


@pytest.mark.parametrize(("counts", "problem"), [
    (["--train", "-1"], "argument --train: must be at least 1, got -1"),
    (["--val", "0"], "argument --val: must be at least 1, got 0"),
    # a WAV each: it wrote about 60 kB per example until the disk was full
    (["--train", "100000000"], "argument --train: must be at most 100000, got 100000000"),
])
def test_toydata_refuses_empty_or_huge_splits(tmp_path, capsys, counts, problem):
    from speechsum.data.toy import main

    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "toy"), *counts])
    assert stop.value.code == 2 and not (tmp_path / "toy").exists()
    assert capsys.readouterr().err.endswith(f"speechsum toydata: error: {problem}\n")


@pytest.mark.parametrize(("content", "message"), [
    (b"", "predictions.jsonl: no predictions (an empty file)"),
    (b'{"prediction": "x", "reference": "Words: echo."}\n{oops\n', "predictions.jsonl:2: invalid JSON"),
    (b'{"prediction": "x"}\n', "predictions.jsonl:1: needs string field(s) reference (a `speechsum predict` row)"),
    (b'[1]\n', "predictions.jsonl:1: needs string field(s) prediction, reference"),
    (b'{"prediction": "caf\xe9"}\n', "predictions.jsonl:1: not valid UTF-8: byte(s) e9 at byte offset 19"),
    # the line in the file, blank lines counted (was the row's place: line 2)
    (b'\n{"prediction": "x", "reference": "Words: echo."}\n\n\n{"prediction": null, "reference": "Words: echo."}\n',
     "predictions.jsonl:5: needs string field(s) prediction"),
    # a repeated example counted twice before
    (b'{"id": "a", "prediction": "x", "reference": "Words: echo."}\n{"id": "a", "prediction": "x", "reference": "Words: echo."}\n',
     "predictions.jsonl:2: id 'a' is also on line 1 (each example once: a repeated one would count twice)"),
    # predictions on other data (a benchmark's) were scored: exact match 0.0x, as if the model were bad
    (b'{"prediction": "x", "reference": "Words: echo."}\n{"prediction": "x", "reference": "In this meeting, Tom decided."}\n',
     "predictions.jsonl:2: reference 'In this meeting, Tom decided.' is not one of the toy set's ('The first word was "
     "\u2026' or 'Words: \u2026'): toyscore scores predictions on `speechsum toydata` data; score other data with "
     "`speechsum evaluate`"),
])
def test_toyscore_names_the_file_and_line_of_bad_input(tmp_path, content, message):
    from speechsum.data.toy import score_main

    path = tmp_path / "predictions.jsonl"
    path.write_bytes(content)
    with pytest.raises(SystemExit) as stop:
        score_main([str(path)])
    assert str(stop.value).startswith(f"speechsum toyscore: {tmp_path}/{message}")


def test_toyscore_of_a_missing_file_says_what_writes_it(tmp_path):
    """A new user's `speechsum toyscore runs/toy-run/predictions.jsonl` (the README's path, which no
    config writes) ended at 'No such file or directory' without saying what writes the file."""
    from speechsum.data.toy import score_main

    missing = tmp_path / "missing.jsonl"
    with pytest.raises(SystemExit) as stop:
        score_main([str(missing)])
    assert str(stop.value) == (
        f"speechsum toyscore: {missing}: No such file or directory; `speechsum predict --config ... --ckpt_path last` "
        "writes it where the config's PredictionWriter output_path says (configs/trainer/cpu.yaml: "
        "runs/default/predictions.jsonl)")


def test_an_interrupted_write_leaves_no_cut_wav(tmp_path):
    """A write that fails part way (RLIMIT_FSIZE in a subprocess: the kernel refuses bytes past
    4 KiB, less than any clip) leaves no truncated WAV that a rerun's manifest could point at."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        from speechsum.data.toy import write_toy_dataset
        try:
            write_toy_dataset({str(tmp_path / "toy")!r}, {{"train": 2}}, seed=0)
        except Exception as err:
            print("refused", type(err).__name__)
            sys.exit(0)
        sys.exit("the oversized write did not fail")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused")
    assert sorted(p.name for p in (tmp_path / "toy").rglob("*")) == ["audio"]


def test_toydata_never_replaces_another_data_sets_manifests(tmp_path):
    """``toydata --out runs/x/data`` replaced a benchmark's train/val/test.jsonl silently."""
    from speechsum.data.toy import main

    data = tmp_path / "data"
    data.mkdir()
    benchmark_line = json.dumps({"id": "b1", "audio": "audio/test-000000.wav", "summary": "Tom decided."}) + "\n"
    (data / "test.jsonl").write_text(benchmark_line)
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(data), "--train", "2", "--val", "1", "--test", "1"])
    assert stop.value.code == (f"speechsum toydata: --out {data}: {data / 'test.jsonl'} is not a toy-set manifest and "
                               "would be replaced; give a new or empty folder (or an earlier toydata folder)")
    assert sorted(p.name for p in data.iterdir()) == ["test.jsonl"]
    assert (data / "test.jsonl").read_text() == benchmark_line
    main(["--out", str(tmp_path / "toy"), "--train", "2", "--val", "1", "--test", "1"])
    main(["--out", str(tmp_path / "toy"), "--train", "3", "--val", "1", "--test", "1"])  # an earlier toy set is replaced
    assert len((tmp_path / "toy" / "train.jsonl").read_text().splitlines()) == 3


def test_a_smaller_rerun_removes_the_earlier_runs_wavs_but_not_the_users_files(tmp_path):
    """Before: `toydata` run again with fewer examples left the earlier run's WAVs beyond the new counts in
    audio/ (train-00003.wav … here), which no manifest named. A file the user put there, one that looks like
    toydata's but that no toy manifest named, and the other splits' WAVs stay."""
    from speechsum.data.toy import main

    out = tmp_path / "toy"
    main(["--out", str(out), "--train", "5", "--val", "2", "--test", "2"])
    (out / "audio" / "notes.txt").write_text("mine")
    (out / "audio" / "train-00099.wav").write_bytes(b"RIFF mine")  # toydata's pattern, no manifest's
    (out / "mine.wav").write_bytes(b"RIFF")
    main(["--out", str(out), "--train", "3", "--val", "2", "--test", "1"])
    assert sorted(p.name for p in (out / "audio").iterdir()) == [
        "notes.txt", "test-00000.wav", "train-00000.wav", "train-00001.wav", "train-00002.wav", "train-00099.wav",
        "val-00000.wav", "val-00001.wav"]
    assert sorted(p.name for p in out.iterdir()) == ["audio", "mine.wav", "test.jsonl", "train.jsonl", "val.jsonl"]
    named = {json.loads(line)["audio"] for split in ("train", "val", "test")
             for line in (out / f"{split}.jsonl").read_text().splitlines()}
    assert named == {f"audio/{p.name}" for p in (out / "audio").glob("*-0000?.wav")}
