"""Config mistakes of ``speechsum fit|validate|test|predict`` that were silent or named no file: a
misspelt field of a backbone's config dict (``llm: {hiden_size: 64}``: transformers kept it unread and
built the model with its default width), an ``llm`` dict without ``model_type`` (a ``KeyError``
traceback), a value of the wrong type and a ``class_path`` that names no class (jsonargparse's report
named neither the file nor the line and suggested nothing); and a backbone dict stacked over another,
which replaced it whole."""

from __future__ import annotations

import pytest
import yaml
from transformers import AutoConfig, Qwen2AudioConfig, WhisperConfig

from speechsum.cli import main
from speechsum.models.base import load_causal_lm
from speechsum.models.config_fields import UnknownConfigField, check_config_fields, check_sizes, typed_values
from speechsum.utils.arguments import ConfigFieldError
from tests.helpers import run_config

BACKBONE = "model:\n  init_args:\n    model:\n      init_args:\n"
CONFIG_MISTAKES = [
    (BACKBONE + "        encoder:\n          d_modle: 64\n",
     "speechsum fit: error: encoder.d_modle ({file}:6): not a field of WhisperConfig (did you mean 'd_model'?); "
     "transformers would keep it unread and build the model with its default: fix or remove it\n"),
    (BACKBONE + "        llm:\n          model_type: llama\n          hiden_size: 64\n",
     "speechsum fit: error: llm.hiden_size ({file}:7): not a field of LlamaConfig (did you mean 'hidden_size'?); "
     "transformers would keep it unread and build the model with its default: fix or remove it\n"),
    ("model:\n  init_args:\n    model:\n      class_path: ComposedSpeechLLM\n      init_args:\n        llm:\n"
     "          hidden_size: 64\n        encoder: {d_model: 32, encoder_layers: 1, encoder_attention_heads: 2}\n",
     "speechsum fit: error: llm: a config dict needs model_type (llama, qwen2, ...: a transformers model type), got "
     "{{'hidden_size': 64}}: add it, or give a hub id or model folder instead of the dict\n"),
    ("model:\n  init_args:\n    learning_rate: fast\n",
     "  learning_rate: expected a number, got fast: in {file}:3\n"),
    ("trainer:\n  max_epochs: two\n", "  max_epochs: expected an integer, got two: in {file}:2\n"),
    # a choice (a Literal) was "expected , got float16": the choices left out
    (BACKBONE + "        encoder_dtype: float16\n",
     "  encoder_dtype: expected one of 'float32', 'bfloat16', got float16: in {file}:5\n"),
    ("data:\n  too_long_audio: cut\n", "  too_long_audio: expected one of 'error', 'truncate', got cut: in {file}:2\n"),
    # a dataclass of plain settings: the class-path advice ("a class (module.Class) or a mapping with class_path
    # and init_args") fits no config of it
    ("model:\n  init_args:\n    generation: [1, 2]\n",
     "  generation: expected a mapping of GenerationSettings fields (max_new_tokens, do_sample, temperature, top_p), "
     "got [1, 2]: in {file}:3\n"),
    ("model: SFT\n",  # "expected , got SFT": jsonargparse names a class setting's types by null only
     "  model: expected a class (module.Class) or a mapping with class_path and init_args, got SFT: in {file}:1\n"),
    ("model:\n  class_path: speechsum.stages.sft.SFTModul\n",
     "  class_path 'speechsum.stages.sft.SFTModul': no such class (did you mean 'speechsum.stages.sft.SFTModule'?): "
     "in {file}:2\n"),
    (BACKBONE.replace("      init_args:\n", "      class_path: nosuch.Composed\n"),
     "  class_path 'nosuch.Composed': no such class (did you mean 'speechsum.models.composed.ComposedSpeechLLM'?): "
     "in {file}:4\n"),
    # these three were tracebacks: transformers' typed config, torch's negative size, a division by zero at the first batch
    (BACKBONE + "        llm:\n          model_type: llama\n          hidden_size: abc\n",
     "speechsum fit: error: llm: LlamaConfig refuses these fields (StrictDataclassFieldValidationError: Validation error "
     "for field 'hidden_size': TypeError: Field 'hidden_size' expected int, got str (value: 'abc')); fix the field it "
     "names\n"),
    (BACKBONE + "        llm:\n          model_type: llama\n          intermediate_size: -1\n",
     "speechsum fit: error: llm.intermediate_size ({file}:7): must be a positive integer (a size of the model), got "
     "-1: write 1 or more (LlamaConfig's default: 11008)\n"),
    # built no layers without a word (encoder_layers: -1 or 0), or failed deep inside torch or transformers
    (BACKBONE + "        encoder:\n          encoder_layers: -1\n",
     "speechsum fit: error: encoder.encoder_layers ({file}:6): must be a positive integer (a size of the model), got "
     "-1: write 1 or more (WhisperConfig's default: 4)\n"),
    (BACKBONE + "        encoder:\n          d_model: 0\n",
     "speechsum fit: error: encoder.d_model ({file}:6): must be a positive integer (a size of the model), got 0: "
     "write 1 or more (WhisperConfig's default: 384)\n"),
    (BACKBONE + "        encoder:\n          encoder_attention_heads: -2\n",
     "speechsum fit: error: encoder.encoder_attention_heads ({file}:6): must be a positive integer (a size of the "
     "model), got -2: write 1 or more (WhisperConfig's default: 6)\n"),
    (BACKBONE + "        encoder:\n          encoder_ffn_dim: 0\n",
     "speechsum fit: error: encoder.encoder_ffn_dim ({file}:6): must be a positive integer (a size of the model), got "
     "0: write 1 or more (WhisperConfig's default: 1536)\n"),
    (BACKBONE + "        encoder:\n          encoder_attention_heads: 3\n",
     "speechsum fit: error: encoder.encoder_attention_heads ({file}:6): 3 heads do not divide d_model 32: write a "
     "divisor of 32, or a d_model that 3 divides\n"),
    (BACKBONE + "        llm:\n          model_type: llama\n          num_hidden_layers: 0\n",
     "speechsum fit: error: llm.num_hidden_layers ({file}:7): must be a positive integer (a size of the model), got "
     "0: write 1 or more (LlamaConfig's default: 32)\n"),
    (BACKBONE + "        end_of_turn: ''\n",  # was the eos token without a word
     "speechsum fit: error: end_of_turn ({file}:5): '' is no token: leave it out (null) for the default "
     "'<|endoftext|>', or give one token of the tokenizer's vocabulary\n"),
    (BACKBONE + "        end_of_turn: nope\n",  # was a traceback at the first batch
     "speechsum fit: error: end_of_turn ({file}:5): 'nope' is not one token of the tokenizer's vocabulary: give one of "
     "its tokens that ends a turn (its special tokens: '<|endoftext|>', '<|pad|>')\n"),
    (BACKBONE + "        user_prompt: '<|audio|>{{audio}} {{instruction}}'\n",  # a traceback at the first batch
     "speechsum fit: error: user_prompt ({file}:5): holds '<|audio|>' (at character 0), a special token of the model's "
     "tokenizer: it would be read as that token, not as text (it could end the turn or add an audio position); remove "
     "or rewrite it\n"),
    (BACKBONE + "        dtype: bf16\n",  # an AttributeError traceback from getattr(torch, 'bf16') with a hub LM
     "speechsum fit: error: dtype ({file}:5): 'bf16' is no floating-point torch dtype: write bfloat16, float16 or "
     "float32, or null for the checkpoint's own\n"),
    (BACKBONE + "        max_audio_seconds: -5\n",  # every clip was cut to nothing and blamed on its audio file
     "speechsum fit: error: max_audio_seconds must be a number above 0 (or null: no limit), got -5.0\n"),
    (BACKBONE + "        policy:\n          lora_r: 0\n",  # peft's error inside a dump of the policy, naming no setting
     "speechsum fit: error: policy.lora_r must be at least 1, got 0\n"),
    (BACKBONE + "        stack: 0\n",
     "speechsum fit: error: stack must be at least 1 (encoder frames per audio token, e.g. 4: 80 ms with Whisper), got "
     "0\n"),
    (BACKBONE + "        projector_hidden: 0\n",  # was taken as the default width without a word
     "speechsum fit: error: projector_hidden must be at least 1 (or null: the default width), got 0\n"),
]


