"""``speechsum export --out LINK``: a symbolic link to an export folder is written where it points, the link kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from speechsum.serving.export import EXPORT_FILE, main
from tests.serving.export_fixtures import trained_student


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
                                 "levels of symbolic links: a loop of links?); give a folder, or point the link at one")
    assert loop.is_symlink() and sorted(path.name for path in tmp_path.iterdir()) == ["exports", "loop", "run", "student"]
