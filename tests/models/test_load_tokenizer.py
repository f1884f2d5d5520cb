"""A model folder without its tokenizer is refused, naming the folder: transformers 5 builds an
empty one-id GPT-2 tokenizer for it without a word, and every prompt then encodes to no tokens."""

from __future__ import annotations

import pytest

from speechsum.cli import main
from speechsum.models.base import TOKENIZER_FILES, load_tokenizer
from speechsum.models.text_llm import TextLLM
from speechsum.serving.hf_backend import HFBackend
from speechsum.utils.arguments import ConfigError
from tests.serving.tiny_lm import save_tiny_lm


@pytest.fixture
def no_tokenizer(tmp_path):
    folder = save_tiny_lm(tmp_path / "lm")
    for name in TOKENIZER_FILES:
        (folder / name).unlink(missing_ok=True)
    return folder


def test_the_saved_tokenizer_loads(tmp_path):
    tokenizer = load_tokenizer(save_tiny_lm(tmp_path / "lm"))
    assert len(tokenizer) > 1 and tokenizer("hello world")["input_ids"]


@pytest.mark.parametrize("load", [load_tokenizer, HFBackend, lambda folder: TextLLM(llm=str(folder))],
                         ids=["load_tokenizer", "serve backend", "text LM backbone"])
def test_a_model_folder_without_its_tokenizer_is_refused_naming_it(no_tokenizer, load):
    with pytest.raises(ConfigError, match=f"{no_tokenizer}: no tokenizer files in this folder"):
        load(no_tokenizer)


def test_speechsum_serve_says_it_in_one_line(no_tokenizer):
    with pytest.raises(SystemExit) as stop:  # its message printed, exit code 1, as for its other --model errors
        main(["serve", "--model", str(no_tokenizer), "--port", "0"])
    assert str(stop.value.code).startswith(f"speechsum serve: {no_tokenizer}: no tokenizer files")
