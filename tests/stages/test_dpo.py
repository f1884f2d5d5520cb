"""DPOModule: one-forward pair log-probs, the three reference modes, the disk cache, and a tiny
end-to-end DPO run through the Lightning CLI in which held-out preference accuracy rises."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.policy import TrainingPolicy
from speechsum.stages.dpo import reference_logprobs
from speechsum.stages.dpo.module import DPOModule
from speechsum.stages.dpo.reference_logprobs import pair_token_logprobs
from tests.conftest import tiny_backbone_args
from tests.helpers import run_config


def repeated_ending(summary: str) -> str:
    """The rejected summary: the right one with its last word stuttered (a repetition defect)."""
    words = summary.rstrip(".").split()
    return " ".join(words + [words[-1]] * 3) + "."


@pytest.fixture(scope="module")
def pairs(toy_data, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pairs")
    out = {}
    for split, manifest in toy_data.items():
        rows = [json.loads(line) for line in manifest.read_text().splitlines()]
        for row in rows:
            row["audio"] = str((manifest.parent / row["audio"]).resolve())
            row["chosen"] = row.pop("summary")
            row["rejected"] = repeated_ending(row["chosen"])
        out[split] = folder / f"{split}_pairs.jsonl"
        out[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def tiny_model(lora_dropout: float = 0.0) -> ComposedSpeechLLM:
    args = tiny_backbone_args()
    args["policy"] = TrainingPolicy(**{**args["policy"], "lora_dropout": lora_dropout})
    return ComposedSpeechLLM(**args)


def as_kd_checkpoint(model: ComposedSpeechLLM, seed: int = 3) -> ComposedSpeechLLM:
    """Set every trainable weight (LoRA A and B, projector) to seeded values, B non-zero: the state
    an earlier stage's checkpoint loads (the fresh LoRA init itself comes from the global RNG)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in model.trainable_parameters():
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def first_batch(pairs: dict[str, Path], processor, split: str = "val", size: int = 4):
    datamodule = SpeechSumDataModule(
        val_manifest=str(pairs[split]), require_summary=False, preference=True, max_batch_size=size
    )
    datamodule.processor = processor
    datamodule.setup("validate")
    return datamodule, next(iter(datamodule.val_dataloader()))


def test_pair_logprobs_in_one_forward_equal_separate_forwards(pairs):
    model = tiny_model().eval()
    _, batch = first_batch(pairs, model.processor)
    with torch.no_grad():
        chosen, chosen_mask, rejected, rejected_mask = pair_token_logprobs(model, batch)
        alone_chosen = model.response_logprobs(batch, batch.chosen_ids, batch.chosen_mask)
        alone_rejected = model.response_logprobs(batch, batch.rejected_ids, batch.rejected_mask)
    assert batch.chosen_ids.shape[1] != batch.rejected_ids.shape[1]  # padding to one length is exercised
    torch.testing.assert_close(chosen.sum(-1), alone_chosen.sum(-1), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(rejected.sum(-1), alone_rejected.sum(-1), atol=1e-4, rtol=1e-5)
    assert int(chosen_mask.sum()) == int(batch.chosen_mask.sum())
    assert int(rejected_mask.sum()) == int(batch.rejected_mask.sum())


@pytest.mark.parametrize(("projector", "head_on_tokens_only"), [("mlp", True), ("ctc", True), ("mlp", False)])
def test_shared_prompt_forward_equals_the_doubled_forward_with_gradients(pairs, projector, head_on_tokens_only,
                                                                          monkeypatch):
    """One prompt forward + both responses on its cache = the ``[chosen; rejected]`` doubled forward:
    the same token log-probs and the same gradients of every trainable weight, with the LM head on
    the response tokens only (a plain head) or on every position (any other LM)."""
    if not head_on_tokens_only:
        monkeypatch.setattr(reference_logprobs, "plain_head", lambda lm: False)
    model = as_kd_checkpoint(ComposedSpeechLLM(**{**tiny_backbone_args(), "projector": projector,
                                                  "policy": TrainingPolicy(**tiny_backbone_args()["policy"])}))
    model.eval()  # no LoRA dropout between the two paths
    _, batch = first_batch(pairs, model.processor)
    calls = []
    original = reference_logprobs.shared_prefix_pair_logprobs
    results = []
    for shared in (True, False):
        monkeypatch.setattr(reference_logprobs, "shared_prefix_pair_logprobs",
                            (lambda *a: calls.append(original(*a)) or calls[-1]) if shared else (lambda *a: None))
        model.zero_grad()
        chosen, chosen_mask, rejected, rejected_mask = pair_token_logprobs(model, batch)
        (chosen.sum() - 0.5 * rejected.sum()).backward()
        results.append((chosen.detach(), rejected.detach(),
                        {n: p.grad.clone() for n, p in model.trainable_parameters() if p.grad is not None}))
    assert len(calls) == 1 and calls[0] is not None  # the shared path ran, and did not step aside
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-5)
    assert results[0][2].keys() == results[1][2].keys() and any("projector" in n for n in results[0][2])
    for name, grad in results[0][2].items():
        torch.testing.assert_close(grad, results[1][2][name], atol=1e-5, rtol=1e-4)


