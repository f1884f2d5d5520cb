"""The one atomic-write helper: whole files or none, no temporary leftovers, even when writes fail."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from speechsum.utils.io import (
    atomic_path,
    jsonl_lines,
    read_jsonl,
    write_atomic,
    write_dir_atomically,
    write_jsonl,
)


def test_write_atomic_and_jsonl_round_trip(tmp_path):
    write_atomic(tmp_path / "a" / "x.txt", "héllo")
    assert (tmp_path / "a" / "x.txt").read_bytes() == "héllo".encode()
    write_jsonl(tmp_path / "rows.jsonl", iter([{"id": 1, "text": "ñ"}, {"id": 2}]))
    assert (tmp_path / "rows.jsonl").read_text(encoding="utf-8") == '{"id": 1, "text": "ñ"}\n{"id": 2}\n'
    assert read_jsonl(tmp_path / "rows.jsonl") == [{"id": 1, "text": "ñ"}, {"id": 2}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "rows.jsonl"]


def test_an_error_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.jsonl"
    write_atomic(target, "old\n")

    def rows():
        yield {"id": 1}
        raise RuntimeError("crashed while producing rows")

    with pytest.raises(RuntimeError, match="crashed"):
        write_jsonl(target, rows())
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_a_file_size_limit_leaves_no_partial_file_and_no_temporary(tmp_path):
    """A real failing write (RLIMIT_FSIZE in a subprocess: the kernel refuses bytes past 1 KiB)."""
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        from speechsum.utils.io import write_atomic, write_jsonl
        write_atomic({str(tmp_path / "small.txt")!r}, "fits\\n")
        try:
            write_jsonl({str(tmp_path / "big.jsonl")!r}, ({{"i": i, "pad": "x" * 100}} for i in range(100)))
        except OSError as err:
            print("refused", err.errno)
            sys.exit(0)
        sys.exit("the oversized write did not fail")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.txt"]
    assert (tmp_path / "small.txt").read_text() == "fits\n"


def test_atomic_path_for_any_writer(tmp_path):
    with atomic_path(tmp_path / "m.json") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".m.json.") and tmp.suffix == ".tmp"
        tmp.write_text(json.dumps({"ok": True}))
        assert not (tmp_path / "m.json").exists()  # not visible before the end
    assert json.loads((tmp_path / "m.json").read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_write_dir_atomically_never_replaces_a_file(tmp_path):
    """It moved the file aside, put the folder in its place and left the file as ``.NAME.old-PID``."""
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    with pytest.raises(NotADirectoryError, match=f"^{target} is a file, not a folder: give a folder to write$"):
        write_dir_atomically(target, lambda d: (d / "w.txt").write_text("1"))
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_write_dir_atomically_replaces_or_keeps_the_first(tmp_path):
    target = tmp_path / "model"
    write_dir_atomically(target, lambda d: (d / "w.txt").write_text("1"))
    write_dir_atomically(target, lambda d: (d / "w.txt").write_text("2"))
    assert (target / "w.txt").read_text() == "2"
    write_dir_atomically(target, lambda d: (d / "w.txt").write_text("3"), replace=False)
    assert (target / "w.txt").read_text() == "2"  # a concurrent cache filler: the first complete copy wins

    def failing(folder):
        (folder / "w.txt").write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_dir_atomically(target, failing)
    assert (target / "w.txt").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_project_file_resolves_from_any_folder(tmp_path, monkeypatch):
    from speechsum.utils import io

    monkeypatch.chdir(tmp_path)
    assert io.project_file("configs/sft.yaml") == io.CHECKOUT_ROOT / "configs" / "sft.yaml"
    installed = tmp_path / "prefix" / "share" / "speechsum"
    (installed / "configs").mkdir(parents=True)
    (installed / "configs" / "only_installed.yaml").write_text("a: 1\n")
    monkeypatch.setattr(io, "INSTALLED_DATA", installed)
    assert io.project_file("configs/only_installed.yaml") == installed / "configs" / "only_installed.yaml"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sft.yaml").write_text("mine: 1\n")
    assert io.project_file("configs/sft.yaml") == Path("configs/sft.yaml")  # the user's own file wins
    assert io.project_file("configs/missing.yaml") == Path("configs/missing.yaml")


def test_remove_stale_temporaries_after_a_kill(tmp_path):
    from speechsum.utils.temp_owner import remove_stale_temporaries

    (tmp_path / "report.csv").write_text("whole\n")
    (tmp_path / ".report.csv.k3j2.tmp").write_text("half")
    (tmp_path / "stage" / ".model.tmp-x1").mkdir(parents=True)
    (tmp_path / "stage" / ".model.tmp-x1" / "w.bin").write_text("half")
    (tmp_path / "stage" / ".export.old-4242").mkdir()  # a kill between write_dir_atomically's two renames
    (tmp_path / "stage" / ".export.old-4242" / "w.bin").write_text("the replaced version")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".report.csv.k3j2.tmp", ".export.old-4242", ".model.tmp-x1"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["report.csv", "stage"]


def test_jsonl_lines_split_on_newline_only(tmp_path):
    """U+2028, U+2029, U+0085 inside JSON strings (``ensure_ascii=False``) are no line ends, as in
    load_manifest (``str.splitlines`` split there); a BOM is dropped; a non-UTF-8 line is named."""
    rows = [{"id": "a", "text": "one\u2028two\u2029three\x85four\x1cfive"}, {"id": "b"}]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r, ensure_ascii=False) + "\n\n" for r in rows).encode())
    assert read_jsonl(path) == rows
    assert [number for number, _ in jsonl_lines(path)] == [1, 3]
    path.write_bytes(path.read_bytes() + b'{"id": "\xff"}\n')
    with pytest.raises(ValueError, match=r"rows.jsonl:5: not valid UTF-8: byte\(s\) ff"):
        read_jsonl(path)


def test_lines_end_at_lf_crlf_or_a_lone_cr(tmp_path):
    """A classic-Mac (CR-only) JSONL file reads line by line, numbered as an editor shows it; CRLF
    stays one line end (JSON strings hold no raw CR, so splitting there cuts no row)."""
    path = tmp_path / "mac.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a"}\r{"id": "b"}\r\r{"id": "c"}\r\n{"id": "d"}\n{"id": "e"}\r')
    assert read_jsonl(path) == [{"id": k} for k in "abcde"]
    assert [number for number, _ in jsonl_lines(path)] == [1, 2, 4, 5, 6]


def test_atomic_writes_get_the_mode_of_a_plain_write(tmp_path):
    """Not mkstemp's 0600 / mkdtemp's 0700: 0666 / 0777 less the umask, or the overwritten file's mode."""
    import os
    import stat

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "new.json", "{}")
        with atomic_path(tmp_path / "any.npy") as tmp:
            tmp.write_bytes(b"x")
        write_dir_atomically(tmp_path / "model", lambda d: (d / "w.txt").write_text("1"))
        assert (mode(tmp_path / "new.json"), mode(tmp_path / "any.npy"), mode(tmp_path / "model")) == (0o644, 0o644, 0o755)
        os.chmod(tmp_path / "new.json", 0o664)
        os.chmod(tmp_path / "model", 0o750)
        write_jsonl(tmp_path / "new.json", [{"id": 1}])
        write_dir_atomically(tmp_path / "model", lambda d: (d / "w.txt").write_text("2"))
        assert (mode(tmp_path / "new.json"), mode(tmp_path / "model")) == (0o664, 0o750)
        os.umask(0o027)
        write_atomic(tmp_path / "private.txt", "x")
        assert mode(tmp_path / "private.txt") == 0o640
    finally:
        os.umask(old)


