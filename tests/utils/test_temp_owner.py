"""What a killed atomic writer leaves beside its target is removed by the next writer of that
target, and only that: temporaries of live writers, of other machines and of other targets stay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from speechsum.utils.io import atomic_path, write_dir_atomically
from speechsum.utils.temp_owner import HOST_TAG, owner_tag, remove_dead_writers_leftovers


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_are_named_by_their_writer(tmp_path):
    with atomic_path(tmp_path / "m.json") as tmp:
        assert tmp.name.startswith(f".m.json.{os.getpid()}.{HOST_TAG}-") and tmp.suffix == ".tmp"
    seen = []
    write_dir_atomically(tmp_path / "model", lambda folder: seen.append(folder.name))
    assert seen[0].startswith(f".model.tmp-{os.getpid()}.{HOST_TAG}-")
    assert owner_tag() == f"{os.getpid()}.{HOST_TAG}"


def test_only_a_dead_writers_leftovers_of_that_target_are_removed(tmp_path):
    dead, other_host = dead_pid(), "0" * 6 if HOST_TAG != "0" * 6 else "1" * 6
    leftovers = [f".model.tmp-{dead}.{HOST_TAG}-k2x9", f".model.{dead}.{HOST_TAG}-a1b2.tmp",
                 f".model.old-{dead}.{HOST_TAG}"]
    kept = [f".model.tmp-{os.getpid()}.{HOST_TAG}-live",  # a writer still at work (here: this process)
            f".model.tmp-{dead}.{other_host}-nfs1",  # of another machine: its pid means nothing here
            ".model.tmp-k2x9", f".model.old-{dead}",  # older speechsum: no owner (or no host) in the name
            f".other.tmp-{dead}.{HOST_TAG}-k2x9",  # another target's
            "model"]
    for name in leftovers + kept:
        (tmp_path / name).mkdir()
    removed = remove_dead_writers_leftovers(tmp_path / "model")
    assert sorted(p.name for p in removed) == sorted(leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_a_replaced_version_left_aside_is_put_back_when_the_target_is_missing(tmp_path):
    """A kill between write_dir_atomically's two renames: the old version is whole, the new one may not be."""
    dead = dead_pid()
    (tmp_path / f".export.old-{dead}.{HOST_TAG}").mkdir()
    (tmp_path / f".export.old-{dead}.{HOST_TAG}" / "w.bin").write_text("previous")
    (tmp_path / f".export.tmp-{dead}.{HOST_TAG}-x1").mkdir()
    assert [p.name for p in remove_dead_writers_leftovers(tmp_path / "export")] == [f".export.tmp-{dead}.{HOST_TAG}-x1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    assert (tmp_path / "export" / "w.bin").read_text() == "previous"


def test_a_folder_writer_killed_mid_write_leaves_nothing_after_the_next_write(tmp_path):
    """A real SIGKILL while a folder was being written (and a file in it); the next writer of that
    folder removes the dead one's temporary folder, and a file's temporary is named by its writer."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from speechsum.utils.io import atomic_path, write_dir_atomically
        out = Path({str(tmp_path)!r})
        def slow(folder):
            (folder / "w.bin").write_text("half")
            with atomic_path(out / "report.csv") as tmp:
                tmp.write_text("half")
                print("writing", flush=True)
                time.sleep(120)
        write_dir_atomically(out / "model", slow)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert child.stdout.readline() == "writing\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [n.split("-")[0] for n in names] == [".model.tmp", f".report.csv.{child.pid}.{HOST_TAG}"]
    write_dir_atomically(tmp_path / "model", lambda folder: (folder / "w.bin").write_text("whole"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [names[1], "model"]
    assert [p.name for p in remove_dead_writers_leftovers(tmp_path / "report.csv")] == [names[1]]
    assert (tmp_path / "model" / "w.bin").read_text() == "whole"


def test_file_writers_remove_a_dead_writers_temporary_of_their_output(tmp_path):
    """`speechsum summarize --out`, `evaluate`, `pairs`... killed mid-write left `.OUT.PID.HOST-XXXX.tmp`
    beside the output; the next write of that output removes it (a live writer's stays)."""
    from speechsum.data.toy import write_toy_dataset
    from speechsum.utils.io import write_atomic, write_jsonl

    dead = dead_pid()
    live = f".rows.jsonl.{os.getpid()}.{HOST_TAG}-live.tmp"
    for name in (f".rows.jsonl.{dead}.{HOST_TAG}-k2x9.tmp", f".summary.csv.{dead}.{HOST_TAG}-k2x9.tmp", live):
        (tmp_path / name).write_text("half")
    write_jsonl(tmp_path / "rows.jsonl", [{"id": "a"}])
    write_atomic(tmp_path / "summary.csv", "a,b\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [live, "rows.jsonl", "summary.csv"]
    toy = tmp_path / "toy"
    (toy / "audio").mkdir(parents=True)
    (toy / "audio" / f".train-00000.wav.{dead}.{HOST_TAG}-k2x9.tmp").write_bytes(b"RIFF")
    write_toy_dataset(toy, {"train": 1}, seed=0)
    assert sorted(p.name for p in (toy / "audio").iterdir()) == ["train-00000.wav"]
