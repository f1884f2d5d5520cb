"""A few training steps of every stage (SFT, on-policy KD, DPO) on one GPU, offline: throughput and memory.

The student is a random-init composed speech LLM of the paper's shape at ~0.5B parameters: a
Whisper-tiny-sized encoder (frozen) + MLP projector (trained) + a Qwen2-0.5B-shaped LM (LoRA r=16,
alpha=32); the KD teacher is a second random-init Qwen2-0.5B-shaped LM; DPO's reference is the
stage's configured mode. Everything is built from config dicts and synthetic audio: nothing is
downloaded. Random-init models never stop early, so KD always generates ``--max-new-tokens``
(the worst case). Per stage it prints samples/s, tokens/s (prompt incl. audio positions +
response tokens; KD: + generated tokens/s) over the steps after the first (warm-up), and peak
GPU memory (``torch.cuda.max_memory_allocated``; with ``--tiny`` on a CPU: the process's peak RSS).

MFU: ``torch.utils.flop_counter.FlopCounterMode`` counts the matmul and attention FLOPs of the
warm-up step, everything the step runs (encoder, forward, backward; KD: the rollout and the
teacher; DPO: the reference), as FLOPs per token; model TFLOP/s = FLOPs/token x tokens/s, and
MFU = model TFLOP/s / the GPU's dense bf16 peak (``--peak-tflops``; known for H100/H200 SXM). With
LoRA and a frozen encoder no weight gradients are computed for most weights, so a step's FLOPs are
about 4N per LM token, not the 6N of full fine-tuning. The script also times an 8192^3 bf16
matmul and gives MFU against it (``mfu_vs_matmul``), the ceiling that this card reaches in practice.

    bash benchmarks/gpu_check.sh                      # needs one NVIDIA GPU
    python benchmarks/gpu_check.py --tiny --accelerator cpu --steps 2   # smoke test, any machine
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import soundfile as sf
import torch
from torch.utils.flop_counter import FlopCounterMode

from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.policy import TrainingPolicy
from speechsum.stages.dpo.module import DPOModule
from speechsum.stages.kd.module import OnPolicyKDModule
from speechsum.stages.kd.teachers import HFTeacher
from speechsum.stages.sft import SFTModule

# Qwen2-0.5B's shape (494M parameters with its 151,936-entry vocabulary).
QWEN2_05B = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
             "max_position_embeddings": 32768, "rope_theta": 1000000.0, "tie_word_embeddings": True}
WHISPER_TINY = {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536,
                "decoder_layers": 1, "decoder_attention_heads": 6, "decoder_ffn_dim": 1536, "num_mel_bins": 80}
# --tiny: configs/model/composed_tiny.yaml's sizes (CPU smoke test, same code path)
TINY_LLM = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 272, "max_position_embeddings": 2048}
TINY_ENCODER = {"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 64, "num_mel_bins": 80}
STAGES = ("sft", "kd", "dpo")
# Dense bf16 peak TFLOP/s of the SXM cards' spec sheets, matched against torch.cuda.get_device_name.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 70.0}
WORDS = "budget launch owner review deadline meeting client design update contract risk team plan".split()


def write_data(folder: Path, count: int, audio_seconds: float, response_words: int, seed: int = 0) -> Path:
    """``count`` synthetic clips (tones + noise, 16 kHz) with every field any stage needs."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        t = np.arange(int(audio_seconds * 16000)) / 16000
        wave = 0.2 * np.sin(2 * np.pi * rng.uniform(200, 800) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(folder / f"clip{i}.wav", wave.astype(np.float32), 16000)
        words = lambda n: " ".join(rng.choice(WORDS, n))  # noqa: E731
        summary = words(response_words)
        rows.append({"id": f"clip{i}", "audio": f"clip{i}.wav", "instruction": "Summarise the meeting.",
                     "transcript": words(4 * response_words), "summary": summary, "chosen": summary,
                     "rejected": words(response_words)})
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one SDPA forward: 2·b·h·s_q·s_k·(d_qk + d_v) for QKᵀ and PV, with the query's h heads
    (grouped key/value heads are broadcast, GQA). Shapes are (b, h, s, d)."""
    batch, heads, query_len, head_dim = query_shape
    return 2 * batch * heads * query_len * key_shape[-2] * (head_dim + value_shape[-1])


def attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one SDPA backward, torch's count: QKᵀ recomputed, dQ and dK (d_qk each), dV and dP (d_v each):
    2·b·h·s_q·s_k·(3·d_qk + 2·d_v)."""
    batch, heads, query_len, head_dim = query_shape
    return 2 * batch * heads * query_len * key_shape[-2] * (3 * head_dim + 2 * value_shape[-1])


# torch's own SDPA formulas reject grouped key/value heads before torch 2.13 (and skip the CPU
# flash kernel); these count them. Ops this torch lacks are left out.
ATTENTION_FLOP_FORMULAS = {
    getattr(torch.ops.aten, f"_scaled_dot_product_{kernel}{suffix}"): formula
    for kernel in ("efficient_attention", "flash_attention", "cudnn_attention", "flash_attention_for_cpu")
    for suffix, formula in (("", attention_flops), ("_backward", attention_backward_flops))
    if hasattr(torch.ops.aten, f"_scaled_dot_product_{kernel}{suffix}")
}


class ThroughputMeter(L.Callback):
    """Wall time per training step (device synchronised), samples and tokens; steps after ``warmup``."""

    def __init__(self, warmup: int = 1):
        self.warmup = warmup
        self.steps = self.samples = self.tokens = self.generated = 0
        self.seconds = self.generation_seconds = 0.0
        self.flops_per_token = None  # counted on the first (warm-up, untimed) step
        self._counter = None

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(pl_module)
        if batch_idx == 0:
            self._counter = FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOP_FORMULAS)
            self._counter.__enter__()
        self._started = time.perf_counter()

    def on_exception(self, trainer, pl_module, exception):
        if self._counter is not None:  # leave no FLOP-counting mode behind a failed step
            self._counter.__exit__(None, None, None)
            self._counter = None

    def on_before_backward(self, trainer, pl_module, loss):
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(f"non-finite loss {float(loss.detach())} at step {trainer.global_step}")
        rollout = getattr(pl_module, "_rollout_timing", None)  # KD: this step's own samples
        self._rollout = (int(rollout.completion_mask.sum()), rollout.generation_seconds) if rollout else (0, 0.0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync(pl_module)
        elapsed = time.perf_counter() - self._started
        masks = [batch.prompt_mask, batch.response_mask, batch.chosen_mask, batch.rejected_mask]
        generated, generation_seconds = self._rollout
        tokens = sum(int(m.sum()) for m in masks if m is not None) + generated
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops_per_token = self._counter.get_total_flops() / max(tokens, 1)
            self._counter = None
        if batch_idx < self.warmup:
            return
        self.steps += 1
        self.samples += len(batch)
        self.tokens += tokens
        self.generated += generated
        self.generation_seconds += generation_seconds
        self.seconds += elapsed

    def result(self) -> dict:
        seconds = max(self.seconds, 1e-9)
        result = {"timed_steps": self.steps, "s_per_step": self.seconds / max(self.steps, 1),
                  "samples_per_s": self.samples / seconds, "tokens_per_s": self.tokens / seconds}
        if self.generated:
            result["generated_tokens_per_s"] = self.generated / max(self.generation_seconds, 1e-9)
        if self.flops_per_token is not None:
            result["flops_per_token"] = self.flops_per_token
            result["model_tflops_per_s"] = self.flops_per_token * result["tokens_per_s"] / 1e12
        return result


def peak_tflops(device_name: str) -> float | None:
    """The spec-sheet dense bf16 peak of a known card (``PEAK_BF16_TFLOPS``), else None."""
    return next((peak for card, peak in PEAK_BF16_TFLOPS.items() if card in device_name), None)


def matmul_tflops(size: int = 8192, repeats: int = 10) -> float:
    """Measured bf16 TFLOP/s of a ``size``^3 matmul on the current GPU (mean of ``repeats`` after 3 warm-ups)."""
    a, b = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def build_module(stage: str, args: argparse.Namespace, work: Path) -> L.LightningModule:
    llm, encoder = (TINY_LLM, TINY_ENCODER) if args.tiny else (QWEN2_05B, WHISPER_TINY)
    policy = TrainingPolicy(train_encoder=False, train_projector=True, llm="lora", lora_r=16, lora_alpha=32,
                            lora_dropout=0.0, gradient_checkpointing=args.gradient_checkpointing)
    model = ComposedSpeechLLM(llm=llm, encoder=encoder, end_of_turn="<|im_end|>", policy=policy, init_seed=0)
    common = {"learning_rate": 1e-4, "warmup_steps": 1, "num_val_samples": 0}
    if stage == "sft":
        return SFTModule(model, **common)
    if stage == "kd":
        dtype = "bfloat16" if args.precision.startswith("bf16") else None  # the teacher's weights
        teacher = HFTeacher(model=llm, end_of_turn="<|im_end|>", dtype=dtype, init_seed=1)
        return OnPolicyKDModule(model, teacher, max_new_tokens=args.max_new_tokens, lmbda=1.0, **common)
    return DPOModule(model, reference=args.dpo_reference, reference_cache_dir=str(work / "reference_logps"), **common)


def run_stage(stage: str, args: argparse.Namespace, manifest: Path, work: Path) -> dict:
    module = build_module(stage, args, work)
    parameters = sum(p.numel() for p in module.model.parameters())
    trainable = sum(p.numel() for _, p in module.model.trainable_parameters())
    data = SpeechSumDataModule(train_manifest=str(manifest), max_batch_seconds=args.batch_size * args.audio_seconds + 1,
                               max_batch_size=args.batch_size, num_buckets=1, require_summary=stage == "sft",
                               require_transcript=stage == "kd", preference=stage == "dpo", seed=0)
    meter = ThroughputMeter(warmup=1)
    trainer = L.Trainer(accelerator=args.accelerator, devices=1, precision=args.precision, max_steps=args.steps,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        default_root_dir=str(work / stage), callbacks=[meter])
    if args.accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    result = {"stage": stage, "parameters_M": parameters / 1e6, "trainable_M": trainable / 1e6,
              **meter.result(), "wall_s": time.perf_counter() - started}
    if args.accelerator == "gpu":
        result["peak_memory_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    else:  # ru_maxrss: KiB on Linux; the whole process's peak so far, not this stage's alone
        result["peak_rss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    del trainer, module
    gc.collect()
    if args.accelerator == "gpu":
        torch.cuda.empty_cache()
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny random-init models (a smoke test that runs on a CPU)")
    p.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu", help="where to run (cpu: only with --tiny)")
    p.add_argument("--precision", default="bf16-mixed", help="Lightning precision, e.g. bf16-mixed, 32-true")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run: sft,kd,dpo")
    p.add_argument("--steps", type=int, default=6, help="training steps per stage (the first is warm-up, not timed)")
    p.add_argument("--batch-size", type=int, default=4, help="examples per step")
    p.add_argument("--audio-seconds", type=float, default=None, help="seconds per synthetic clip (default 30; --tiny 2)")
    p.add_argument("--response-words", type=int, default=None, help="words per summary (default 80; --tiny 6)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="KD sample length (default 128; --tiny 8)")
    p.add_argument("--dpo-reference", choices=("precomputed", "frozen_copy", "lora_disabled"), default="frozen_copy",
                   help="DPO reference mode (frozen_copy: a reference forward every step, the heaviest)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="activation checkpointing in the LM")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the GPU's dense bf16 peak for MFU (default: the spec sheet's for H100/H200/A100/L40S/A10G)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def flops_text(result: dict) -> str:
    """``, 1.23 GFLOP/token, 45.6 TFLOP/s, MFU 4.6 %`` for one stage's result (the parts it has)."""
    if "flops_per_token" not in result:
        return ""
    text = f", {result['flops_per_token'] / 1e9:.3g} GFLOP/token, {result['model_tflops_per_s']:.3g} TFLOP/s"
    return text + (f", MFU {100 * result['mfu']:.1f} %" if "mfu" in result else "")


def fail(message: str) -> None:
    """Print ``gpu_check: message`` to stderr and exit with status 2 (nothing was run)."""
    print(f"gpu_check: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        fail("no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False). Run it on a "
                 "machine with an NVIDIA GPU and a CUDA build of torch, or try `--tiny --accelerator cpu`.")
    if args.accelerator == "cpu" and not args.tiny:
        fail("a ~0.5B model on a CPU takes far too long; add --tiny for the CPU smoke test")
    args.audio_seconds = args.audio_seconds or (2.0 if args.tiny else 30.0)
    args.response_words = args.response_words or (6 if args.tiny else 80)
    args.max_new_tokens = args.max_new_tokens or (8 if args.tiny else 128)
    stages = args.stages.split(",")
    if any(s not in STAGES for s in stages):
        fail(f"--stages takes {','.join(STAGES)}, got {args.stages}")
    device = torch.cuda.get_device_name(0) if args.accelerator == "gpu" else "cpu"
    print(f"gpu_check on {device}: torch {torch.__version__}, precision {args.precision}, batch {args.batch_size} x "
          f"{args.audio_seconds:g} s audio, {args.steps} steps per stage", flush=True)
    peak = args.peak_tflops or (peak_tflops(device) if args.accelerator == "gpu" else None)
    matmul = matmul_tflops() if args.accelerator == "gpu" else None
    if matmul:
        print(f"bf16 8192^3 matmul: {matmul:.0f} TFLOP/s; spec-sheet peak: {peak or 'unknown'}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(tmp)
        manifest = write_data(work, args.steps * args.batch_size, args.audio_seconds, args.response_words)
        for stage in stages:
            results.append(run_stage(stage, args, manifest, work))
            r = results[-1]
            if peak and "model_tflops_per_s" in r:
                r["mfu"] = r["model_tflops_per_s"] / peak
            if matmul and "model_tflops_per_s" in r:
                r["mfu_vs_matmul"] = r["model_tflops_per_s"] / matmul
            memory = f"peak GPU memory {r['peak_memory_GiB']:.2f} GiB" if "peak_memory_GiB" in r else \
                f"peak RSS {r['peak_rss_GiB']:.2f} GiB"
            generated = f", generation {r['generated_tokens_per_s']:.0f} tok/s" if "generated_tokens_per_s" in r else ""
            print(f"{stage:>4}: {r['parameters_M']:.3g}M params ({r['trainable_M']:.3g}M trainable), "
                  f"{r['s_per_step']:.3f} s/step, {r['samples_per_s']:.2f} samples/s, {r['tokens_per_s']:.0f} tokens/s"
                  f"{generated}, {memory}" + flops_text(r), flush=True)
    if args.json:  # a script of its own (run on the GPU machine): no benchmarks.common.write_json
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"device": device, "args": vars(args), "peak_tflops": peak,
                                               "matmul_tflops": matmul, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
