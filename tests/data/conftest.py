"""Fixtures of the data-module tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Feature extraction is many tiny torch ops: one thread is far faster, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def processor(tiny_composed):
    return tiny_composed.processor
