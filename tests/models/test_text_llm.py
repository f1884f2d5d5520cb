"""TextLLM: a causal LM reading transcript + instruction behind the SpeechLLM interface."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from speechsum.benchmark.bpe import manifest_texts, train_bpe_tokenizer
from speechsum.cli import lightning_cli
from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.models.text_llm import TextLLM
from speechsum.models.text_prompt import text_messages
from tests.conftest import CONFIGS

TINY_LLM = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}


@pytest.fixture(scope="module")
def tokenizer_dir(toy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe") / "tokenizer"
    train_bpe_tokenizer(manifest_texts(toy_data["train"]), vocab_size=300, out_dir=out)
    return out


@pytest.fixture
def tiny_text_llm(tokenizer_dir):
    return TextLLM(llm=TINY_LLM, tokenizer=str(tokenizer_dir), end_of_turn="<|im_end|>")


def data_module(toy_data, model, **kwargs) -> SpeechSumDataModule:
    dm = SpeechSumDataModule(
        train_manifest=str(toy_data["train"]), val_manifest=str(toy_data["val"]),
        max_batch_seconds=1000.0, max_batch_size=4, num_buckets=2, **{"require_transcript": True, **kwargs},
    )
    dm.processor = model.processor
    return dm


def test_vocab_follows_the_tokenizer_and_prompt_is_the_chat_template(tiny_text_llm, tokenizer_dir):
    model, tok = tiny_text_llm, AutoTokenizer.from_pretrained(tokenizer_dir)
    assert model.llm.get_input_embeddings().num_embeddings == len(tok) == len(model.processor.tokenizer)
    assert model.llm.config.eos_token_id == tok.eos_token_id and model.audio_token_id == 4
    expected = tok.apply_chat_template(text_messages("List the words.", "do re mi"), add_generation_prompt=True)
    prompts = model.processor.encode_prompts([], ["List the words.", "First word?"], transcripts=["do re mi", "fa"])
    assert prompts.audio == {}
    assert prompts.prompt_ids[0].tolist() == expected["input_ids"]  # the longer row: no padding
    short = tok.apply_chat_template(text_messages("First word?", "fa"), add_generation_prompt=True)["input_ids"]
    pad = prompts.prompt_ids.shape[1] - len(short)
    assert prompts.prompt_ids[1, pad:].tolist() == short and prompts.prompt_mask[1, :pad].sum() == 0
    assert tok.decode(short).endswith("<|im_start|>assistant\n")
    response, mask = model.processor.encode_responses(["do re", "Words: fa."])
    first = tok("do re", add_special_tokens=False)["input_ids"] + [3]  # ends in <|im_end|>
    assert response[0, : len(first)].tolist() == first
    assert mask.sum(1).tolist() == [len(first), len(tok("Words: fa.")["input_ids"]) + 1]
    with pytest.raises(ValueError, match="transcript"):
        model.processor.encode_prompts([], ["First word?"], transcripts=[None])


def test_batched_logprobs_and_generation_equal_one_by_one(tiny_text_llm, toy_data):
    model = tiny_text_llm.eval()
    dm = data_module(toy_data, model)
    dm.setup("fit")
    dataset, collate = dm.datasets["val"], dm._loader("val", shuffle=False).collate_fn
    by_length = {len(e.transcript.split()): i for i, e in enumerate(dataset.examples)}
    rows = [by_length[n] for n in sorted(by_length)][:4]
    batch = collate([dataset[i] for i in rows])
    assert len(batch) >= 3 and batch.prompt_mask.sum(1).unique().numel() > 1  # really padded
    batched = model.response_logprobs(batch, batch.response_ids, batch.response_mask)
    ids, mask = model.generate(batch, max_new_tokens=6)
    for row, index in enumerate(rows):
        single = collate([dataset[index]])
        alone = model.response_logprobs(single, single.response_ids, single.response_mask)
        n = int(single.response_mask.sum())
        torch.testing.assert_close(batched[row, :n], alone[0, :n], atol=2e-5, rtol=1e-4)
        ids1, mask1 = model.generate(single, max_new_tokens=6)
        assert ids[row][mask[row].bool()].tolist() == ids1[0][mask1[0].bool()].tolist()


def test_data_module_never_opens_audio_for_a_text_llm(tiny_text_llm, toy_data, monkeypatch):
    def no_audio(*args, **kwargs):
        raise AssertionError("audio was decoded for a text LLM")

    monkeypatch.setattr("speechsum.data.dataset.load_audio", no_audio)
    dm = data_module(toy_data, tiny_text_llm)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert sum(len(b) for b in batches) == 24
    assert all(b.transcripts[0] and b.audio == {} and float(b.audio_seconds.sum()) == 0 for b in batches)
    train = dm.datasets["train"]
    assert len({round(d, 2) for d in train.durations}) > 1  # durations from headers
    assert train.lengths == [len(e.instruction) + len(e.transcript) + len(e.summary) for e in train.examples]
    assert dm.train_dataloader().batch_sampler.lengths == train.lengths  # buckets follow the text
    assert dm.val_dataloader().batch_sampler.lengths == dm.datasets["val"].durations  # evaluation order as before
    with pytest.raises(ValueError, match="require_transcript: true"):
        data_module(toy_data, tiny_text_llm, require_transcript=False).setup("fit")


def text_lm_config(tmp_path, toy_data, tokenizer_dir, **trainer) -> tuple:
    """configs/benchmark/text_lm.yaml with a tiny model, the toy data and every path under tmp_path."""
    text = (CONFIGS / "benchmark" / "text_lm.yaml").read_text().replace("runs/benchmark", str(tmp_path))
    config = yaml.safe_load(text)
    config["trainer"].update({"enable_progress_bar": False, **trainer})
    module = config["model"]["init_args"]
    module.update({"num_val_samples": 2, "generation": {"max_new_tokens": 8}, "warmup_steps": 2})
    model = module["model"]["init_args"]  # the config's own architecture and init, shrunk
    model.update({"llm": {**model["llm"], "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2},
                  "tokenizer": str(tokenizer_dir)})
    config["data"].update({
        "train_manifest": str(toy_data["train"]), "val_manifest": str(toy_data["val"]),
        "test_manifest": str(toy_data["test"]), "predict_manifest": str(toy_data["test"]),
        "max_batch_size": 4,
    })
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, tmp_path / "text_lm" / "model"


def test_fit_through_the_cli_lowers_the_loss_and_exports_a_hub_style_model(tmp_path, toy_data, tokenizer_dir):
    config, export_dir = text_lm_config(tmp_path, toy_data, tokenizer_dir, max_epochs=4)
    cli = lightning_cli(["--config", str(config)], run=False)
    val_before = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]["val/loss"]
    cli.trainer.fit(cli.model, cli.datamodule)
    val_after = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]["val/loss"]
    assert val_after < val_before - 0.5
    rows = list(csv.DictReader(open(next((tmp_path / "text_lm" / "logs").rglob("metrics.csv")))))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 2 and losses[-1] < losses[0]

    trained = cli.model.model.eval()
    assert {p.name for p in export_dir.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json",
                                                      "chat_template.jinja", "generation_config.json"}
    assert not [p for p in export_dir.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    hf = AutoModelForCausalLM.from_pretrained(export_dir).eval()
    tok = AutoTokenizer.from_pretrained(export_dir)
    assert tok.get_vocab() == trained.processor.tokenizer.get_vocab()
    reloaded = TextLLM(llm=str(export_dir), end_of_turn="<|im_end|>").eval()
    batch = next(iter(cli.datamodule.val_dataloader()))
    ids, mask = trained.generate(batch, max_new_tokens=10)
    ids2, mask2 = reloaded.generate(batch, max_new_tokens=10)
    assert torch.equal(ids * mask, ids2 * mask2)
    torch.testing.assert_close(
        reloaded.response_logprobs(batch, batch.response_ids, batch.response_mask),
        trained.response_logprobs(batch, batch.response_ids, batch.response_mask),
    )
    # plain transformers, as a user would: chat template + generate, stopping at <|im_end|>
    prompt = tok.apply_chat_template(text_messages(batch.instructions[0], batch.transcripts[0]),
                                     add_generation_prompt=True, return_tensors="pt")
    out = hf.generate(**prompt, max_new_tokens=10, do_sample=False)[0, prompt["input_ids"].shape[1]:]
    expected = ids[0][mask[0].bool()]
    assert out[: len(expected)].tolist() == expected.tolist()
    assert trained.processor.decode_responses(ids[:1], mask[:1]) == [
        tok.decode(expected, skip_special_tokens=True).strip()]


def test_export_loads_as_the_llm_of_a_composed_speech_model(tiny_text_llm, tmp_path):
    from speechsum.models.composed import ComposedSpeechLLM

    tiny_text_llm.save_pretrained(tmp_path / "lm")
    encoder = {"d_model": 16, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 32,
               "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 32, "num_mel_bins": 80}
    composed = ComposedSpeechLLM(llm=str(tmp_path / "lm"), encoder=encoder, end_of_turn="<|im_end|>")
    assert composed.processor.tokenizer.get_vocab() == tiny_text_llm.processor.tokenizer.get_vocab()
    torch.testing.assert_close(composed.llm.get_input_embeddings().weight,
                               tiny_text_llm.llm.get_input_embeddings().weight)


def test_text_lm_losses_match_hand_computed_values():
    import math

    from speechsum.stages.text_lm import text_lm_losses

    logits = torch.zeros(2, 4, 2)
    logits[0, 0, 1] = math.log(3.0)  # row 0 predicts token 1 with p = 3/4 at position 0
    logits[1, 2, 0] = math.log(7.0)  # row 1 predicts token 0 with p = 7/8 at position 2
    input_ids = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])  # row 1 is left-padded
    is_response = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]])
    response_loss, prompt_loss = text_lm_losses(logits, input_ids, attention_mask, is_response)
    # prompt: row 0 pos 0 -> 1 (-log 3/4), row 1 pos 1 -> 2 (log 2); padding -> token 1 does not count
    assert prompt_loss.item() == pytest.approx((-math.log(0.75) + math.log(2.0)) / 2, rel=1e-6)
    # response: row 0 pos 1 -> 2 and pos 2 -> 3 (log 2 each), row 1 pos 2 -> 3 (-log 7/8)
    assert response_loss.item() == pytest.approx((2 * math.log(2.0) - math.log(7 / 8)) / 3, rel=1e-6)


def test_joint_left_padding_lays_out_each_row_as_prompt_then_response():
    from speechsum.stages.text_lm import joint_left_padded

    prompt_ids = torch.tensor([[0, 11, 12], [21, 22, 23]])  # left-padded (0: padding)
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    response_ids = torch.tensor([[13, 14, 15], [24, 0, 0]])  # right-padded
    response_mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    input_ids, attention_mask, is_response = joint_left_padded(prompt_ids, prompt_mask, response_ids, response_mask)
    assert attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]  # width 5, not 3 + 3
    assert (input_ids * attention_mask).tolist() == [[11, 12, 13, 14, 15], [0, 21, 22, 23, 24]]
    assert is_response.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]]


def test_text_lm_losses_equal_the_separately_padded_layout(tiny_text_llm, toy_data):
    """The joint layout drops padding only: the loss equals that of [left-padded prompt |
    right-padded response], the step before it (benchmarks/text_lm_speed.py's baseline)."""
    from benchmarks.text_lm_speed import separately_padded_step
    from speechsum.stages.text_lm import TextLMModule

    dm = data_module(toy_data, tiny_text_llm)
    dm.setup("fit")
    def joint_width(b):
        return int((b.prompt_mask.sum(1) + b.response_mask.sum(1)).max())

    # a batch with padding to drop: its longest prompt and longest response are in different rows
    batch = next(b for b in dm.train_dataloader() if joint_width(b) < b.prompt_ids.shape[1] + b.response_ids.shape[1])
    module = TextLMModule(tiny_text_llm, prompt_loss_weight=0.5)
    module.log = lambda *args, **kwargs: None
    joint = module.training_step(batch, 0)
    assert joint.item() == pytest.approx(separately_padded_step(module, batch).item(), rel=1e-5)
    with torch.no_grad():
        module.prompt_loss_weight = 0.0  # the response loss alone agrees too
        assert module.training_step(batch, 0).item() == pytest.approx(separately_padded_step(module, batch).item(), rel=1e-5)


def test_text_lm_losses_equal_the_sliced_autograd_losses_bit_for_bit():
    """Every position's row through the chunked token log-probs (the last row against a dummy id)
    gives the losses and logits gradient of the ``[:, :-1]`` slice through autograd, the step
    before it (benchmarks/text_lm_speed.py's variants up to ``fused_gelu``)."""
    from benchmarks.text_lm_speed import sliced_text_lm_losses
    from speechsum.stages.text_lm import text_lm_losses

    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, 50, generator=generator) * 3).to(torch.bfloat16)
    input_ids = torch.randint(0, 50, (3, 7), generator=generator)
    attention_mask = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]])
    is_response = torch.tensor([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1]])
    results = []
    for losses in (text_lm_losses, sliced_text_lm_losses):
        leaf = logits.detach().requires_grad_()
        response_loss, prompt_loss = losses(leaf, input_ids, attention_mask, is_response)
        (grad,) = torch.autograd.grad(response_loss + 0.7 * prompt_loss, leaf)
        results.append((response_loss, prompt_loss, grad))
    (response, prompt, grad), (reference_response, reference_prompt, reference_grad) = results
    assert torch.equal(response, reference_response) and torch.equal(prompt, reference_prompt)
    assert torch.equal(grad, reference_grad) and grad[:, -1].abs().sum() == 0


