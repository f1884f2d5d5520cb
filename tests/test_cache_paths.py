"""A resumable cache file given as one of the command's inputs or outputs is refused before any
work: ``synth --cache`` the ``--manifest`` emptied a one-line manifest (its line, no cache entry,
was cut off as a truncated write), and ``--cache`` the ``--out`` file was replaced by the output
at the end; ``pairs`` and ``evaluate --judge-cache/--asr-cache`` took the same paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechsum.cli import main as speechsum

DEAD_URL = "http://127.0.0.1:9/v1"  # never reached: every check here comes first


@pytest.fixture
def one_line_manifest(tmp_path, toy_data) -> Path:
    """A manifest of one line without its newline: what the cache reader cut off as a truncated write."""
    row = json.loads(toy_data["val"].read_text().splitlines()[0])
    row["audio"] = str(toy_data["val"].parent / row["audio"])
    row["meta"] = {"facts": []}
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(row))
    return path


def refused(argv: list[str], capsys) -> str:
    """What the command said when it stopped: its exit message, or the first line it printed to stderr."""
    with pytest.raises(SystemExit) as info:
        speechsum(argv)
    return info.value.code if isinstance(info.value.code, str) else capsys.readouterr().err.splitlines()[0]


def synth_argv(manifest: Path, out: Path, cache: Path) -> list[str]:
    return ["synth", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache), "--model", "m",
            "--base-url", DEAD_URL, "--api-key-env", "CACHE_PATHS_TEST_KEY"]


def test_synth_refuses_a_cache_that_is_the_manifest_and_leaves_it_whole(tmp_path, one_line_manifest, monkeypatch, capsys):
    monkeypatch.setenv("CACHE_PATHS_TEST_KEY", "k")
    original = one_line_manifest.read_text()
    message = refused(synth_argv(one_line_manifest, tmp_path / "out.jsonl", one_line_manifest), capsys)
    assert message == (f"speechsum synth: --cache {one_line_manifest} is the --manifest file: the cache would be "
                       "appended to that input (or cut it); give another --cache path")
    assert one_line_manifest.read_text() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


@pytest.mark.parametrize("cache_name, name", [("out.jsonl", "--out"), ("out.stats.json", "--out's stats")])
def test_synth_refuses_a_cache_that_is_an_output(tmp_path, one_line_manifest, monkeypatch, cache_name, name,
                                                  capsys):
    monkeypatch.setenv("CACHE_PATHS_TEST_KEY", "k")
    cache = tmp_path / cache_name
    message = refused(synth_argv(one_line_manifest, tmp_path / "out.jsonl", cache), capsys)
    assert message == (f"speechsum synth: --cache {cache} is the {name} file: that output, written at the end, "
                       "would replace the cache; give another --cache path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


@pytest.mark.parametrize("cache_file, name", [("samples.jsonl", "--manifest"), ("verdicts.jsonl", "--out")])
def test_pairs_refuses_a_cache_file_that_is_the_manifest_or_the_out(tmp_path, toy_data, one_line_manifest,
                                                                     cache_file, name, capsys):
    folder = tmp_path / "work"
    folder.mkdir()
    manifest = folder / "samples.jsonl" if name == "--manifest" else one_line_manifest
    manifest.write_text(one_line_manifest.read_text())
    out = folder / "verdicts.jsonl" if name == "--out" else tmp_path / "pairs.jsonl"
    (tmp_path / "student.ckpt").write_bytes(b"not read")
    (tmp_path / "config.yaml").write_text("not read\n")
    message = refused(["pairs", "--ckpt", str(tmp_path / "student.ckpt"), "--config", str(tmp_path / "config.yaml"),
                       "--manifest", str(manifest), "--out", str(out), "--cache", str(folder), "--device", "cpu"], capsys)
    harm = ("the cache would be appended to that input (or cut it)" if name == "--manifest"
            else "that output, written at the end, would replace the cache")
    assert message == f"speechsum pairs: error: --cache {folder / cache_file} is the {name} file: {harm}; give another --cache path"
    assert sorted(p.name for p in folder.iterdir()) == (["samples.jsonl"] if name == "--manifest" else [])
    assert manifest.read_text() == one_line_manifest.read_text()


@pytest.mark.parametrize("option", ["--judge-cache", "--asr-cache"])
def test_evaluate_refuses_a_cache_that_is_a_test_manifest(tmp_path, one_line_manifest, option, capsys):
    model = tmp_path / "lm"
    model.mkdir()
    (model / "config.json").write_text("{}")
    original = one_line_manifest.read_text()
    message = refused(["evaluate", "--out", str(tmp_path / "eval"), "--manifest", f"test={one_line_manifest}",
                       "--system", f"text:lm:{model}", option, str(one_line_manifest), "--metrics", "rouge"], capsys)
    assert message == (f"speechsum evaluate: error: {option} {one_line_manifest} is the --manifest (split test) file: the cache would be "
                       f"appended to that input (or cut it); give another {option} path")
    assert one_line_manifest.read_text() == original
    assert not (tmp_path / "eval").exists()


def test_synth_refuses_a_cache_that_is_a_hard_link_of_the_manifest(tmp_path, one_line_manifest, monkeypatch,
                                                                   capsys):
    """Another name of the manifest's file (a hard link: no symbolic link to resolve) is the manifest too."""
    monkeypatch.setenv("CACHE_PATHS_TEST_KEY", "k")
    original = one_line_manifest.read_text()
    cache = tmp_path / "cache.jsonl"
    cache.hardlink_to(one_line_manifest)
    message = refused(synth_argv(one_line_manifest, tmp_path / "out.jsonl", cache), capsys)
    assert message == (f"speechsum synth: --cache {cache} is the --manifest file: the cache would be "
                       "appended to that input (or cut it); give another --cache path")
    assert one_line_manifest.read_text() == original