@pytest.mark.parametrize(("text", "message"), CONFIG_MISTAKES,
                         ids=["encoder-field", "llm-field", "no-model-type", "type-nested", "type-trainer", "choice-nested",
                              "choice-data", "settings-list", "class-setting",
                              "stage-class", "backbone-class", "llm-field-type", "llm-negative-size", "encoder-layers-negative",
                              "encoder-width-0", "encoder-heads-negative", "encoder-ffn-0", "encoder-heads-split",
                              "llm-layers-0", "end-of-turn-empty", "end-of-turn-unknown", "user-prompt-special", "dtype-name",
                              "max-audio-negative", "lora-r-0", "stack-0",
                              "projector-hidden-0"])
def test_config_mistakes_end_with_the_setting_file_and_line(tmp_path, toy_data, capsys, text, message):
    config = run_config(tmp_path, toy_data)
    (tmp_path / "mistake.yaml").write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--config", str(tmp_path / "mistake.yaml")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.removesuffix("(set SPEECHSUM_TRACEBACK=1 for the traceback)\n").endswith(
        message.format(file=tmp_path / "mistake.yaml"))


def test_unknown_fields_of_sub_configs_are_found_and_fields_transformers_renames_pass():
    spec = {"text_config": {"model_type": "qwen2", "vocab_size": 300, "hiden_size": 64}}
    with pytest.raises(UnknownConfigField, match=r"^model\.text_config\.hiden_size: not a field of Qwen2Config "):
        check_config_fields(Qwen2AudioConfig(**spec), spec, "model")
    fine = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "torch_dtype": "float32",
            "num_labels": 3, "tie_word_embeddings": True}
    check_config_fields(AutoConfig.for_model(**fine), fine, "llm")
    check_config_fields(WhisperConfig(d_model=32, encoder_layers=1), {"d_model": 32, "encoder_layers": 1}, "encoder")