def test_text_corpus_adds_text_only_documents(tmp_path, toy_data):
    from speechsum.benchmark.text_corpus import write_text_corpus
    from speechsum.data.manifest import load_manifest

    bench = toy_data["train"].parent
    out = write_text_corpus(bench, tmp_path / "corpus", documents=3, instructions=2, seed=1)
    examples, _ = load_manifest(out / "train.jsonl", require_summary=True, require_transcript=True)
    extra = [e for e in examples if e.id.startswith("lmtext-")]
    assert len(examples) == 24 + 6 and len(extra) == 6
    assert all(e.meta["split"] == "train" and e.meta["facts"] and e.audio.endswith("silence.wav") for e in extra)
    assert len({e.meta["style"] for e in extra if e.meta["doc_id"] == "lmtext-000000"}) == 2
    assert load_manifest(out / "val.jsonl", require_summary=True)[0][0].id == "val-00000"
    again = write_text_corpus(bench, tmp_path / "corpus2", documents=3, instructions=2, seed=1)
    assert (again / "train.jsonl").read_text().replace("corpus2", "corpus") == (out / "train.jsonl").read_text()


def test_benchmark_cli_dispatches_textcorpus(tmp_path, toy_data, capsys):
    from speechsum.benchmark.cli import main

    main(["textcorpus", "--data", str(toy_data["train"].parent), "--out", str(tmp_path / "c"), "--documents", "2"])
    assert "26 training lines" in capsys.readouterr().out
    assert sum(1 for _ in (tmp_path / "c" / "train.jsonl").open()) == 24 + 2