@pytest.mark.parametrize("command", ["synth", "pairs"])
def test_a_file_where_the_default_cache_folder_goes_is_refused_naming_it(tmp_path, one_line_manifest, monkeypatch,
                                                                         command, capsys):
    """No --cache and a file OUT.cache in the way: '[Errno 17] File exists: OUT.cache' (pairs after
    reading the manifest), naming neither the cache nor what to change."""
    monkeypatch.setenv("CACHE_PATHS_TEST_KEY", "k")
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.cache").write_text("someone's notes\n")
    (tmp_path / "student.ckpt").write_bytes(b"not read")
    (tmp_path / "config.yaml").write_text("not read\n")
    if command == "synth":
        argv = ["synth", "--manifest", str(one_line_manifest), "--out", str(out), "--model", "m",
                "--base-url", DEAD_URL, "--api-key-env", "CACHE_PATHS_TEST_KEY"]
        cache = f"{out}.cache/synth.jsonl"
    else:
        argv = ["pairs", "--ckpt", str(tmp_path / "student.ckpt"), "--config", str(tmp_path / "config.yaml"),
                "--manifest", str(one_line_manifest), "--out", str(out), "--device", "cpu"]
        cache = f"{out}.cache is a file: give a folder"
    message = refused(argv, capsys)
    reason = f": {out}.cache is a file, not a folder" if command == "synth" else ""
    assert message == f"speechsum {command}: error: the default --cache {cache}{reason}"
    assert (tmp_path / "out.jsonl.cache").read_text() == "someone's notes\n"
    assert not out.exists()


@pytest.mark.parametrize("command", ["synth", "pairs"])
def test_an_out_where_the_cache_folder_is_made_is_refused_before_any_work(tmp_path, one_line_manifest, monkeypatch,
                                                                            command, capsys):
    """`--out X --cache X/...` (synth) or `--out X --cache X` (pairs), X not there yet: the run made the
    cache folder X, did all its work (paid LLM calls, sampling and judging) and then failed writing X."""
    monkeypatch.setenv("CACHE_PATHS_TEST_KEY", "k")
    out = tmp_path / "out.jsonl"
    (tmp_path / "student.ckpt").write_bytes(b"not read")
    (tmp_path / "config.yaml").write_text("not read\n")
    if command == "synth":
        cache = out / "synth.jsonl"
        argv = synth_argv(one_line_manifest, out, cache)
    else:
        cache = out
        argv = ["pairs", "--ckpt", str(tmp_path / "student.ckpt"), "--config", str(tmp_path / "config.yaml"),
                "--manifest", str(one_line_manifest), "--out", str(out), "--cache", str(cache), "--device", "cpu"]
    message = refused(argv, capsys)
    assert message == (f"speechsum {command}: error: --out {out}: --cache {cache} is made there first, so the output "
                       "could not be written at the end; give --out and --cache different paths")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "in.jsonl", "student.ckpt"]
