"""eval_mode: each submodule gets its own mode back (generate and DPO's reference pass used it to leave a
student's frozen parts, loaded in eval mode, in train mode)."""

from __future__ import annotations

import torch
from torch import nn

from speechsum.data.batch import SpeechCollator
from speechsum.models.modes import eval_mode
from tests.models.test_feature_cache import build, items


def test_every_submodule_gets_its_own_mode_back_also_after_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)))
    model.train()
    model[2].eval()  # a frozen part, loaded in eval mode
    before = [m.training for m in model.modules()]
    assert before == [True, True, True, False, False, False]
    try:
        with eval_mode(model):
            assert not any(m.training for m in model.modules())
            raise RuntimeError("inside")
    except RuntimeError:
        pass
    assert [m.training for m in model.modules()] == before


def test_generate_leaves_a_students_frozen_llm_in_eval_mode_and_the_rest_training():
    model = build()
    model.train()
    model.llm.eval()  # as from_pretrained loads a frozen base LLM; the projector trains
    before = {name: m.training for name, m in model.named_modules()}
    torch.manual_seed(0)
    model.generate(SpeechCollator(model.processor)(items()), max_new_tokens=3)
    assert {name: m.training for name, m in model.named_modules()} == before
    assert not model.llm.training and model.projector.training
