"""Fixtures of the ``speechsum serve`` tests: the tiny text LM on disk and its backend."""

from __future__ import annotations

import pytest

from speechsum.serving.hf_backend import HFBackend
from tests.serving.tiny_lm import MODEL, save_tiny_lm


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def backend(model_dir):
    return HFBackend(model_dir, served_model_name=MODEL)
