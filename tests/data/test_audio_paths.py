"""load_audio, as `speechsum summarize` and a dataset's reads use it, on paths that are no audio
file: a FIFO (opening one waited for a writer forever) and URLs (said to be "no such file")."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import audio_seconds, load_audio
from speechsum.serving.summarize import input_problem


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path):
    """load_audio opened it with libsndfile, which blocks until something writes to it: a summarize or a dataset
    read of a path replaced by a pipe since its manifest loaded hung."""
    fifo = tmp_path / "call.wav"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            load_audio(str(fifo), 16_000)
        except BaseException as err:  # noqa: BLE001 (handed to the test thread)
            outcome.append(err)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the reader so the test process can end
        with open(fifo, "wb"):
            pass
        pytest.fail("load_audio waited on the FIFO")
    assert isinstance(outcome[0], ValueError)
    assert str(outcome[0]) == f"{fifo}: not a regular file (a FIFO, socket or device); save the audio to a file first"


@pytest.mark.parametrize(("url", "problem"), [
    ("http://127.0.0.1:9/call.wav", "a URL; speechsum reads local files: download it and give its path"),
    ("file:///data/call%201.wav", "a file:// URL; speechsum reads paths, not URLs: give the path it names, "
                                  "/data/call 1.wav"),
    ("file:/data/call.wav", "a file:// URL; speechsum reads paths, not URLs: give the path it names, /data/call.wav"),
])
def test_a_url_is_named_as_one_not_as_a_missing_file(url: str, problem: str):
    """Both were "no such file" (offline: nothing is fetched)."""
    with pytest.raises(ValueError) as info:
        load_audio(url, 16_000)
    assert str(info.value) == f"{url}: {problem}"
    assert input_problem(url) == problem


def test_an_empty_or_unreadable_file_says_what_to_do(tmp_path: Path, monkeypatch):
    """Before: 'an empty file (0 bytes)' and 'permission denied', without a word on what to do."""
    from speechsum.data import audio_paths

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError) as info:
        load_audio(str(empty), 16_000)
    assert str(info.value) == (f"{empty}: an empty file (0 bytes: a download or copy that failed?): replace it with the "
                               "recording, or drop it")
    monkeypatch.setattr(audio_paths.os, "access", lambda path, mode: False)  # as a user without read permission
    assert audio_paths.path_problem(empty) == "permission denied: make it readable (chmod a+r), or drop it"


@pytest.mark.parametrize("suffix", ["/", "/."])
def test_a_files_name_with_a_trailing_slash_says_to_drop_it(tmp_path: Path, suffix: str):
    """pathlib drops a trailing '/' ('clip.wav/' is 'clip.wav', a file), open() refuses it (ENOTDIR): the error
    was libsndfile's bare "System error" with the advice to convert the file to a format it reads."""
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(1_600, np.float32), 16_000)
    expected = f"{clip}{suffix}: a path ending in '/' names a folder, but {clip} is a file: write it without the '/'"
    for read in (lambda: load_audio(f"{clip}{suffix}", 16_000), lambda: audio_seconds(f"{clip}{suffix}")):
        with pytest.raises(ValueError) as info:
            read()
        assert str(info.value) == expected
