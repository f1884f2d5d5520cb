"""`speechsum pairs`: sampling from a real checkpoint, judging through speechsum serve on loopback,
and resuming after crashes (mid-sampling, mid-judging) with no duplicates, nothing lost and no
re-judging of cached verdicts."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from speechsum.cli import lightning_cli
from speechsum.data.manifest import load_manifest
from speechsum.judges.pairwise import OpenAIJudge
from speechsum.pairs import build_parser, load_student, main, run_pairs
from tests.data.test_manifest import write_wav
from tests.helpers import run_config, with_options
from tests.servers import ScriptedChatBackend, prompt_text, serve_in_thread


class Crash(RuntimeError):
    pass


def shorter_wins(messages: list[dict]) -> str:
    """A scripted judge: the shorter summary wins (a position-independent rule), equal length ties."""
    user = prompt_text(messages)
    a = re.search(r"SUMMARY A:\n(.*?)\n\nSUMMARY B:", user, re.DOTALL).group(1)
    b = re.search(r"SUMMARY B:\n(.*)$", user, re.DOTALL).group(1)
    winner = "A" if len(a) < len(b) else "B" if len(b) < len(a) else "tie"
    return json.dumps({"winner": winner, "reasons": "shorter"})


@pytest.fixture(scope="module")
def student(tmp_path_factory, toy_data):
    """A tiny composed student's config and trainable-only checkpoint, as a stage run leaves them."""
    folder = tmp_path_factory.mktemp("student")
    config = run_config(folder, toy_data)
    module = lightning_cli(["--config", str(config)], run=False).model
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, folder / "student.ckpt")
    return {"config": config, "ckpt": folder / "student.ckpt", "manifest": toy_data["val"]}


def pair_argv(student, tmp_path, url: str, **overrides) -> list[str]:
    argv = ["--ckpt", str(student["ckpt"]), "--config", str(student["config"]), "--manifest",
            str(student["manifest"]), "--out", str(tmp_path / "pairs.jsonl"), "--num-samples", "3",
            "--max-new-tokens", "10", "--batch-size", "3", "--judge", "openai", "--judge-model", "scripted",
            "--judge-base-url", url, "--concurrency", "2"]
    return with_options(argv, *(text for name, value in overrides.items()
                                 for text in (f"--{name.replace('_', '-')}", str(value))))


def pair_args(student, tmp_path, url: str, **overrides):
    return build_parser().parse_args(pair_argv(student, tmp_path, url, **overrides))


def test_load_student_restores_the_checkpoint_weights(student):
    loaded = load_student(str(student["ckpt"]), str(student["config"]))
    saved = torch.load(student["ckpt"], weights_only=True)["state_dict"]
    own = loaded.model.state_dict()
    assert len(saved) > 10
    for key, value in saved.items():
        torch.testing.assert_close(own[key.removeprefix("model.")], value)
    assert loaded.max_audio_seconds is None  # the test config sets none: the backbone's limit applies


