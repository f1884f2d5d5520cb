"""A model folder whose config.json and weights differ in layers or in weights is refused by serve and summarize,
naming the folder and what differs (before 2026-12-07 transformers loaded it, logging the layers it dropped or left
random); a vision-language model's text part, whose folder also holds the vision tower, still loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from speechsum.serving import cli, summarize
from tests.serving.test_serve_model_folder import _never_serve, _refused  # noqa: F401  (an autouse fixture)

DIFFERENT = ("config.json and the weights are of different models (an edited config.json, another model's files?); "
             "copy the folder again or give the config.json saved with these weights")


def _edited(source: Path, folder: Path, layers: int | None = None, weights: dict | None = None) -> Path:
    """A copy of ``source`` with its config.json's num_hidden_layers set to ``layers``, ``weights`` added."""
    shutil.copytree(source, folder)
    if layers is not None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}))
    if weights:
        state = load_file(folder / "model.safetensors")
        save_file({**state, **weights}, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("layers, weights, problem", [
    (1, None, "its config.json gives 1 layer (num_hidden_layers) but its weights hold 2: model.layers.1 would be left "
              "out"),
    (4, None, "its config.json gives 4 layers (num_hidden_layers) but its weights hold 2: model.layers.2-3 would be "
              "random"),
    (None, {"model.layers.0.self_attn.q_proj.bias": torch.zeros(32), "model.extra.weight": torch.zeros(2)},
     "2 weights in the folder have no place in LlamaForCausalLM as its config.json builds it (model.extra.weight, "
     "model.layers.0.self_attn.q_proj.bias): loaded, they would be dropped"),
])
def test_weights_that_config_json_does_not_build_are_refused(model_dir, tmp_path, layers, weights, problem):
    """Before: served with layer 1 dropped, layers 2-3 random, or the bias and the extra weight dropped."""
    folder = _edited(model_dir, tmp_path / "edited", layers, weights)
    assert _refused(folder) == f"speechsum serve: --model {folder}: {problem}. {DIFFERENT}"


def test_a_composed_export_whose_llm_config_has_fewer_layers_is_refused(composed_export, tmp_path):
    """Before: summarized by an LM without its last layer (the composed student's llm/ loads with load_causal_lm)."""
    export = tmp_path / "export"
    shutil.copytree(composed_export, export)
    config = json.loads((export / "llm" / "config.json").read_text())
    assert config["num_hidden_layers"] == 2
    (export / "llm" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    with pytest.raises(SystemExit) as raised:
        summarize.main([str(tmp_path / "a.wav"), "--model", str(export)])
    assert str(raised.value) == (
        f"speechsum summarize: speechsum.models.composed.ComposedSpeechLLM: {export / 'llm'}: its config.json gives 1 "
        f"layer (num_hidden_layers) but its weights hold 2: model.layers.1 would be left out. {DIFFERENT}")


def test_the_text_part_of_a_vision_language_model_still_loads(model_dir, tmp_path):
    """Its folder holds the vision tower too, which AutoModelForCausalLM leaves out by design (Qwen3.5)."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    folder = tmp_path / "vlm"
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    text = dict(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, layer_types=["full_attention"] * 2, max_position_embeddings=96)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32)
    Qwen3_5ForConditionalGeneration(Qwen3_5Config(text_config=text, vision_config=vision)).save_pretrained(folder)
    assert any(key.startswith("model.visual.") for key in load_file(folder / "model.safetensors"))
    with pytest.raises(AssertionError, match="vlm was loaded"):
        cli.main(["--model", str(folder), "--port", "0"])
