"""A model folder with a file cut short (an interrupted export or copy, a full disk) is refused naming
that file: transformers' errors named none (``JSONDecodeError … line 176``, ``SafetensorError:
incomplete metadata``), and a broken ``generation_config.json`` loaded with default settings."""

from __future__ import annotations

import json
import shutil

import pytest

from speechsum.cli import main
from speechsum.models.text_llm import TextLLM
from speechsum.serving.hf_backend import HFBackend
from tests.eval_fixtures import save_tiny_text_lm, write_eval_set

CUT = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "model.safetensors")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_tiny_text_lm(tmp_path_factory.mktemp("lm") / "lm", seed=2)


def cut_short(saved, folder, name: str):
    shutil.copytree(saved, folder)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    return folder / name


@pytest.mark.parametrize("name", CUT)
@pytest.mark.parametrize("load", [lambda folder: TextLLM(llm=str(folder)), HFBackend], ids=["text LM", "serve backend"])
def test_a_file_cut_short_is_named(saved, tmp_path, name, load):
    broken = cut_short(saved, tmp_path / "lm", name)
    with pytest.raises(ValueError, match="cut short or corrupted") as info:
        load(tmp_path / "lm")
    assert str(info.value).startswith(f"{broken}: ")


def test_evaluate_ends_with_one_line_naming_the_file(saved, tmp_path, capsys):
    manifests = write_eval_set(tmp_path / "data")
    broken = cut_short(saved, tmp_path / "lm", "model.safetensors")
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--manifest", str(manifests["test"]), "--out", str(tmp_path / "out"), "--metrics", "rouge",
              "--accelerator", "cpu", "--system", f"text:backbone:{tmp_path / 'lm'}"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err, err
    assert (f"speechsum evaluate: error: {broken}: not a whole safetensors file (Error while deserializing header: "
            "incomplete metadata, file not fully covered): it was cut short or corrupted") in err


@pytest.mark.parametrize("load", [lambda folder: TextLLM(llm=str(folder)), HFBackend], ids=["text LM", "serve backend"])
def test_weights_of_another_shape_than_config_json_gives_are_named(saved, tmp_path, load):
    """Before: "RuntimeError: You set `ignore_mismatched_sizes` to `False`, thus raising an error. For details look at
    the above report!", naming neither the folder nor a weight (a config.json of another size of the model)."""
    shutil.copytree(saved, tmp_path / "lm")
    config = json.loads((tmp_path / "lm" / "config.json").read_text())
    (tmp_path / "lm" / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] + 8}))
    with pytest.raises(ValueError) as info:
        load(tmp_path / "lm")
    assert str(info.value).startswith(f"{tmp_path / 'lm'}: 2 weights in the folder do not have the shape its "
                                      "config.json gives (lm_head.weight: ")


@pytest.mark.parametrize("load", [lambda folder: TextLLM(llm=str(folder)), HFBackend], ids=["text LM", "serve backend"])
def test_a_config_whose_vocabulary_cannot_hold_its_pad_id_is_named(saved, tmp_path, load):
    """An edited config.json (vocab_size 10, pad id 257) ended in torch's bare AssertionError
    "Padding_idx must be within num_embeddings", naming neither the folder nor the setting."""
    folder = tmp_path / "lm"
    shutil.copytree(saved, folder)
    config = json.loads((folder / "config.json").read_text())
    pad = config["pad_token_id"]
    config["vocab_size"] = 10
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as info:
        load(folder)
    assert str(info.value) == (f"{folder}: its pad_token_id {pad} is outside the 10 ids its vocab_size gives: "
                               "config.json is not this model's (edited, or of another model); copy the folder "
                               "again or give the config.json saved with these weights")