def test_kept_token_logprobs_run_the_head_on_kept_positions_only():
    """Identity head, logits = hidden: row 0 [0, 0] → log ½; row 1 [ln 3, 0] → log ¾; row 2 masked → 0."""
    head = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    rows_seen = []
    head.register_forward_hook(lambda module, args, output: rows_seen.append(args[0].shape[0]))
    hidden = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, 5.0]]])
    logps = reference_logprobs.kept_token_logprobs(head, hidden, torch.tensor([[0, 0, 1]]), torch.tensor([[1, 1, 0]]))
    torch.testing.assert_close(logps, torch.tensor([[math.log(0.5), math.log(0.75), 0.0]]))
    assert rows_seen == [2]


def test_share_prompt_follows_the_device_unless_set(pairs, monkeypatch):
    module = DPOModule(tiny_model(), reference="frozen_copy")
    assert module.share_prompt is None and module.shares_prompt  # a CPU: compute-bound, sharing pays
    assert not DPOModule(tiny_model(), share_prompt=False).shares_prompt
    assert DPOModule(tiny_model(), share_prompt=True).to("meta").shares_prompt
    assert not module.to("meta").shares_prompt  # any accelerator: the doubled forward, one LM call
    used = []
    monkeypatch.setattr(reference_logprobs, "shared_prefix_pair_logprobs", lambda *a: used.append(1))
    model = tiny_model()
    _, batch = first_batch(pairs, model.processor)
    with torch.no_grad():
        pair_token_logprobs(model, batch, share_prompt=False)
    assert used == []


def test_shared_prompt_forward_steps_aside_for_gradient_checkpointing(pairs):
    model = tiny_model()
    model.llm.gradient_checkpointing_enable()
    _, batch = first_batch(pairs, model.processor)
    assert reference_logprobs.shared_prefix_pair_logprobs(
        model, batch, batch.audio, batch.chosen_ids, batch.chosen_mask, batch.rejected_ids, batch.rejected_mask) is None


