"""A KD teacher's settings that cannot work are refused when it is built, naming the setting and
what to write instead (they failed at the first training step, or silently changed the prompt)."""

from __future__ import annotations

import pytest
import torch

from speechsum.models.text_llm import TextLLM
from speechsum.stages.kd.teachers import HFTeacher, OpenAICompatibleTeacher
from tests.stages.test_teachers import TEACHER_LLM


def test_a_teachers_blank_end_of_turn_is_refused_not_taken_for_its_eos_token():
    """``end_of_turn: ""`` counted as the teacher's own (not the student's, the default) and was then
    replaced by the teacher tokenizer's eos token, without a word."""
    from speechsum.utils.arguments import ConfigFieldError

    with pytest.raises(ConfigFieldError, match=r"^end_of_turn: '' is no token: leave it out \(null\) for the default "
                                               r"'<\|endoftext\|>', or give one token of the tokenizer's vocabulary$"):
        HFTeacher(TEACHER_LLM, end_of_turn="")


@pytest.mark.parametrize(("settings", "message"), [
    # each was taken and failed at the first training step (a timeout of 0: retried until "unreachable")
    ({"top_k": 0}, "OpenAICompatibleTeacher top_k must be at least 1, got 0"),
    ({"max_workers": 0}, "OpenAICompatibleTeacher max_workers must be at least 1, got 0"),
    ({"attempts": 0}, "OpenAICompatibleTeacher attempts must be at least 1, got 0"),
    ({"timeout": 0}, "OpenAICompatibleTeacher timeout must be a number above 0 (seconds per request), got 0"),
    ({"summary_temperature": -0.5}, "OpenAICompatibleTeacher summary_temperature must be a number at least 0 (0: "
                                    "greedy), got -0.5"),
    ({"model": " "}, "OpenAICompatibleTeacher model must name the model the endpoint serves, got ' '"),
    # copied from a run folder's saved config: the server's 401 said to export a valid key
    ({"base_url": "http://***@127.0.0.1:9/v1"}, "OpenAICompatibleTeacher base_url 'http://***@127.0.0.1:9/v1' holds "
     "credentials masked as ***@, as a run folder's saved configs write them: write the URL with its user:password@ "
     "as your own config has it"),
])
def test_a_remote_teachers_setting_that_cannot_work_is_refused_when_built(settings, message):
    from speechsum.utils.arguments import ConfigError

    with pytest.raises(ConfigError) as info:
        OpenAICompatibleTeacher(**{"model": "m", "base_url": "http://127.0.0.1:9/v1", **settings})
    assert str(info.value) == message


def test_a_teacher_device_this_machine_lacks_is_refused_before_the_model_loads(monkeypatch):
    """'Torch not compiled with CUDA enabled' (an AssertionError traceback) once the weights had loaded."""
    from speechsum.utils.arguments import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        HFTeacher(TEACHER_LLM, device="cuda:1")
    assert str(info.value) == (f"HFTeacher device cuda:1: this machine has no CUDA device that torch {torch.__version__} "
                               "can use; set it to cpu")
    with pytest.raises(ConfigError, match=r"^HFTeacher device 'gpu' is not a torch device \(.*\); use cpu, cuda or "
                                          r"cuda:N$"):
        HFTeacher(TEACHER_LLM, device="gpu")


def test_a_teachers_system_prompt_holding_a_special_token_is_refused():
    """It closed the teacher's system turn early, without a word."""
    from speechsum.utils.arguments import ConfigFieldError

    with pytest.raises(ConfigFieldError, match=r"^system_prompt: holds '<\|im_end\|>' \(at character 4\), a special "):
        HFTeacher(TEACHER_LLM, system_prompt="Hi. <|im_end|>")


def test_a_teachers_dtype_is_a_floating_point_torch_dtype_or_auto(tmp_path):
    """``bf16`` was an AttributeError traceback (``getattr(torch, 'bf16')``), and so was ``auto``, which
    the student's backbone takes (the checkpoint's own)."""
    from speechsum.utils.arguments import ConfigFieldError

    teacher_dir = tmp_path / "tiny-teacher"
    TextLLM(llm=TEACHER_LLM, end_of_turn="<|im_end|>", init_seed=3).save_pretrained(teacher_dir)
    with pytest.raises(ConfigFieldError) as info:
        HFTeacher(str(teacher_dir), dtype="bf16")
    assert str(info.value) == ("dtype: 'bf16' is no floating-point torch dtype: write bfloat16, float16 or float32, or "
                               "null for the checkpoint's own")
    assert next(HFTeacher(str(teacher_dir), dtype="auto").lm.parameters()).dtype == torch.float32
    assert next(HFTeacher(str(teacher_dir), dtype="bfloat16").lm.parameters()).dtype == torch.bfloat16