def test_pairs_resume_after_crashes_without_duplicates_losses_or_rejudging(student, tmp_path):
    backend = ScriptedChatBackend(shorter_wins)
    out = tmp_path / "pairs.jsonl"
    with serve_in_thread(backend) as url:
        args = pair_args(student, tmp_path, url)
        loaded = load_student(str(student["ckpt"]), str(student["config"]))

        # crash 1: the second generation batch dies → the first batch's samples are kept
        generate, calls = loaded.model.generate, []

        def dying_generate(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                raise Crash("killed while sampling")
            return generate(*a, **k)

        loaded.model.generate = dying_generate
        with pytest.raises(Crash):
            run_pairs(args, student=loaded)
        assert not out.exists()
        loaded.model.generate = generate

        # crash 2: the judge dies after 5 pair comparisons (sampling finishes first)
        class DyingJudge(OpenAIJudge):
            compares = 0

            def compare(self, item, a, b):
                DyingJudge.compares += 1
                if DyingJudge.compares > 5:
                    raise Crash("killed while judging")
                return super().compare(item, a, b)

        with pytest.raises(Crash):
            run_pairs(args, judge=DyingJudge("scripted", base_url=url), student=loaded)
        assert not out.exists()
        requests_before = backend.count
        verdicts_cached = len((tmp_path / "pairs.jsonl.cache" / "verdicts.jsonl").read_text().splitlines())
        assert 0 < verdicts_cached <= 5 and requests_before == 2 * verdicts_cached

        # the rerun (through main, the real CLI entry) finishes the job
        summary = run_pairs(args, student=loaded)
        assert summary["sampled_now"] == 0  # every example's samples came from the cache
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)) == summary["pairs"] > 0
        total = summary["pairs"] + summary["ties"] + summary["unjudged"] + summary["identical_samples"]
        assert total == summary["examples"] == 8
        all_verdicts = len((tmp_path / "pairs.jsonl.cache" / "verdicts.jsonl").read_text().splitlines())
        assert backend.count - requests_before == 2 * (all_verdicts - verdicts_cached)  # cached ones not re-asked

        # a third run: everything cached, zero requests, the same file
        first_output = out.read_text()
        count = backend.count
        main(["--ckpt", str(student["ckpt"]), "--config", str(student["config"]), "--manifest",
              str(student["manifest"]), "--out", str(out), "--num-samples", "3", "--max-new-tokens", "10",
              "--batch-size", "3", "--judge", "openai", "--judge-model", "scripted", "--judge-base-url", url])
        assert backend.count == count and out.read_text() == first_output

    manifest = {json.loads(line)["id"]: json.loads(line) for line in student["manifest"].read_text().splitlines()}
    for row in rows:
        assert len(row["chosen"]) < len(row["rejected"])  # the scripted judge's rule was applied
        assert row["instruction"] == manifest[row["id"]]["instruction"]
        assert row["transcript"] == manifest[row["id"]]["transcript"]
        assert row["summary"] == manifest[row["id"]]["summary"]
        assert row["meta"]["judge"]["identity"].startswith("openai:scripted|pairwise-v1-")
        assert (student["manifest"].parent / row["audio"]).exists() or (tmp_path / row["audio"]).exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_rejected_judge_key_stops_pairs_with_one_clear_line(student, tmp_path, monkeypatch):
    monkeypatch.setenv("PAIRS_TEST_KEY", "sk-wrong-0123456789")
    with serve_in_thread(ScriptedChatBackend(shorter_wins), api_key="sk-right") as url:
        args = pair_args(student, tmp_path, url, api_key_env="PAIRS_TEST_KEY")
        with pytest.raises(SystemExit) as stop:
            run_pairs(args)
    message = str(stop.value)
    assert message.startswith(f"speechsum pairs: the endpoint {url}") and "AuthenticationError" in message
    assert "$PAIRS_TEST_KEY" in message and "sk-wrong" not in message and "sk-right" not in message
    assert f"cached in {tmp_path / 'pairs.jsonl.cache'}" in message and "rerun the same command" in message
    assert (tmp_path / "pairs.jsonl.cache" / "samples.jsonl").exists()  # the samples are kept for the rerun


def test_a_judge_refusing_every_request_stops_pairs_before_an_empty_file(student, tmp_path):
    """Before: every example unjudged, an empty pairs.jsonl written and exit 0 (a judge model that
    takes no temperature 0 answers each request 400); DPO then failed on no data."""
    from speechsum.utils.replies import EndpointError

    backend = ScriptedChatBackend(shorter_wins, fail_every=1, fail_status=400)
    with serve_in_thread(backend) as url:
        with pytest.raises(EndpointError) as error:
            run_pairs(pair_args(student, tmp_path, url, concurrency=1))
    assert str(error.value).startswith(f"{url}/: the pair judge refused all ")
    assert "(the first: request failed: BadRequestError: Error code: 400 - scripted failure of request 1); check " \
           "the judge's model 'scripted', max_tokens and temperature" in str(error.value)
    assert not (tmp_path / "pairs.jsonl").exists() and backend.count >= 1