def test_a_backbone_dict_stacked_over_another_merges_into_it_as_other_sections_do(tmp_path, toy_data, capsys):
    """jsonargparse replaced a dict-typed setting whole: this override dropped d_model and every other
    field of the encoder, which was then built with Whisper's defaults without a word."""
    config = run_config(tmp_path, toy_data)
    (tmp_path / "deeper.yaml").write_text(BACKBONE + "        encoder:\n          encoder_layers: 3\n")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), f"--config={tmp_path / 'deeper.yaml'}", "--print_config"])
    assert info.value.code == 0
    encoder = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["model"]["init_args"]["encoder"]
    assert encoder == {"d_model": 32, "encoder_layers": 3, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                       "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 64, "num_mel_bins": 80}


def test_a_size_set_on_the_command_line_is_checked_as_in_a_file_and_sub_configs_too(tmp_path, toy_data, capsys):
    config = run_config(tmp_path, toy_data)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--model.init_args.model.init_args.encoder.encoder_layers", "-1"])
    assert info.value.code == 2
    assert capsys.readouterr().err.removesuffix("(set SPEECHSUM_TRACEBACK=1 for the traceback)\n").endswith(
        "speechsum fit: error: encoder.encoder_layers: must be a positive integer (a size of the model), got -1: write "
        "1 or more (WhisperConfig's default: 4)\n")
    with pytest.raises(ConfigFieldError) as sub:
        check_sizes(Qwen2AudioConfig, {"audio_config": {"model_type": "qwen2_audio_encoder", "d_model": -8}}, "model")
    assert str(sub.value) == ("model.audio_config.d_model: must be a positive integer (a size of the model), got -8: "
                              "write 1 or more")
    check_sizes(WhisperConfig, {"d_model": 32, "decoder_layers": 0, "dropout": 0.0, "scale_embedding": False}, "encoder")


def test_backbone_fields_set_on_the_command_line_are_read_as_yaml_not_refused_as_text():
    """``--model.init_args.model.init_args.llm.hidden_size 32`` reached transformers as '32', which its
    typed configs refused inside a dump of the whole config."""
    text = {"d_model": "32", "encoder_layers": 1, "activation_function": "gelu", "dropout": "0.1",
            "scale_embedding": "true", "max_source_positions": "not a number"}
    assert typed_values(WhisperConfig, text) == {"d_model": 32, "encoder_layers": 1, "activation_function": "gelu",
                                                 "dropout": 0.1, "scale_embedding": True,
                                                 "max_source_positions": "not a number"}
    model = load_causal_lm({"model_type": "llama", "hidden_size": "32", "num_attention_heads": "4", "vocab_size": "300",
                            "num_hidden_layers": "1", "intermediate_size": "64"})
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.vocab_size) == (32, 1, 300)


@pytest.mark.parametrize("option", [["--data.max_batch_size", "x"], ["--data.max_batch_size=x"],
                                    ["--seed_everything", "x"]])
def test_a_wrong_type_on_the_command_line_is_named_as_that_option_not_a_config_line(tmp_path, toy_data, capsys, option):
    """Before: 'max_batch_size: expected an integer, got x: in CONFIG:LINE', the config's own (valid)
    line of that key, when the bad value had been typed on the command line."""
    config = run_config(tmp_path, toy_data)
    assert "max_batch_size" in config.read_text() and "seed_everything" in config.read_text()  # keys the note named
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), *option])
    assert info.value.code == 2
    err = capsys.readouterr().err
    expected = ("  seed_everything: expected true or false or an integer, got x: on the command line (--seed_everything x)"
                if "--seed_everything" in option else
                "  max_batch_size: expected an integer, got x: on the command line (--data.max_batch_size x)")
    assert err.removesuffix("(set SPEECHSUM_TRACEBACK=1 for the traceback)\n").endswith(expected + "\n")


def test_a_wrong_type_in_a_config_given_by_a_relative_path_in_a_subfolder_names_its_line(tmp_path, toy_data, capsys,
                                                                                         monkeypatch):
    """``speechsum fit --config configs/x.yaml``: jsonargparse refuses the value inside the file's own folder
    (its os.chdir), where ``configs/x.yaml`` names nothing, and the note named no file or line."""
    run_config(tmp_path / "configs", toy_data)
    (tmp_path / "configs" / "bad.yaml").write_text("trainer:\n  max_steps: ten\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "configs/config.yaml", "--config", "configs/bad.yaml"])
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith("  max_steps: expected an integer, got ten: in configs/bad.yaml:2\n")
