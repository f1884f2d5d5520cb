"""Files written whole or not at all: the one atomic-write helper every writer goes through.

A file is written to a unique temporary sibling, flushed and ``fsync``-ed, then renamed over the
target with ``os.replace`` (atomic on POSIX), and the folder is ``fsync``-ed so the rename itself
survives a crash. On any error (a full disk, a size limit, Ctrl-C) the temporary file is removed
and the target is untouched: no ``.tmp`` leftovers, no half-written results. A device or FIFO
(``/dev/null``) is written in place. Directories
(``write_dir_atomically``) work the same way with a temporary sibling folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from speechsum.utils.temp_owner import is_special_file, owner_tag, remove_dead_writers_leftovers
from speechsum.utils.text_files import (  # noqa: F401  (re-exported: readers import them from here)
    decode_utf8,
    jsonl_lines,
    raw_lines,
    read_jsonl,
    read_numbered_jsonl,
    text_lines_problem,
)
from speechsum.utils.write_errors import DISK_FULL

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"  # versioned LLM prompts (package data)
CHECKOUT_ROOT = Path(__file__).resolve().parents[2]  # the repository root when run from a checkout
INSTALLED_DATA = Path(sys.prefix) / "share" / "speechsum"  # configs/ as installed by the wheel (data_files)


def project_file(relative: str | Path) -> Path:
    """A project file named relative to the repository root (``configs/sft.yaml``): as given when it
    exists (relative to the working folder, or absolute), else in the checkout speechsum runs from,
    else among the wheel's installed data (``<prefix>/share/speechsum``). A path found nowhere is
    returned unchanged, so the caller's error names what the user wrote."""
    path = Path(relative)
    if path.exists() or path.is_absolute():
        return path
    for root in (CHECKOUT_ROOT, INSTALLED_DATA):
        if (root / path).exists():
            return root / path
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it (Linux: ``/proc/self/status``); elsewhere set
    and restored once (a race only with threads creating files at that instant)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _give_mode(tmp: Path, target: Path, full: int) -> None:
    """Give ``tmp`` (mkstemp's 0600 / mkdtemp's 0700) the mode it would have had if created plainly:
    ``target``'s own when it exists (an overwrite keeps it), else ``full & ~umask``."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = full & ~_umask()
    try:
        os.chmod(tmp, mode)
    except OSError as err:  # a file system without modes (vfat, some CIFS mounts): write as before
        log.debug("atomic write: cannot set mode %o on %s (%s)", mode, tmp, err)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; write the file there (any library: ``torch.save``,
    ``np.save``, ``soundfile.write``…). On a clean exit it is fsynced and renamed onto ``path``; on
    an error it is removed and ``path`` keeps its old content (or stays absent).

    Unique per writer (``mkstemp``), so concurrent writers of one target (DDP ranks) never share a
    temporary file; the last rename wins with a complete file. The file gets the mode a plain
    ``open(path, "w")`` gives: the old file's, or 0666 less the umask.

    A ``path`` that is (or links to) a device, FIFO or socket (``--out /dev/null``, ``/dev/stdout``)
    is yielded itself and written in place, as a shell redirection does: a rename would replace the
    node (run as root, ``/dev/null`` became a regular file holding the output).
    """
    path = Path(path)
    if is_special_file(path):
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}-", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        _give_mode(tmp, path, 0o666)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        if err.errno in DISK_FULL and err.filename is None:  # a write() names no file: name the output
            err.filename = str(path)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def linked_out(path: str | Path, option: str) -> Path:
    """Output ``path``, or what it points to when it is a symbolic link (``student -> exports/v3``): that is
    replaced and the link kept (before 2026-12-07 an atomic write replaced the link itself, leaving its target
    as it was); a link that cannot be followed (a loop) is a ``ValueError`` naming ``option``."""
    path = Path(path)
    if not path.is_symlink() or is_special_file(path):  # /dev/stdout: written in place (atomic_path)
        return path
    try:
        return Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:  # a link to what is not yet made: it is made there
        return Path(os.path.realpath(path))
    except OSError as err:
        raise ValueError(f"{option} {path}: a symbolic link that cannot be followed ({err.strerror}: a loop of "
                         "links?); give a path, or point the link at one") from None