def test_pairs_output_is_a_valid_preference_manifest(student, tmp_path):
    with serve_in_thread(ScriptedChatBackend(shorter_wins)) as url:
        run_pairs(pair_args(student, tmp_path, url, pairing="first-two"))
    examples, _ = load_manifest(tmp_path / "pairs.jsonl", require_preference=True)
    assert examples and all(e.chosen != e.rejected for e in examples)


@pytest.mark.parametrize("on_bad_example", ["error", "skip"])
def test_bad_lines_and_audio_stop_pairs_or_are_skipped_and_counted(student, tmp_path, capsys, on_bad_example):
    """Before, pairs had no skip: one bad line or corrupt file among thousands stopped the run."""
    from tests.data.test_corrupt_audio import corrupt_flac

    lines = student["manifest"].read_text().splitlines()
    good = json.loads(lines[0])
    bad_audio = {**good, "id": "corrupt", "audio": str(corrupt_flac(tmp_path / "bad.flac"))}
    manifest = tmp_path / "prompts.jsonl"
    for index, line in enumerate(lines):  # the toy manifest's audio paths are relative to its folder
        record = json.loads(line)
        record["audio"] = str(student["manifest"].parent / record["audio"])
        lines[index] = json.dumps(record)
    manifest.write_text("\n".join([*lines, "{not json", json.dumps(bad_audio)]) + "\n")
    with serve_in_thread(ScriptedChatBackend(shorter_wins)) as url:
        args = pair_args({**student, "manifest": manifest}, tmp_path, url, on_bad_example=on_bad_example)
        if on_bad_example == "error":
            with pytest.raises(ValueError, match=rf"^{manifest}:9: invalid JSON: "):
                run_pairs(args)
            return
        summary = run_pairs(args)
    assert (summary["examples"], summary["skipped_lines"], summary["skipped_unreadable_audio"]) == (8, 1, 1)
    assert "skipped (--on-bad-example skip): 1 bad manifest line(s), 1 example(s) whose audio failed when read" in (
        capsys.readouterr().out)
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert rows and "corrupt" not in {row["id"] for row in rows}


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for option in ("--ckpt", "--config", "--manifest", "--out", "--num-samples", "--temperature", "--top-p",
                   "--max-new-tokens", "--batch-size", "--judge", "--judge-model", "--judge-base-url",
                   "--api-key-env", "--concurrency", "--cache", "--pairing", "--on-bad-example"):
        assert option in text


def test_the_fact_judge_on_data_without_meta_is_refused_before_sampling(tmp_path, toy_data):
    """It sampled every example first and failed at the first verdict, naming no file."""
    argv = ["--ckpt", str(tmp_path / "never-loaded.ckpt"), "--config", "none.yaml", "--manifest", str(toy_data["val"]),
            "--out", str(tmp_path / "pairs.jsonl"), "--judge", "fact"]
    with pytest.raises(ValueError, match=rf"^{toy_data['val']}: \d+ example\(s\) have no `meta` .* use --judge openai"):
        run_pairs(build_parser().parse_args(argv))
    assert not (tmp_path / "pairs.jsonl.cache" / "samples.jsonl").exists()
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--num-samples", "1"])


def test_a_seed_torch_cannot_take_is_a_usage_error_naming_seed(capsys):
    """``--seed 18446744073709551616`` was torch.manual_seed's ValueError traceback after the model loaded."""
    argv = ["--ckpt", "s.ckpt", "--config", "s.yaml", "--manifest", "m.jsonl", "--out", "p.jsonl"]
    assert build_parser().parse_args([*argv, "--seed", "-1"]).seed == -1  # torch takes it: still accepted
    for seed in (str(2**64), str(-(2**63) - 1)):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, "--seed", seed])
        assert "argument --seed: must be at " in capsys.readouterr().err


