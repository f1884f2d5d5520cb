"""What ``speechsum serve --model`` loads: a text LM student as trained (checkpoint, exports), and the folders it
(and ``summarize``/``export``) refuse at start, naming the folder and what to do, instead of serving random or
dropped weights or failing every request."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from speechsum.models.base import load_tokenizer
from speechsum.serving import cli, export, summarize
from speechsum.serving.hf_backend import HFBackend
from speechsum.utils.remote import openai_client
from tests.servers import serve_in_thread
from tests.serving.export_fixtures import trained_student


@pytest.fixture(autouse=True)
def _never_serve(monkeypatch):
    """A model that loads fails the test instead of being served for ever."""
    def loaded(backend, **options):
        raise AssertionError(f"{backend.model_name} was loaded")
    monkeypatch.setattr(cli, "build_server", loaded)


def _refused(folder: Path) -> str:
    with pytest.raises(SystemExit) as raised:
        cli.main(["--model", str(folder), "--port", "0"])
    return str(raised.value)


def _beside_the_tokenizer(model_dir: Path, folder: Path, model: torch.nn.Module) -> Path:
    """``model`` saved in ``folder`` with the tiny LM's tokenizer."""
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    model.save_pretrained(folder)
    return folder


def _bert() -> torch.nn.Module:
    return BertModel(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))


def _whisper() -> torch.nn.Module:
    return WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=300, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_source_positions=30,
        max_target_positions=40, num_mel_bins=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1))


@pytest.mark.parametrize(("build", "message"), [
    (_bert, "6 weights of BertLMHeadModel are not in the folder (cls.predictions.bias, cls.predictions.decoder.bias, "
            "cls.predictions.transform.LayerNorm.bias, …): served, they would be random. Its config.json names "
            "BertModel; give a causal language model's folder (or copy the weight files again if some are missing)"),
    (_whisper, "its config.json names WhisperForConditionalGeneration, an encoder-decoder model: loaded as "
               "WhisperForCausalLM, it is the decoder alone, without the encoder its answers depend on (22 weights "
               "left out: model.encoder.conv1.bias, model.encoder.conv1.weight, model.encoder.conv2.bias, …). Give a "
               "causal language model's folder (AutoModelForCausalLM)"),
])
def test_a_folder_of_another_kind_of_model_is_refused(model_dir, tmp_path, build, message):
    """Before: a BERT folder was served as BertLMHeadModel with a random LM head (6 weights not in the folder), a
    Whisper one as WhisperForCausalLM without its encoder: answers from weights no one trained."""
    folder = _beside_the_tokenizer(model_dir, tmp_path / "model", build())
    assert _refused(folder) == f"speechsum serve: --model {folder}: {message}"


def test_a_tokenizer_with_more_ids_than_the_model_has_embeddings_is_refused(model_dir, tmp_path):
    """Before: served; every request holding one of the ids 250-259 was a 500 (an IndexError in the embedding)."""
    config = LlamaConfig.from_pretrained(model_dir)
    config.vocab_size, config.pad_token_id, config.eos_token_id = 250, None, None
    folder = _beside_the_tokenizer(model_dir, tmp_path / "small", LlamaForCausalLM(config))
    assert _refused(folder) == (
        f"speechsum serve: --model {folder}: the tokenizer has 260 tokens but the model only 250 embeddings "
        "(config.json vocab_size): ids 250-259 (ľ, Ŀ, ŀ, …) would fail every request holding one. The tokenizer and "
        "the weights are of different models: give the folder whose tokenizer these weights were trained with")


def test_weights_of_other_shapes_than_config_json_gives_are_named(model_dir, tmp_path):
    """Before: a traceback ending in "RuntimeError: You set `ignore_mismatched_sizes` to `False`, thus raising an
    error. For details look at the above report!" (config.json of another size of the model)."""
    folder = tmp_path / "bigger"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 300}))
    assert _refused(folder) == (
        f"speechsum serve: {folder}: 2 weights in the folder do not have the shape its config.json gives "
        "(lm_head.weight: (260, 32) in the weight files, (300, 32) from config.json): config.json and the weights are "
        "of different models; copy the folder again or give the config.json saved with these weights")


def test_tokenizer_files_that_do_not_load_are_named(model_dir, tmp_path):
    """Before: a traceback ending in "KeyError: 'added_tokens'" (a tokenizer.json of another structure)."""
    folder = tmp_path / "tokenizer"
    shutil.copytree(model_dir, folder)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": 5}')
    assert _refused(folder) == (
        f"speechsum serve: {folder}: its tokenizer files do not load (KeyError: 'added_tokens'): copy them again from "
        "the model they belong to, or save the tokenizer anew (tokenizer.save_pretrained(folder))")


