"""``check_device``: a bad --device is named before any model is loaded."""

from __future__ import annotations

import pytest

from speechsum.utils.devices import check_device


def test_cpu_passes_and_bad_devices_are_named():
    assert check_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"--device 'banana' is not a torch device .*use cpu, cuda or cuda:N"):
        check_device("banana")
    with pytest.raises(ValueError, match=r"--device cuda:999: "):  # no CUDA here, or fewer than 1000 GPUs
        check_device("cuda:999")
    with pytest.raises(ValueError, match="--device meta: torch has no meta device here"):
        check_device("meta")