def test_manifest_records_keep_line_separator_characters_in_strings(tmp_path):
    """A valid manifest whose strings hold U+2028/U+2029/U+0085 unescaped: read whole, not split."""
    from speechsum.data.manifest import loaded_records

    rows = [{"id": f"x{i}", "audio": "a.wav", "instruction": "x", "transcript": f"line\u2028break\u2029para\x85next {i}"}
            for i in range(2)]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    write_wav(tmp_path / "a.wav", 16_000)
    examples, _ = load_manifest(path)
    assert loaded_records(path, examples) == {r["id"]: r for r in rows}


@pytest.mark.parametrize(("option", "message"), [("--ckpt", "--ckpt {path}: no such file"),
                                                 ("--config", "--config {path}: no such file")])
def test_a_missing_checkpoint_or_config_is_named_by_its_option_and_leaves_no_cache(tmp_path, toy_data, option, message):
    """It was '[Errno 2] No such file or directory: ...' after the cache folder had been made."""
    given = {"--ckpt": tmp_path / "student.ckpt", "--config": tmp_path / "config.yaml"}
    for path in given.values():
        path.write_text("x")
    given[option] = tmp_path / "missing"
    argv = ["--ckpt", str(given["--ckpt"]), "--config", str(given["--config"]), "--manifest", str(toy_data["val"]),
            "--out", str(tmp_path / "pairs.jsonl"), "--judge", "openai", "--judge-model", "m", "--judge-base-url",
            "http://127.0.0.1:9/v1"]
    with pytest.raises(FileNotFoundError) as info:
        run_pairs(build_parser().parse_args(argv))
    assert str(info.value) == message.format(path=tmp_path / "missing")
    assert not (tmp_path / "pairs.jsonl.cache").exists()


def test_a_rebuilt_manifest_is_sampled_and_judged_again_not_answered_from_the_cache(student, tmp_path):
    """Same ids, audio paths and instructions, new clips or transcripts (a data set rebuilt), same
    cache: the old clips' summaries and the verdicts on the old transcripts were reused silently."""
    data = tmp_path / "data"
    shutil.copytree(student["manifest"].parent / "audio", data / "audio")
    manifest = data / "val.jsonl"
    lines = [json.loads(line) for line in student["manifest"].read_text().splitlines()]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    backend = ScriptedChatBackend(shorter_wins)
    with serve_in_thread(backend) as url:
        args = pair_args(student, tmp_path, url, manifest=manifest)
        assert run_pairs(args)["sampled_now"] == 8
        asked = backend.count
        manifest.write_text("".join(json.dumps({**line, "transcript": line["transcript"] + " alpha"}) + "\n"
                                    for line in lines))
        assert run_pairs(args)["sampled_now"] == 0 and backend.count > asked  # same clips: new verdicts only
        clips = sorted((data / "audio").glob("val-*.wav"))
        contents = [clip.read_bytes() for clip in clips]
        for clip, content in zip(clips, contents[1:] + contents[:1]):
            clip.write_bytes(content)
        assert run_pairs(args)["sampled_now"] == 8


def test_an_out_that_is_the_input_manifest_is_refused_before_sampling(student, tmp_path, capsys):
    """`--out` the `--manifest` file (or a link to it): the pairs replaced the input manifest."""
    from speechsum.cli import main as speechsum

    manifest = tmp_path / "val.jsonl"
    shutil.copy(student["manifest"], manifest)
    (tmp_path / "audio").symlink_to(student["manifest"].parent / "audio")
    (tmp_path / "link.jsonl").symlink_to(manifest)
    original = manifest.read_text()
    with serve_in_thread(ScriptedChatBackend(shorter_wins)) as url:
        for out in (manifest, tmp_path / "link.jsonl"):
            argv = pair_argv(student, tmp_path, url, manifest=manifest, out=out)
            with pytest.raises(SystemExit) as info:
                speechsum(["pairs", *argv])
            err = capsys.readouterr().err
            assert info.value.code == 2 and (f"speechsum pairs: error: --out {out} is the --manifest file: the output "
                                             "would replace that input; give another --out path") in err
    assert manifest.read_text() == original and not (tmp_path / "val.jsonl.cache").exists()


