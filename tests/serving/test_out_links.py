"""``--out LINK`` of ``speechsum export`` and ``summarize``: a symbolic link is written where it points, the link
kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from speechsum.serving import summarize
from speechsum.serving.export import EXPORT_FILE, main
from speechsum.utils.io import read_jsonl
from tests.serving.export_fixtures import trained_student, write_wavs


def test_an_out_that_is_a_symbolic_link_is_written_where_it_points(tmp_path: Path) -> None:
    """Before: the link was replaced by a new folder, the export it pointed to left as it was, a hidden
    ``.student.old-…`` link left beside it; a loop of links was replaced by a folder."""
    _, ckpt = trained_student("text_llm", tmp_path / "run")
    target = tmp_path / "exports" / "v1"
    main([str(ckpt), "--out", str(target)])
    (target / "note.txt").write_text("of the earlier export")
    link = tmp_path / "student"
    link.symlink_to(Path("exports") / "v1")
    main([str(ckpt), "--out", str(link)])
    assert link.is_symlink() and os.readlink(link) == "exports/v1"
    assert (target / EXPORT_FILE).is_file() and not (target / "note.txt").exists()  # the folder it points to, anew
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exports", "run", "student"]
    assert sorted(path.name for path in (tmp_path / "exports").iterdir()) == ["v1"]
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    with pytest.raises(SystemExit) as raised:
        main([str(ckpt), "--out", str(loop)])
    assert str(raised.value) == (f"speechsum export: --out {loop}: a symbolic link that cannot be followed (Too many "
                                 "levels of symbolic links: a loop of links?); give a path, or point the link at one")
    assert loop.is_symlink() and sorted(path.name for path in tmp_path.iterdir()) == ["exports", "loop", "run", "student"]


def test_a_summarize_out_that_is_a_symbolic_link_gets_the_rows_where_it_points(composed_export: Path,
                                                                                tmp_path: Path) -> None:
    """Before: the link was replaced by a file of rows, the file it pointed to left as it was."""
    clip = write_wavs(tmp_path / "audio")[0]
    rows = tmp_path / "runs" / "rows.jsonl"
    rows.parent.mkdir()
    rows.write_text("old\n")
    link = tmp_path / "latest.jsonl"
    link.symlink_to(Path("runs") / "rows.jsonl")
    summarize.main([str(clip), "--model", str(composed_export), "--out", str(link), "--max-new-tokens", "2",
                    "--no-progress"])
    assert link.is_symlink() and os.readlink(link) == "runs/rows.jsonl"
    assert [row["audio"] for row in read_jsonl(rows)] == [str(clip)]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["audio", "latest.jsonl", "runs"]