def check_output_path(path: str | Path, option: str, folder: bool = False) -> None:
    """Refuse, before any work, an output ``path`` (given with ``option``) that no writer can use:
    one under a file (``NotADirectoryError``), a file where a folder goes (``folder=True``:
    ``NotADirectoryError``) or a folder where a file goes (``IsADirectoryError``); the message names
    the option and the file in the way. Missing folders are fine: writers create them; but the
    nearest folder that exists must take a new file (``PermissionError``: read-only, ``/proc``), or
    the work would be lost when its output is written."""
    path = Path(path)
    blocking = next((parent for parent in path.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise NotADirectoryError(f"{option} {path}: {blocking} is a file, not a folder")
    if folder and path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{option} {path} is a file: give a folder")
    if not folder and path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a folder: give a file path")
    if is_special_file(path):
        return
    nearest = path if folder and path.is_dir() else blocking
    if nearest is not None:
        _probe_folder(nearest, path, option)


def same_file(first: object, second: object) -> bool:
    """Whether the paths ``first`` and ``second`` name one file: the same path once links are
    resolved (a file not written yet too), or one existing file through a hard link."""
    if not isinstance(first, str | os.PathLike) or not isinstance(second, str | os.PathLike):
        return False
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # a missing file: reported where it is read
        return False


def check_not_an_input(path: str | Path, option: str, inputs: Iterable[tuple[str, str | Path | None]],
                       harm: str = "the output would replace that input") -> None:
    """Refuse an output ``path`` (given with ``option``) that is one of the command's ``inputs``
    (``(option, path)`` pairs; the same file through a link too, :func:`same_file`): the output
    would replace it, and the input would be lost once the work is done (``harm`` says how)."""
    for name, given in inputs:
        if given is not None and same_file(given, path):
            raise ValueError(f"{option} {path} is the {name} file: {harm}; give another {option} path")


def check_cache_path(path: str | Path, option: str, inputs: Iterable[tuple[str, str | Path | None]],
                     outputs: Iterable[tuple[str, str | Path | None]] = ()) -> None:
    """Refuse a resumable cache file (given with ``option``) that is one of the command's ``inputs``
    (a cache is appended to, and an unreadable last line cut off: a one-line manifest was emptied)
    or of its ``outputs`` (written whole at the end, over the cache)."""
    check_not_an_input(path, option, inputs, "the cache would be appended to that input (or cut it)")
    check_not_an_input(path, option, outputs, "that output, written at the end, would replace the cache")


def check_not_above(path: str | Path, option: str, inner: str | Path, inner_option: str) -> None:
    """Refuse an output file ``path`` (given with ``option``) that is ``inner`` (a cache the run
    makes first, given with ``inner_option``) or a folder above it: the cache's folder then stood
    where the output goes, and writing it failed at the end, after all the work."""
    if os.path.realpath(path) in (os.path.realpath(inner), *map(os.path.realpath, Path(inner).parents)):
        raise IsADirectoryError(f"{option} {path}: {inner_option} {inner} is made there first, so the output could "
                                f"not be written at the end; give {option} and {inner_option} different paths")


def check_input_file(path: str | Path, option: str) -> None:
    """Refuse an input ``path`` (given with ``option``) that is no file to read, naming the option:
    ``open``'s "[Errno 2] No such file or directory: 'x'" named none."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a folder: give a file")
    if not path.is_file():
        raise FileNotFoundError(f"{option} {path}: no such file")


def check_not_a_file(path: str | Path, option: str, holds: str) -> None:
    """Refuse an input folder (given with ``option``) that is a file, e.g. the manifest itself for
    the folder holding it: it was reported as "FILE/train.jsonl not found"."""
    path = Path(path)
    if path.is_file():
        hint = f" ({path.parent})" if path.name == holds else ""
        raise NotADirectoryError(f"{option} {path} is a file: give the folder that holds {holds}{hint}")


def check_can_write(path: str | Path, option: str) -> None:
    """Refuse, before any work, a file ``path`` (given with ``option``) in an existing folder where
    no file can be created (read-only, ``/proc``): :func:`atomic_path` would fail only when the work
    is done, losing it. A device or FIFO is written in place and not probed."""
    path = Path(path)
    if not is_special_file(path):
        _probe_folder(path.parent, path, option)


def _probe_folder(folder: Path, path: Path, option: str) -> None:
    """``PermissionError`` naming ``option`` and ``path`` when no file can be created in ``folder``."""
    try:
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise PermissionError(f"{option} {path}: cannot create a file in {folder} ({err.strerror or err}); give a "
                              "path in a folder you can write") from None
    os.close(handle)
    os.unlink(name)


def check_replaceable_folder(path: str | Path, option: str, own_file: str, writer: str) -> None:
    """Refuse, before any work, an output folder that a command replaces whole when it is a file,
    or a non-empty folder without ``own_file`` (not an earlier output of ``writer``): replacing it
    would delete whatever the user keeps there (``--out ~``, ``--out notes.txt``)."""
    path = Path(path)
    check_output_path(path, option, folder=True)
    if path.is_dir() and any(path.iterdir()) and not (path / own_file).is_file():
        raise ValueError(f"{option} {path} is a folder that holds other files (no {own_file}: not an earlier "
                         f"{writer}, which would be replaced): give a new or empty folder")


def file_sha256(path: str | Path) -> str | None:
    """sha256 (hex) of a file's bytes; None when it cannot be read."""
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError:
        return None


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` atomically (see the module docstring); what a killed
    earlier writer of ``path`` left beside it goes first (:func:`remove_dead_writers_leftovers`)."""
    remove_dead_writers_leftovers(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)


def json_line(row: dict, encoding: str | None = "utf-8") -> str:
    """``row`` as one line of JSON, not ASCII-escaped when ``encoding`` can encode it; else (a lone
    surrogate from a file name that is not UTF-8, or a narrow terminal encoding) ASCII-escaped
    (``\\udcff``): valid JSON that reads back as the same string."""
    line = json.dumps(row, ensure_ascii=False)
    try:
        line.encode(encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return json.dumps(row, ensure_ascii=True)
    return line


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """One JSON object per line (UTF-8, :func:`json_line`), streamed, written atomically (as :func:`write_atomic`)."""
    remove_dead_writers_leftovers(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        for row in rows:
            handle.write(json_line(row).encode("utf-8") + b"\n")


def finite_json_number(value: int | float) -> bool:
    """Whether a number parsed from JSON is finite; an integer too large for a float is not (JSON
    integers are unbounded, and ``math.isfinite`` raises ``OverflowError`` on one)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def yaml_error_text(path: str | Path, err: Exception) -> str:
    """``PATH:LINE:COLUMN: not valid YAML: PROBLEM`` for a PyYAML error (it names a ``"<unicode string>"``)."""
    mark = getattr(err, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = str(getattr(err, "problem", None) or err)
    tabs = "; YAML indents with spaces, never tabs: replace the tabs" if "'\\t'" in problem or _tab_at(path, mark) else ""
    return f"{where}: not valid YAML: {problem}{tabs}"


def _tab_at(path: str | Path, mark: Any) -> bool:
    """Whether the file's line at ``mark`` is indented with a tab (LibYAML, as the Lightning CLI's loader
    uses, says "found character that cannot start any token" without naming the tab PyYAML names)."""
    if mark is None:
        return False
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    line = lines[mark.line] if mark.line < len(lines) else ""
    return "\t" in line[: len(line) - len(line.lstrip())]


def not_utf8_text(path: str | Path, err: UnicodeDecodeError) -> str:
    """``PATH: not UTF-8 text (byte b'\\xff' at offset N); save the YAML as UTF-8``."""
    return (f"{path}: not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} at offset {err.start}); "
            "save the YAML as UTF-8")


def read_yaml(path: str | Path) -> Any:
    """What a UTF-8 YAML file holds (``yaml.safe_load``); not YAML or not UTF-8: a ``ValueError``
    naming the file (and the line and column); a missing file or a folder: the ``OSError`` naming it."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(not_utf8_text(path, err)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(yaml_error_text(path, err)) from None


def write_dir_atomically(target: str | Path, write: Callable[[Path], None], replace: bool = True) -> None:
    """Run ``write(tmp_dir)`` on a fresh temporary sibling of ``target``, then rename it to ``target``,
    so ``target`` is never seen half-written. On an error the temporary folder is removed and
    ``target`` is untouched; what a killed earlier writer of ``target`` left beside it is removed
    first (:func:`~speechsum.utils.temp_owner.remove_dead_writers_leftovers`). The folder gets
    ``target``'s mode, or 0777 less the umask.

    ``replace=True``: an existing ``target`` is moved aside and deleted. ``replace=False``: the
    first complete writer wins (a cache filled by concurrent processes); a later one discards its copy.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():  # a file is never replaced by a folder
        raise NotADirectoryError(f"{target} is a file, not a folder: give a folder to write")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers_leftovers(target)  # of a run of this command killed while it wrote target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{owner_tag()}-", dir=target.parent))
    old = None
    try:
        write(tmp)
        if target.exists() and not replace:
            return
        _give_mode(tmp, target, 0o777)  # after the early return: a read-only mode would keep rmtree out
        if target.exists():
            old = target.with_name(f".{target.name}.old-{owner_tag()}")
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            if old is not None:  # put the previous version back
                os.replace(old, target)
                old = None
            elif not target.exists():  # not a concurrent winner: a real failure
                raise
            if replace:
                raise
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

