"""A project config named as the README names it (``configs/kd.yaml``) from any folder: the file in the
working folder when there is one, else the project's own (:func:`speechsum.utils.io.project_file`), said on
stderr. ``speechsum fit --config`` and the tools' ``--config`` (pairs, export, summarize, serve) read it alike."""

from __future__ import annotations

import sys
from pathlib import Path

from speechsum.utils.arguments import user_path
from speechsum.utils.io import project_file


def project_config(text: str, option: str = "--config") -> str:
    """argparse ``type=`` of a ``--config`` option: ``text`` (``~`` expanded, :func:`user_path`), or the project's
    file of that name when the working folder has none (said on stderr); unchanged when neither exists, so the
    caller's error names what the user wrote. ``option``: what named it, in the note."""
    path = user_path(text)
    found = project_file(path)
    if found == Path(path) or not found.is_file():
        return path
    print(f"speechsum: {option} {path}: not in this folder; using the project's {found}", file=sys.stderr)
    return str(found)
