"""Native backbones (Qwen2-Audio, Phi-4-multimodal) with the random-init tiny configs of
``configs/model/*_tiny.yaml``: one training step, generation, batched vs single generation."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer

from speechsum.data.batch import SpeechBatch, SpeechCollator
from speechsum.data.manifest import Example
from speechsum.models.base import SpeechLLM
from speechsum.models.phi4mm import Phi4MultimodalSpeechLLM
from speechsum.models.policy import TrainingPolicy

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"
BACKBONES = ["qwen2_audio_tiny", "phi4mm_tiny"]
DURATIONS = [0.6, 1.0, 0.8]  # seconds; the tiny Qwen2-Audio encoder takes at most 1 s
LONGEST = int(np.argmax(DURATIONS))


def build_backbone(name: str, **overrides) -> SpeechLLM:
    """The backbone of a LightningCLI model fragment (``model.init_args.model``), init args overridden."""
    spec = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["model"]["init_args"]["model"]
    module, cls = spec["class_path"].rsplit(".", 1)
    args = {**spec["init_args"], **overrides}
    if isinstance(args.get("policy"), dict):
        args["policy"] = TrainingPolicy(**args["policy"])
    return getattr(importlib.import_module(module), cls)(**args)


def make_items() -> list[tuple[Example, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        (
            Example(
                id=str(i),
                audio="x",
                instruction="Summarise the call",
                duration=seconds,
                summary="ok " * (i + 2),
            ),
            (0.1 * rng.standard_normal(int(16_000 * seconds))).astype(np.float32),
        )
        for i, seconds in enumerate(DURATIONS)
    ]


@pytest.fixture(params=BACKBONES)
def backbone(request: pytest.FixtureRequest) -> SpeechLLM:
    torch.manual_seed(0)
    return build_backbone(request.param)


@pytest.fixture
def batch(backbone: SpeechLLM) -> SpeechBatch:
    return SpeechCollator(backbone.processor)(make_items())


def param_names(model: torch.nn.Module, modules: list[torch.nn.Module]) -> set[str]:
    ids = {id(p) for module in modules for p in module.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_prompts_hold_one_placeholder_per_audio_token(backbone: SpeechLLM, batch: SpeechBatch) -> None:
    mask = batch.prompt_mask
    assert (mask[:, -1] == 1).all() and (mask[:, 1:] >= mask[:, :-1]).all()  # left-padded
    placeholders = (batch.prompt_ids == backbone.audio_token_id).sum(1)
    audio = batch.audio
    if "feature_attention_mask" in audio:  # Qwen2-Audio: every clip padded to the fixed 1 s (100 frames)
        frames = audio["feature_attention_mask"].sum(1)
        assert audio["input_features"].shape[-1] == 2 * backbone.hf.config.audio_config.max_source_positions
        assert frames.tolist() == [round(100 * seconds) for seconds in DURATIONS]
        expected = backbone.hf.model.audio_tower._get_feat_extract_output_lengths(frames)[1]
    else:  # Phi-4-multimodal: features padded to the longest clip, one token per 80 ms
        assert audio["audio_attention_mask"].sum(1).tolist() == [round(100 * s) - 2 for s in DURATIONS]
        expected = audio["audio_embed_sizes"]
    assert placeholders.tolist() == expected.tolist()
    assert placeholders.argsort().tolist() == np.argsort(DURATIONS).tolist()


def test_qwen2_audio_rejects_clips_longer_than_its_fixed_input() -> None:
    processor = build_backbone("qwen2_audio_tiny").processor
    assert processor.max_audio_seconds == 1.0
    with pytest.raises(ValueError, match="fixed 1 s"):
        processor.encode_prompts([np.zeros(16_001, dtype=np.float32)], ["Summarise"])


def test_training_step(backbone: SpeechLLM, batch: SpeechBatch) -> None:
    groups = backbone.module_groups()
    trainable = {name for name, _ in backbone.trainable_parameters()}
    projector = param_names(backbone, groups.projector)
    lora = {name for name in trainable if "lora_" in name}
    assert projector and lora
    assert trainable == projector | lora
    assert not trainable & param_names(backbone, [groups.encoder])
    # LoRA sits only in the LLM (not in the audio or vision encoders), on every linear layer there
    llm_modules = {id(m) for m in groups.llm.modules()}
    lora_layers = [m for m in backbone.modules() if isinstance(m, LoraLayer)]
    assert lora_layers and all(id(m) in llm_modules for m in lora_layers)
    wrapped = {id(sub) for layer in lora_layers for sub in layer.modules()}
    assert all(id(m) in wrapped for m in groups.llm.modules() if isinstance(m, torch.nn.Linear))

    backbone.train()
    before = {name: p.detach().clone() for name, p in backbone.trainable_parameters()}
    logprobs = backbone.response_logprobs(batch, batch.response_ids, batch.response_mask)
    assert logprobs.shape == batch.response_ids.shape
    loss = -logprobs.sum() / batch.response_mask.sum()
    assert torch.isfinite(loss)
    loss.backward()
    optimizer = torch.optim.AdamW([p for _, p in backbone.trainable_parameters()], lr=1e-2)
    optimizer.step()
    changed = {name for name, p in backbone.trainable_parameters() if not torch.equal(p, before[name])}
    assert changed & projector and changed & lora
    assert all(p.grad is None for name, p in backbone.named_parameters() if name not in trainable)


def test_generate(backbone: SpeechLLM, batch: SpeechBatch) -> None:
    backbone.eval()
    ids, mask = backbone.generate(batch, max_new_tokens=5)
    assert ids.dtype == torch.long and ids.shape == mask.shape
    assert ids.shape[0] == len(DURATIONS) and 1 <= ids.shape[1] <= 5
    assert set(mask.unique().tolist()) <= {0, 1}
    assert (mask[:, 1:] <= mask[:, :-1]).all()  # 1 up to the first stop token, 0 after
    assert not (ids == backbone.audio_token_id).any()
    assert len(backbone.processor.decode_responses(ids, mask)) == len(DURATIONS)


def test_batched_generation_matches_single(backbone: SpeechLLM) -> None:
    backbone.eval()
    items = make_items()
    collate = SpeechCollator(backbone.processor)
    batched, batched_mask = backbone.generate(collate(items), max_new_tokens=5)
    single, single_mask = backbone.generate(collate([items[LONGEST]]), max_new_tokens=5)
    n = int(single_mask[0].sum())
    assert torch.equal(batched[LONGEST, :n], single[0, :n])
    assert torch.equal(batched_mask[LONGEST, :n], single_mask[0, :n])


FROZEN = TrainingPolicy(llm="frozen")  # no LoRA layers, so saved weights keep the checkpoint's names


def save_backbone(backbone: SpeechLLM, directory: Path) -> None:
    backbone.hf.save_pretrained(directory)
    backbone.processor.processor.save_pretrained(directory)


@pytest.mark.parametrize("name", BACKBONES)
def test_loads_a_saved_checkpoint(name: str, tmp_path: Path) -> None:
    """The hub-id path, offline: a saved tiny model and processor reload as the same backbone."""
    saved = build_backbone(name, policy=FROZEN).eval()
    save_backbone(saved, tmp_path)
    loaded = type(saved)(str(tmp_path), policy=FROZEN).eval()
    assert loaded.processor.tokenizer.padding_side == "left"
    assert loaded.processor.max_audio_seconds == saved.processor.max_audio_seconds
    batches = [SpeechCollator(m.processor)(make_items()) for m in (saved, loaded)]
    assert torch.equal(batches[0].prompt_ids, batches[1].prompt_ids)
    logprobs = [
        m.response_logprobs(b, b.response_ids, b.response_mask) for m, b in zip((saved, loaded), batches)
    ]
    torch.testing.assert_close(logprobs[0], logprobs[1])


def test_phi4mm_merges_the_speech_lora(tmp_path: Path) -> None:
    saved = build_backbone("phi4mm_tiny", policy=FROZEN)
    save_backbone(saved, tmp_path)
    adapter = get_peft_model(
        build_backbone("phi4mm_tiny", policy=FROZEN).hf, LoraConfig(r=2, target_modules=["qkv_proj"])
    )
    for name, parameter in adapter.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter)
    adapter.save_pretrained(tmp_path / "speech-lora")
    merged = Phi4MultimodalSpeechLLM(str(tmp_path), speech_lora="speech-lora", policy=FROZEN)
    for layer in range(len(merged.hf.model.layers)):
        qkv = adapter.base_model.model.model.layers[layer].self_attn.qkv_proj
        expected = saved.hf.model.layers[layer].self_attn.qkv_proj.weight + qkv.get_delta_weight("default")
        torch.testing.assert_close(merged.hf.model.layers[layer].self_attn.qkv_proj.weight, expected)
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    encoder = merged.module_groups().encoder.state_dict()
    assert all(torch.equal(v, saved.module_groups().encoder.state_dict()[k]) for k, v in encoder.items())


# How far a left-padded row's log-probs may move when scored in a batch instead of alone.
# Qwen2-Audio masks padding (float noise only). Phi-4-MM's conformer convolutions see the
# padded frames of shorter clips, a known limit (docs/results.md), measured up to ~3e-3.
BATCH_TOLERANCE = {"qwen2_audio_tiny": 1e-4, "phi4mm_tiny": 1e-2}


@pytest.mark.parametrize("name", BACKBONES)
def test_every_row_scores_as_it_would_alone(name: str) -> None:
    backbone = build_backbone(name).eval()
    items = make_items()
    collate = SpeechCollator(backbone.processor)
    batch = collate(items)
    with torch.no_grad():
        together = backbone.response_logprobs(batch, batch.response_ids, batch.response_mask)
        for row, item in enumerate(items):
            alone_batch = collate([item])
            alone = backbone.response_logprobs(alone_batch, alone_batch.response_ids, alone_batch.response_mask)
            width = alone.shape[1]
            torch.testing.assert_close(together[row, :width], alone[0], atol=BATCH_TOLERANCE[name], rtol=0)


@pytest.mark.parametrize("name", BACKBONES)
def test_system_prompt_comes_first(name: str) -> None:
    backbone = build_backbone(name, system_prompt="You write short minutes.")
    batch = SpeechCollator(backbone.processor)(make_items()[:1])
    prompt = backbone.processor.tokenizer.decode(batch.prompt_ids[0][batch.prompt_mask[0].bool()])
    assert prompt.index("You write short minutes.") < prompt.index("Summarise the call")


@pytest.mark.parametrize("samples", [1, 160, 399])
def test_phi4mm_reads_a_clip_shorter_than_one_window_as_that_clip_padded_to_one(samples: int) -> None:
    """Under 25 ms (400 samples, one analysis window) its feature extractor raised "maximum size for
    tensor at dimension 1 is N but size is 400" alone, and gave the clip no audio token in a batch."""
    backbone = build_backbone("phi4mm_tiny").eval()
    short = (0.1 * np.random.default_rng(1).standard_normal(samples)).astype(np.float32)
    example = Example(id="short", audio="x", instruction="Summarise the call", duration=samples / 16_000, summary="ok")
    collate = SpeechCollator(backbone.processor)
    alone, padded = collate([(example, short)]), collate([(example, np.pad(short, (0, 400 - samples)))])
    assert alone.audio["audio_embed_sizes"].tolist() == [1]
    torch.testing.assert_close(alone.audio["audio_input_features"], padded.audio["audio_input_features"], atol=0, rtol=0)
    batch = collate([(example, short), make_items()[0]])
    assert batch.audio["audio_embed_sizes"].tolist()[0] == 1
    with torch.no_grad():
        logprobs = backbone.response_logprobs(alone, alone.response_ids, alone.response_mask)
    assert torch.isfinite(logprobs).all()


