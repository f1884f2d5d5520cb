"""Every name in a ``policy.lora_target_modules`` list must name a module of the LLM. Before, peft
refused the list only when no name matched: a misspelt one among others trained fewer adapters
without a word, and a name of the encoder's was dropped the same way."""

from __future__ import annotations

import pytest

from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.policy import TrainingPolicy
from speechsum.utils.arguments import ConfigError
from tests.conftest import tiny_backbone_args

LINEAR = "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"


def build(targets: list[str]) -> ComposedSpeechLLM:
    args = tiny_backbone_args()
    args["policy"] = TrainingPolicy(**{**args["policy"], "lora_target_modules": targets})
    return ComposedSpeechLLM(**args)


@pytest.mark.parametrize(("targets", "message"), [
    (["q_proj", "v_prj"], f"policy.lora_target_modules: 'v_prj' match(es) no module of the LLM; its linear layers are "
                          f"{LINEAR}: give some of those, or 'all-linear'"),
    (["q_proj", "fc1"], "policy.lora_target_modules: 'fc1' match(es) no module of the LLM (fc1 only in the audio "
                        "encoder: LoRA goes on the LLM; policy.train_encoder trains the encoder); its linear layers "
                        f"are {LINEAR}: give some of those, or 'all-linear'"),
])
def test_a_lora_target_that_matches_no_llm_module_is_refused_naming_it(targets, message):
    with pytest.raises(ConfigError) as info:
        build(targets)
    assert str(info.value) == message


def test_targets_that_all_match_get_their_adapters():
    model = build(["q_proj", "layers.1.self_attn.v_proj"])  # a dotted path ending is peft's match too
    adapted = sorted({name.split(".lora_")[0] for name, _ in model.trainable_parameters() if "lora_" in name})
    assert adapted == ["llm.model.layers.0.self_attn.q_proj", "llm.model.layers.1.self_attn.q_proj",
                       "llm.model.layers.1.self_attn.v_proj"]
