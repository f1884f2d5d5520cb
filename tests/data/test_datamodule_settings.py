"""The data module's settings from the Python API (the CLI's parser checks their types; Python does not):
a choice outside its literals or a number that is no number is a ConfigError naming the setting."""

from __future__ import annotations

import numpy as np
import pytest

from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.utils.arguments import ConfigError


@pytest.mark.parametrize(("setting", "value", "message"), [
    # compared with "error" only, these were silently the other choice: skipping bad lines, truncating
    ("on_bad_example", "Error", "data.on_bad_example must be one of 'error', 'skip', got 'Error'"),
    ("too_long_audio", "drop", "data.too_long_audio must be one of 'error', 'truncate', got 'drop'"),
    # a TypeError from inside the bounds check, and True taken for 1 s
    ("max_audio_seconds", "30", "data.max_audio_seconds must be a number above 0 (or null: the backbone's limit), got '30'"),
    ("max_audio_seconds", True, "data.max_audio_seconds must be a number above 0 (or null: the backbone's limit), got True"),
    ("max_batch_seconds", "120", "data.max_batch_seconds must be a number above 0, got '120'"),
])
def test_a_bad_setting_is_a_config_error_naming_it(setting: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SpeechSumDataModule(train_manifest="train.jsonl", **{setting: value})
    assert str(info.value) == message


def test_numpy_numbers_and_the_literals_are_accepted() -> None:
    data = SpeechSumDataModule(train_manifest="train.jsonl", max_audio_seconds=np.float32(2.5),
                               max_batch_seconds=np.int64(60), on_bad_example="skip", too_long_audio="error")
    assert (data.max_audio_seconds, data.on_bad_example, data.too_long_audio) == (2.5, "skip", "error")