def test_a_sharded_model_missing_a_shard_names_the_index_and_the_shard(model_dir, tmp_path):
    """Before: "No such file or directory: …/model-00002-of-00007.safetensors", no cause nor what to do."""
    folder = tmp_path / "sharded"
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    AutoModelForCausalLM.from_pretrained(model_dir).save_pretrained(folder, max_shard_size="20KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    shards[1].unlink()
    assert _refused(folder) == (
        f"speechsum serve: {folder / 'model.safetensors.index.json'}: 1 of the {len(shards)} weight files it names is "
        f"not in the folder ({shards[1].name}): a download or copy left unfinished? Copy or download the whole folder "
        "again")


def test_a_run_folder_is_told_the_checkpoints_it_holds(tmp_path, capsys):
    """Before: "no config.json: not a saved HF model …" (serve), "no speechsum_export.json; not a directory written
    by `speechsum export`" (summarize), "e.g. RUN/sft/checkpoints/last.ckpt" (export): none named the run's own."""
    run = tmp_path / "run"
    for stage in ("sft", "dpo"):  # dpo written last: named first
        (run / stage / "checkpoints").mkdir(parents=True)
        (run / stage / "checkpoints" / "last.ckpt").write_bytes(b"x")
    hint = (f" (it holds stage checkpoints, newest first: {run}/dpo/checkpoints/last.ckpt, {run}/sft/checkpoints/"
            "last.ckpt): give one")
    assert _refused(run) == (f"speechsum serve: --model {run}: no config.json: not a saved HF model + tokenizer, nor a "
                             f"folder written by `speechsum export`{hint}")
    with pytest.raises(SystemExit) as raised:
        summarize.main([str(tmp_path / "a.wav"), "--model", str(run)])
    assert str(raised.value) == f"speechsum summarize: {run}: no speechsum_export.json; not a directory written by " \
                                f"`speechsum export`{hint}"
    with pytest.raises(SystemExit) as raised:
        export.main([str(run), "--out", str(tmp_path / "out")])
    assert str(raised.value) == f"speechsum export: {run} is a folder; export takes a stage checkpoint file{hint}"
    assert not (tmp_path / "out").exists()


def test_a_path_starting_with_a_tilde_is_in_the_home_folder(tmp_path, monkeypatch):
    """The shell expands ``~`` only at a word's start: ``--out=~/student`` arrived as it is, and before 2026-12-07
    export wrote a folder named ``~`` in the working directory; serve and summarize found no ``~/…`` model."""
    monkeypatch.setenv("HOME", str(tmp_path))
    home = str(tmp_path)
    assert cli.build_parser().parse_args(["--model=~/m", "--config", "~/c.yaml"]).model == f"{home}/m"
    args = summarize.build_parser().parse_args(["a.wav", "--model", "~/m", "--config=~/c.yaml", "--out=~/o.jsonl"])
    assert (args.model, args.config, args.out, args.audio) == (f"{home}/m", f"{home}/c.yaml", f"{home}/o.jsonl", ["a.wav"])
    args = export.build_parser().parse_args(["~/last.ckpt", "--out=~/student", "--config=~/c.yaml"])
    assert (args.ckpt, args.out, args.config) == (f"{home}/last.ckpt", f"{home}/student", f"{home}/c.yaml")


def test_a_text_lm_student_is_served_with_its_lora_from_its_checkpoint_and_both_exports(tmp_path):
    """Before: an export without --merge-lora was served with its base weights only (the adapter in adapter/
    unread: another model's answers), and the checkpoint was refused ("SpeechBackend serves speech students")."""
    _, ckpt = trained_student("text_llm", tmp_path / "run")
    models = [ckpt, *(export.export_checkpoint(ckpt, tmp_path / f"merged_{merge}", merge_lora=merge)
                      for merge in (False, True))]
    replies = []
    for model in models:
        backend = cli.build_backend(cli.build_parser().parse_args(["--model", str(model), "--served-model-name", "s"]))
        with serve_in_thread(backend) as url:
            choice = openai_client(url).completions.create(model="s", prompt="hello there", max_tokens=6, temperature=0,
                                                           logprobs=0, echo=True).choices[0]
        replies.append((choice.text, choice.logprobs.token_logprobs[1:]))
    assert replies[1][0] == replies[0][0] == replies[2][0]
    torch.testing.assert_close(replies[1][1], replies[0][1], atol=1e-5, rtol=0)  # the adapter, unmerged: exact
    torch.testing.assert_close(replies[2][1], replies[0][1], atol=1e-4, rtol=0)  # merged in float32
    # what was served before: the export's top-level weights alone
    base = HFBackend.from_objects(AutoModelForCausalLM.from_pretrained(models[1]), load_tokenizer(models[1]), "s")
    with serve_in_thread(base) as url:
        choice = openai_client(url).completions.create(model="s", prompt="hello there", max_tokens=6, temperature=0,
                                                       logprobs=0, echo=True).choices[0]
    assert max(abs(a - b) for a, b in zip(choice.logprobs.token_logprobs[1:], replies[0][1])) > 1e-2


def test_a_stale_index_beside_the_whole_weights_file_is_left_alone(model_dir, tmp_path):
    """transformers reads model.safetensors before model.safetensors.index.json: the shards it names are not needed."""
    folder = tmp_path / "merged"
    shutil.copytree(model_dir, folder)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(AssertionError, match="merged was loaded"):  # no refusal: it loads and would be served
        cli.main(["--model", str(folder), "--port", "0"])
