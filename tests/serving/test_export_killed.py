"""``speechsum export`` killed while it writes: the next export to the same ``--out`` removes the
temporary folder the killed one left (it is named by the dead process) and writes a whole export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from speechsum.serving.export import EXPORT_FILE, main
from tests.serving.export_fixtures import trained_student

REPO = Path(__file__).resolve().parents[2]


def test_an_export_killed_mid_write_is_cleaned_up_by_the_next_one(tmp_path: Path, capsys) -> None:
    _, ckpt = trained_student("text_llm", tmp_path / "run")
    out = tmp_path / "exports" / "student"
    script = textwrap.dedent(f"""
        import time
        import speechsum.serving.export as export
        from speechsum.utils import io
        def stalled(target, write, replace=True):
            def write_then_stall(folder):
                write(folder)
                print("written", flush=True)
                time.sleep(120)
            io.write_dir_atomically(target, write_then_stall, replace)
        export.write_dir_atomically = stalled
        export.main([{str(ckpt)!r}, "--out", {str(out)!r}])
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout.readline() == "written\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    left = [p.name for p in out.parent.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".student.tmp-{child.pid}."), left

    main([str(ckpt), "--out", str(out)])
    assert capsys.readouterr().out == f"exported {ckpt} -> {out}\n"
    assert [p.name for p in out.parent.iterdir()] == ["student"]
    assert (out / EXPORT_FILE).is_file()


def test_an_export_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    """safetensors (Rust) reports a full disk as its own error, no OSError: it was a traceback."""
    from speechsum.serving import export
    from tests.helpers import failed_command

    class SafetensorError(Exception):
        pass

    def no_space(state, path, metadata=None):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                              'left on device" })')

    _, ckpt = trained_student("composed_tiny", tmp_path / "run")
    monkeypatch.setattr(export, "save_file", no_space)
    code, err = failed_command(["export", str(ckpt), "--out", str(tmp_path / "student")], capsys)
    assert code == 1, err
    assert err.endswith('\nspeechsum export: error: cannot write: Error while serializing: IoError(Os { code: 28, kind: '
                        'StorageFull, message: "No space left on device" }) (outputs are written whole or not at all: '
                        "nothing half-written was left); free space on that disk (rerun the same command)\n"
                        "(set SPEECHSUM_TRACEBACK=1 for the traceback)\n") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
