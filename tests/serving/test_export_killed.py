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
