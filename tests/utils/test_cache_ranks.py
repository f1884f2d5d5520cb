"""JsonlCache with several processes: one shard file per rank, merged on read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from speechsum.utils.jsonl_cache import JsonlCache, process_rank, shard_files, shard_path
from tests.conftest import REPO

WORKER = """
import os, sys, time
from pathlib import Path
from speechsum.utils.remote import JsonlCache
path, go, rank = Path(sys.argv[1]), Path(sys.argv[2]), int(os.environ["RANK"])
with JsonlCache(path) as cache:
    assert cache.write_path.name == f"cache.rank{rank}.jsonl", cache.write_path
    while not go.exists():
        time.sleep(0.005)
    for i in range(300):
        cache.put(f"shared-{i}", {"i": i})          # both ranks write these
        cache.put(f"own-{rank}-{i}", {"rank": rank, "i": i, "text": "x" * (i % 50)})
"""


def test_two_processes_write_concurrently_and_nothing_is_lost_or_doubled(tmp_path):
    path, go = tmp_path / "cache.jsonl", tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(go)], cwd=REPO,
                                env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2"})
               for rank in (0, 1)]
    time.sleep(0.5)
    go.touch()
    assert [w.wait(timeout=120) for w in workers] == [0, 0]

    assert [p.name for p in shard_files(path)] == ["cache.rank0.jsonl", "cache.rank1.jsonl"]
    for rank in (0, 1):  # each shard holds exactly its rank's 600 whole lines
        lines = shard_path(path, rank).read_text(encoding="utf-8").splitlines()
        assert len(lines) == 600 and all(json.loads(line)["key"] for line in lines)
    with JsonlCache(path, rank=None) as cache:
        expected = {f"shared-{i}" for i in range(300)} | {f"own-{r}-{i}" for r in (0, 1) for i in range(300)}
        assert set(cache.keys()) == expected and len(cache) == 900  # one entry per key
        assert cache.duplicates == 300 and cache.truncated_lines == 0  # the shared keys, written by both
        assert all(cache.get(f"own-1-{i}") == {"rank": 1, "i": i, "text": "x" * (i % 50)} for i in range(300))
        assert all(cache.get(f"shared-{i}") == {"i": i} for i in range(300))
        cache.put("single", {"x": 1})
    assert path.read_text(encoding="utf-8").count("\n") == 1  # a single process writes the base file


DIST_WORKER = """
import sys
import torch.distributed as dist
from speechsum.utils.remote import JsonlCache
path, store, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
with JsonlCache(path) as cache:  # no RANK in the environment: the rank comes from torch.distributed
    assert cache.rank == rank, cache.rank
    cache.put(f"from-{rank}", {"rank": rank})
    dist.barrier()
    assert cache.get(f"from-{1 - rank}") == {"rank": 1 - rank}  # the other rank's entry, without reopening
dist.barrier()
dist.destroy_process_group()
"""


def test_ranks_from_torch_distributed_see_each_others_entries(tmp_path):
    path = tmp_path / "cache.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    workers = [subprocess.Popen([sys.executable, "-c", DIST_WORKER, str(path), str(tmp_path / "store"), str(rank)],
                                cwd=REPO, env=env) for rank in (0, 1)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    with JsonlCache(path, rank=None) as cache:
        assert {k: cache.get(k) for k in cache.keys()} == {"from-0": {"rank": 0}, "from-1": {"rank": 1}}


def test_a_rank_repairs_only_its_own_shard_and_sees_others_after_reload(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"key": "base", "value": {"v": 0}}\n', encoding="utf-8")
    shard_path(path, 1).write_text('{"key": "r1", "value": {"v": 1}}\n{"key": "r1b", "val', encoding="utf-8")
    shard_path(path, 0).write_text('{"key": "r0", "value": {"v": 2}}\n{"key": "cut', encoding="utf-8")
    foreign_before = shard_path(path, 1).read_bytes()
    with JsonlCache(path, rank=0) as cache, JsonlCache(path, rank=1) as other:
        assert sorted(cache.keys()) == ["base", "r0", "r1"] and cache.truncated_lines == 1
        assert other.truncated_lines == 1 and "r1b" not in other
        other.put("late", {"v": 3})
        assert "late" not in cache  # `in`, len() and keys() show what was read so far
        assert cache.get("late") == {"v": 3}  # a miss reads what other ranks appended since
        cache.reload()
        assert sorted(cache.keys()) == ["base", "late", "r0", "r1"] and cache.truncated_lines == 0
    assert shard_path(path, 0).read_text() == '{"key": "r0", "value": {"v": 2}}\n'  # its own: cut back
    assert shard_path(path, 1).read_bytes() != foreign_before  # rank 1 repaired its own, then appended
    assert shard_path(path, 1).read_text().splitlines()[-1] == '{"key": "late", "value": {"v": 3}}'


def test_a_miss_reads_only_complete_new_lines_of_other_ranks(tmp_path):
    path = tmp_path / "c.jsonl"
    with JsonlCache(path, rank=0) as cache:
        assert cache.get("k") is None
        line = b'{"key": "k", "value": {"v": 1}}\n'
        with open(shard_path(path, 1), "ab") as other:  # rank 1, halfway through a write
            other.write(line[:10])
            other.flush()
            assert cache.get("k") is None and cache.truncated_lines == 0
            other.write(line[10:])
            other.flush()
            assert cache.get("k") == {"v": 1} and len(cache) == 1
            other.write(b'{"key": "k2", "value": {}}\nnot json\n')
            other.flush()
            with pytest.raises(ValueError, match=r"c.rank1.jsonl, line 3: unreadable"):
                cache.get("k3")
    assert shard_path(path, 1).read_bytes().startswith(line)  # another rank's file is never modified


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    ({"RANK": "3", "WORLD_SIZE": "4"}, 3),
    ({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, 1),  # Lightning's launcher, one node
    ({"LOCAL_RANK": "0", "WORLD_SIZE": "1"}, None),
])
def test_process_rank_from_the_environment(monkeypatch, environ, expected):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert process_rank() == expected