def test_lora_disabled_reference_equals_frozen_copy_at_step0_and_after_a_step(pairs):
    copy_module = DPOModule(as_kd_checkpoint(tiny_model()), reference="frozen_copy")
    lora_module = DPOModule(as_kd_checkpoint(tiny_model()), reference="lora_disabled")
    _, batch = first_batch(pairs, copy_module.processor)
    with torch.no_grad():
        policy_c, _, policy_r, _ = pair_token_logprobs(copy_module.model.eval(), batch)
    copy_c, copy_r = copy_module.reference_logps(batch)
    lora_c, lora_r = lora_module.reference_logps(batch)
    torch.testing.assert_close(lora_c, copy_c, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(lora_r, copy_r, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(copy_c, policy_c.sum(-1))  # the reference is the initial policy
    # the folded LoRA policy still computes the KD checkpoint's function
    with torch.no_grad():
        folded_c, _, _, _ = pair_token_logprobs(lora_module.model.eval(), batch)
    torch.testing.assert_close(folded_c.sum(-1), copy_c, atol=1e-4, rtol=1e-5)

    # one optimiser step on each: the policies move, both references stay where they were
    for module in (copy_module, lora_module):
        module.model.train()
        optimizer = torch.optim.SGD([p for _, p in module.model.trainable_parameters()], lr=0.5)
        chosen, _, rejected, _ = pair_token_logprobs(module.model, batch)
        (rejected.sum() - chosen.sum()).backward()
        optimizer.step()
    for module in (copy_module, lora_module):
        after_c, after_r = module.reference_logps(batch)
        torch.testing.assert_close(after_c, copy_c, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(after_r, copy_r, atol=1e-4, rtol=1e-5)
        with torch.no_grad():
            moved_c, _, _, _ = pair_token_logprobs(module.model.eval(), batch)
        assert (moved_c.sum(-1) - copy_c).abs().max() > 1e-3


def test_frozen_copy_shares_frozen_weights_and_is_not_checkpointed(pairs):
    module = DPOModule(tiny_model(), reference="frozen_copy")
    reference = module._reference_model
    assert reference.encoder.conv1.weight is module.model.encoder.conv1.weight  # shared, not copied
    lora = [(n, p) for n, p in module.model.trainable_parameters() if "lora_A" in n][0]
    assert dict(reference.named_parameters())[lora[0]] is not lora[1]
    assert not any(k.startswith("_reference") for k in module.state_dict())


def test_frozen_copy_follows_the_policy_to_its_device_and_dtype(pairs):
    """Moving or casting the module moves the shared frozen weights in place; the reference's own
    copies (LoRA, projector, buffers) follow (on a GPU they stayed on the CPU: mat1 on cuda, weight on cpu)."""
    module = DPOModule(tiny_model(), reference="frozen_copy").to(torch.float64)
    reference = module._reference_model
    assert {p.dtype for p in reference.parameters()} == {torch.float64}
    assert reference.encoder.conv1.weight is module.model.encoder.conv1.weight  # still shared
    _, batch = first_batch(pairs, module.processor, "val")
    batch.audio = torch.utils._pytree.tree_map(
        lambda t: t.double() if torch.is_tensor(t) and t.is_floating_point() else t, batch.audio)
    chosen, rejected = module.reference_logps(batch)
    assert torch.isfinite(chosen).all() and torch.isfinite(rejected).all()  # no float32-vs-float64 matmul error
    module.to("meta")  # no in-place conversion: new tensors, and the reference's follow too
    assert {t.device.type for t in [*reference.parameters(), *reference.buffers()]} == {"meta"}


def test_precomputed_reference_equals_recomputed_and_is_loaded_from_disk(pairs, tmp_path):
    model_args = dict(reference_cache_dir=str(tmp_path / "cache"))
    module = DPOModule(as_kd_checkpoint(tiny_model()), reference="precomputed", **model_args)
    datamodule, batch = first_batch(pairs, module.processor, "val")
    module.prepare_reference_table(datamodule, ["val"])
    assert len(module.reference_cache_files) == 1 and module.reference_cache_files[0].is_file()
    precomputed_c, precomputed_r = module.reference_logps(batch)

    frozen = DPOModule(as_kd_checkpoint(tiny_model()), reference="frozen_copy")
    recomputed_c, recomputed_r = frozen.reference_logps(batch)
    torch.testing.assert_close(precomputed_c, recomputed_c, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(precomputed_r, recomputed_r, atol=1e-4, rtol=1e-5)

    # a rerun (same reference weights, same data) loads the cache: no forward pass at all
    rerun = DPOModule(as_kd_checkpoint(tiny_model()), reference="precomputed", **model_args)
    calls = []
    rerun.model.register_forward_hook(lambda *args: calls.append(1))
    rerun.prepare_reference_table(datamodule, ["val"])
    assert not calls and rerun.reference_cache_files == module.reference_cache_files
    torch.testing.assert_close(rerun.reference_logps(batch)[0], precomputed_c)

    # other reference weights → another cache file; trained weights with no cache → a clear error
    other = DPOModule(as_kd_checkpoint(tiny_model(), seed=4), reference="precomputed", **model_args)
    other.prepare_reference_table(datamodule, ["val"])
    assert other.reference_cache_files != module.reference_cache_files
    # same weights, another prompt layout → another cache file (log-probs differ)
    prompted = DPOModule(as_kd_checkpoint(tiny_model()), reference="precomputed", **model_args)
    prompted.model.processor.system_prompt = "Be brief."
    prompted.prepare_reference_table(datamodule, ["val"])
    assert prompted.reference_cache_files[0] not in module.reference_cache_files
    trained = DPOModule(tiny_model(), reference="precomputed", reference_cache_dir=str(tmp_path / "empty"))
    with torch.no_grad():
        next(p for _, p in trained.model.trainable_parameters()).add_(1.0)
    with pytest.raises(RuntimeError, match="no longer"):
        trained.prepare_reference_table(datamodule, ["val"])


def test_a_damaged_reference_cache_is_computed_again(pairs, tmp_path, caplog):
    """A cache file cut short (outside its atomic write, e.g. a partial copy of the run folder)
    ended the stage's setup with a torch.load traceback; now it is named and computed again."""
    cache = dict(reference="precomputed", reference_cache_dir=str(tmp_path / "cache"))
    module = DPOModule(as_kd_checkpoint(tiny_model()), **cache)
    datamodule, batch = first_batch(pairs, module.processor, "val")
    module.prepare_reference_table(datamodule, ["val"])
    [path] = module.reference_cache_files
    path.write_bytes(path.read_bytes()[:100])
    rerun = DPOModule(as_kd_checkpoint(tiny_model()), **cache)
    rerun.prepare_reference_table(datamodule, ["val"])
    assert f"{path}: unreadable reference log-probs (RuntimeError: " in caplog.text
    assert rerun.reference_table == module.reference_table
    assert rerun.reference_cache_files == [path] and torch.load(path, weights_only=True)["ids"]


def dpo_config(tmp_path: Path, pairs: dict[str, Path], reference: str, **trainer) -> Path:
    config_path = run_config(tmp_path, {"train": pairs["train"], "val": pairs["val"], "test": pairs["test"]},
                             **trainer)
    config = yaml.safe_load(config_path.read_text())
    config["model"]["class_path"] = "speechsum.stages.dpo.DPOModule"
    config["model"]["init_args"].update(
        {"beta": 0.5, "reference": reference, "learning_rate": 0.01, "warmup_steps": 2, "num_val_samples": 0}
    )
    config["data"].update({"require_summary": False, "preference": True})
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def test_end_to_end_dpo_raises_held_out_preference_accuracy(tmp_path, pairs):
    from speechsum.cli import lightning_cli

    config = dpo_config(tmp_path, pairs, "precomputed", max_epochs=3, precision="bf16-mixed")
    cli = lightning_cli(["--config", str(config)], run=False)
    before = cli.trainer.validate(cli.model, datamodule=cli.datamodule)[0]
    assert before["val/rewards/margin"] == pytest.approx(0.0, abs=2e-3)  # policy == reference (bf16 noise)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    after = cli.trainer.callback_metrics
    assert float(after["val/rewards/accuracy"]) > 0.5
    assert float(after["val/rewards/margin"]) > before["val/rewards/margin"] + 0.5
    assert float(after["val/loss"]) < before["val/loss"]
    assert list((tmp_path / "run" / "reference_logps").glob("reference-*.pt"))
    logged = (next((tmp_path / "run").glob("logs/version_*/metrics.csv"))).read_text().splitlines()[0]
    for name in ("train/loss", "train/rewards/chosen", "train/rewards/rejected", "train/rewards/margin",
                 "train/rewards/accuracy", "train/logps/chosen", "train/logps/rejected", "val/rewards/accuracy"):
        assert name in logged, name


def saved_dpo_checkpoint(folder: Path, reference: str) -> tuple[DPOModule, Path]:
    module = DPOModule(as_kd_checkpoint(tiny_model()), reference=reference)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": {}}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, folder / f"{reference}.ckpt")
    return module, folder / f"{reference}.ckpt"


def test_a_lora_disabled_checkpoint_is_refused_by_the_loaders(tmp_path):
    from speechsum.models.checkpoint import load_speech_llm

    module, path = saved_dpo_checkpoint(tmp_path, "frozen_copy")
    module.load_weights(str(path))  # frozen weights untouched: init_from such a checkpoint works
    module, path = saved_dpo_checkpoint(tmp_path, "lora_disabled")
    refused = r"lora_disabled\.ckpt: cannot be rebuilt .* folded its init_from"
    with pytest.raises(ValueError, match=refused):
        load_speech_llm(path)
    with pytest.raises(ValueError, match=refused):
        module.load_weights(str(path))