@pytest.mark.parametrize(("device", "message"), [
    ("tpu9", "--device 'tpu9' is not a torch device"),
    ("cuda:7", "--device cuda:7: "),
])
def test_a_bad_device_is_named_before_the_checkpoint_is_loaded(tmp_path, toy_data, device, message):
    """It was a RuntimeError/AssertionError traceback from torch, after the model had been loaded."""
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    argv = ["--ckpt", str(tmp_path / "never-loaded.ckpt"), "--config", "none.yaml", "--manifest", str(toy_data["val"]),
            "--out", str(tmp_path / "pairs.jsonl"), "--device", device]
    with pytest.raises(ValueError) as info:
        run_pairs(build_parser().parse_args(argv))
    assert str(info.value).startswith(message)
    assert not (tmp_path / "pairs.jsonl.cache").exists()


def test_an_unreadable_checkpoint_leaves_no_empty_cache_folder(tmp_path, toy_data):
    """Before: the error named the checkpoint, and OUT.cache/ was left holding two empty files."""
    (tmp_path / "student.ckpt").write_text("not a checkpoint")
    (tmp_path / "config.yaml").write_text("x")
    argv = ["--ckpt", str(tmp_path / "student.ckpt"), "--config", str(tmp_path / "config.yaml"), "--manifest",
            str(toy_data["val"]), "--out", str(tmp_path / "pairs.jsonl"), "--judge", "openai", "--judge-model", "m",
            "--judge-base-url", "http://127.0.0.1:9/v1", "--device", "cpu"]
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        run_pairs(build_parser().parse_args(argv))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "student.ckpt"]
    (tmp_path / "kept.cache").mkdir()  # a cache folder that was there before the run is left as it was
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        run_pairs(build_parser().parse_args([*argv, "--cache", str(tmp_path / "kept.cache")]))
    assert sorted(p.name for p in (tmp_path / "kept.cache").iterdir()) == ["samples.jsonl", "verdicts.jsonl"]


def always_tie(messages: list[dict]) -> str:
    return json.dumps({"winner": "tie", "reasons": "both fine"})


@pytest.mark.parametrize(("options", "counts"), [
    ({}, "8 ties, 0 with < 2 distinct samples"),  # a judge that ties every pair
    ({"temperature": "0.0001"}, "0 ties, 8 with < 2 distinct samples"),  # every sample the same
])
def test_no_pair_at_all_stops_pairs_before_an_empty_file_keeping_the_caches(student, tmp_path, options, counts):
    """Before: an empty pairs.jsonl and exit 0; DPO then refused it as 'the file holds no JSON line ...
    write one JSON object per line', which says nothing of ties."""
    out = tmp_path / "pairs.jsonl"
    with serve_in_thread(ScriptedChatBackend(always_tie)) as url:
        with pytest.raises(ValueError) as error:
            run_pairs(pair_args(student, tmp_path, url, **options))
    assert str(error.value) == (
        f"no preference pair from the 8 examples ({counts}, 0 unjudged, 0 unreadable audio); nothing written to {out}. "
        f"Samples and verdicts stay cached in {out}.cache: rerun with --add-reference (the reference summary as a "
        "candidate), a higher --num-samples or --temperature, or another judge")
    assert not out.exists()
    assert len((tmp_path / "pairs.jsonl.cache" / "samples.jsonl").read_text().splitlines()) == 8