@pytest.mark.parametrize("name", BACKBONES)
def test_a_bfloat16_model_with_its_fp32_projector_runs_without_autocast(name: str, tmp_path: Path) -> None:
    """Loaded in bf16 (as configs/model/{qwen2_audio,phi4mm}.yaml do), the trained projector is
    kept in fp32; outside autocast (summarize, serve, a loaded export) the forward raised "mat1 and
    mat2 must have the same dtype" (Qwen2-Audio) or "Input type (float) and bias type (c10::BFloat16)"
    (Phi-4-MM). It now runs and scores as the same weights in fp32 do, to bf16 precision."""
    saved = build_backbone(name, policy=FROZEN)
    saved.hf.to(torch.bfloat16)
    save_backbone(saved, tmp_path)
    models = {dtype: build_backbone(name, model=str(tmp_path), dtype=dtype).eval() for dtype in ("bfloat16", "float32")}
    assert next(models["bfloat16"].module_groups().projector[0].parameters()).dtype == torch.float32
    assert models["bfloat16"].hf.get_input_embeddings().weight.dtype == torch.bfloat16
    batch = SpeechCollator(models["float32"].processor)(make_items())
    with torch.no_grad():
        scores = {dtype: m.response_logprobs(batch, batch.response_ids, batch.response_mask) for dtype, m in models.items()}
    torch.testing.assert_close(scores["bfloat16"], scores["float32"], atol=0.1, rtol=0)
    ids, mask = models["bfloat16"].generate(batch, max_new_tokens=3)
    assert ids.shape[0] == len(DURATIONS)


@pytest.mark.parametrize("samples", [1, 160, 320])
def test_qwen2_audio_reads_a_clip_shorter_than_one_window_as_that_clip_padded_to_one(samples: int) -> None:
    """Under 25 ms (400 samples, n_fft) Qwen2-Audio's processor gave the clip no audio token, alone
    or in a batch: the model was asked to summarise a recording it never received."""
    backbone = build_backbone("qwen2_audio_tiny").eval()
    short = (0.1 * np.random.default_rng(1).standard_normal(samples)).astype(np.float32)
    example = Example(id="short", audio="x", instruction="Summarise the call", duration=samples / 16_000, summary="ok")
    collate = SpeechCollator(backbone.processor)
    alone, padded = collate([(example, short)]), collate([(example, np.pad(short, (0, 400 - samples)))])
    assert int((alone.prompt_ids == backbone.audio_token_id).sum()) == 1
    torch.testing.assert_close(alone.audio["input_features"], padded.audio["input_features"], atol=0, rtol=0)
    batch = collate([(example, short), make_items()[0]])
    assert int((batch.prompt_ids[0] == backbone.audio_token_id).sum()) == 1