def test_a_saved_model_loaded_without_end_of_turn_still_stops_at_it(tiny_text_llm, tmp_path):
    from speechsum.models.composed import ComposedSpeechLLM

    tiny_text_llm.save_pretrained(tmp_path / "lm")
    tok = tiny_text_llm.processor.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token == "<|endoftext|>"  # the tokenizer alone would not stop at the turn's end
    encoder = {"d_model": 16, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 32,
               "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 32, "num_mel_bins": 80}
    # as `speechsum evaluate` loads a text system, and a student built on the exported backbone
    for loaded in (TextLLM(llm=str(tmp_path / "lm")), ComposedSpeechLLM(llm=str(tmp_path / "lm"), encoder=encoder)):
        assert loaded.processor.end_of_turn == "<|endoftext|>"
        assert im_end in loaded.processor.stop_token_ids
    random_init = TextLLM(llm=TINY_LLM, tokenizer=str(tmp_path / "lm"))  # nothing saved: tokenizer eos only
    assert random_init.processor.stop_token_ids == [tok.eos_token_id]


def test_attn_implementation_is_chosen_and_gives_the_same_logits(tokenizer_dir, tmp_path):
    sdpa = TextLLM(llm=TINY_LLM, tokenizer=str(tokenizer_dir))
    eager = TextLLM(llm=TINY_LLM, tokenizer=str(tokenizer_dir), attn_implementation="eager")
    assert (sdpa.llm.config._attn_implementation, eager.llm.config._attn_implementation) == ("sdpa", "eager")
    prompts = sdpa.processor.encode_prompts([], ["List the words.", "First?"], transcripts=["do re mi fa", "fa"])
    ids, mask = prompts.prompt_ids, prompts.prompt_mask  # the second row is left-padded
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    torch.testing.assert_close(eager({}, ids, mask, positions) * mask[..., None], sdpa({}, ids, mask, positions) * mask[..., None])
    eager.save_pretrained(tmp_path / "saved")  # not saved with the model: it loads with the default
    assert TextLLM(llm=str(tmp_path / "saved")).llm.config._attn_implementation == "sdpa"


def test_the_configs_fused_gelu_is_phis_gelu_new():
    """configs/benchmark/text_*.yaml train with `gelu_pytorch_tanh`: one kernel for Phi's default
    `gelu_new` (0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), five ops)."""
    from transformers.activations import ACT2FN

    x = torch.linspace(-8, 8, 10001, dtype=torch.float64)
    torch.testing.assert_close(ACT2FN["gelu_pytorch_tanh"](x), ACT2FN["gelu_new"](x), rtol=1e-12, atol=1e-12)
    for name in ("text_lm.yaml", "text_teacher.yaml"):
        llm = yaml.safe_load((CONFIGS / "benchmark" / name).read_text())["model"]["init_args"]["model"]["init_args"]
        assert llm["llm"]["hidden_act"] == "gelu_pytorch_tanh" and llm["attn_implementation"] == "eager"
