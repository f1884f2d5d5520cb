"""A random-init Qwen2-Audio or Phi-4-MM config dict that gives a token id (the audio placeholder's,
pad, bos, eos, the image placeholder's) other than the built-in tokenizer's is refused naming the
field. Before, the tokenizer's id replaced it without a word."""

from __future__ import annotations

import pytest
import yaml

from speechsum.utils.arguments import ConfigFieldError
from tests.models.test_native_backbones import CONFIGS, build_backbone

FIXED = "but the model's built-in tokenizer sets it to {} (a random-init model takes its token ids from its " \
        "tokenizer): remove the field"


def spec(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["model"]["init_args"]["model"]["init_args"]["model"]


@pytest.mark.parametrize(("name", "change", "message"), [
    ("qwen2_audio_tiny", {"audio_token_id": 5}, "model.audio_token_id: 5, " + FIXED.format(260)),
    ("qwen2_audio_tiny", {"audio_token_index": 7}, "model.audio_token_index: 7, " + FIXED.format(260)),  # its alias
    ("phi4mm_tiny", {"pad_token_id": 3}, "model.pad_token_id: 3, " + FIXED.format(257)),
    ("phi4mm_tiny", {"audio_config": {"audio_token_id": 5}}, "model.audio_config.audio_token_id: 5, " + FIXED.format(260)),
    ("phi4mm_tiny", {"vision_config": {"image_token_id": 3}}, "model.vision_config.image_token_id: 3, " + FIXED.format(261)),
])
def test_a_token_id_other_than_the_tokenizers_is_refused_naming_the_field(name, change, message):
    given = spec(name)
    for key, value in change.items():
        given[key] = {**given.get(key, {}), **value} if isinstance(value, dict) else value
    with pytest.raises(ConfigFieldError) as info:
        build_backbone(name, model=given)
    assert str(info.value) == message


def test_the_tokenizers_own_ids_given_are_taken():
    assert build_backbone("qwen2_audio_tiny", model={**spec("qwen2_audio_tiny"), "audio_token_id": 260}).audio_token_id == 260
