"""`speechsum synth`'s output files: nothing written in the wrong place, nothing empty left behind
(a real `speechsum serve` on loopback with scripted answers, or a JSON server giving bad replies)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechsum.data.manifest import load_manifest
from speechsum.synth.run import stats_path
from tests.servers import JSONServer, ScriptedChatBackend, serve_in_thread
from tests.synth.test_synth import RECORDINGS, SECRET, ScriptedLLM, synth


@pytest.fixture
def recordings(tmp_path, toy_data) -> Path:
    examples, _ = load_manifest(toy_data["train"])
    lines = [{"id": f"rec{i}", "audio": e.audio, "transcript": f"Recording {i}: {e.transcript}."}
             for i, e in enumerate(examples[:RECORDINGS])]
    path = tmp_path / "in" / "recordings.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_a_run_stopped_before_any_answer_leaves_no_empty_cache_but_keeps_one_it_wrote_to(tmp_path, recordings,
                                                                                         monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    out, cache = tmp_path / "out" / "train.jsonl", tmp_path / "kept" / "cache.jsonl"
    with JSONServer(lambda request: {"choices": []}) as server, pytest.raises(SystemExit, match="rerun"):
        synth(server.url, recordings, out, "--cache", str(cache))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # neither out/ nor kept/cache.jsonl, both empty
    cache.parent.mkdir()
    cache.write_text('{"key": "k", "value": {"value": 1}}\n', encoding="utf-8")
    with JSONServer(lambda request: {"choices": []}) as server, pytest.raises(SystemExit, match="rerun"):
        synth(server.url, recordings, out, "--cache", str(cache))
    assert cache.read_text(encoding="utf-8") == '{"key": "k", "value": {"value": 1}}\n'  # another run's: kept


def test_a_folder_where_the_stats_file_goes_is_refused_before_any_call(tmp_path, recordings, monkeypatch):
    """It failed after every paid call, with --out written but no stats file beside it."""
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    out = tmp_path / "out" / "train.jsonl"
    stats_path(out).mkdir(parents=True)
    llm = ScriptedLLM()
    with serve_in_thread(ScriptedChatBackend(llm)) as url, pytest.raises(IsADirectoryError) as error:
        synth(url, recordings, out)
    assert str(error.value) == f"--out's stats file {stats_path(out)} is a folder: give a file path"
    assert sorted(p.name for p in out.parent.iterdir()) == ["train.stats.json"]
