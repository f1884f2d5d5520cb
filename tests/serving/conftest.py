"""Fixtures of the serving tests: the tiny text LM on disk and its backend; a tiny exported composed student;
a loopback server of a scripted backend answering "ok" (``served``: the backend and its base URL) and one of the
student (``speech_url``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from speechsum.serving.hf_backend import HFBackend
from tests.servers import ScriptedChatBackend, serve_in_thread
from tests.serving.export_fixtures import trained_student
from tests.serving.tiny_lm import MODEL, save_tiny_lm


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def backend(model_dir):
    return HFBackend(model_dir, served_model_name=MODEL)


@pytest.fixture(scope="module")
def composed_export(tmp_path_factory) -> Path:
    """The tiny composed student (trainable weights moved off their init), exported."""
    from speechsum.serving.export import export_checkpoint

    folder = tmp_path_factory.mktemp("composed")
    _, ckpt = trained_student("composed_tiny", folder / "run")
    return export_checkpoint(ckpt, folder / "export")


@pytest.fixture(scope="module")
def student_backend(composed_export):
    """The tiny composed student's backend (served as "student", clips up to 5 s), for a test's own servers."""
    from speechsum.serving.export import load_exported
    from speechsum.serving.speech_backend import SpeechBackend

    return SpeechBackend(load_exported(composed_export), "student", max_audio_seconds=5.0)


@pytest.fixture(scope="module")
def speech_url(composed_export) -> Iterator[str]:
    """A loopback server of the tiny composed student (served as "student", clips up to 5 s)."""
    from speechsum.serving.export import load_exported
    from speechsum.serving.speech_backend import SpeechBackend

    with serve_in_thread(SpeechBackend(load_exported(composed_export), "student", max_audio_seconds=5.0)) as url:
        yield url


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ScriptedChatBackend, str]]:
    backend = ScriptedChatBackend(lambda messages: "ok")
    with serve_in_thread(backend) as url:
        yield backend, url
