"""Fixtures of the serving tests: the tiny text LM on disk and its backend; a tiny exported composed student."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechsum.serving.hf_backend import HFBackend
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