def test_json_line_escapes_only_what_the_encoding_cannot_hold():
    from speechsum.utils.io import json_line

    assert json_line({"a": "é"}) == '{"a": "é"}'
    assert json_line({"a": "\udcff é"}) == '{"a": "\\udcff \\u00e9"}'
    assert json_line({"a": "é"}, "ascii") == '{"a": "\\u00e9"}'
    assert json.loads(json_line({"a": "\udcff"})) == {"a": "\udcff"}


def test_a_fifo_target_is_written_into_not_replaced(tmp_path):
    """``--out /dev/null`` or ``/dev/stdout``: the rename replaced the device node with a regular file
    (as root, /dev/null itself); a FIFO stands in for a device here."""
    import os
    import stat

    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so that the writer's open returns
    try:
        write_jsonl(fifo, [{"a": 1}, {"b": "ü"}])
        assert os.read(reader, 1 << 16) == '{"a": 1}\n{"b": "ü"}\n'.encode()
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


@pytest.mark.parametrize(("line", "reason"), [
    ("[" * 100_000 + "]" * 100_000, "invalid JSON (nested deeper than Python's recursion limit)"),
    ('{"n": 1' + "0" * 5000 + "}", "invalid JSON (Exceeds the limit (4300 digits) for integer string conversion: "
     "value has 5001 digits; use sys.set_int_max_str_digits() to increase the limit)"),
])
def test_read_jsonl_names_file_and_line_of_any_unreadable_line(tmp_path, line, reason):
    """Before: a bare RecursionError / ValueError naming neither file nor line."""
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:3: {reason}"
