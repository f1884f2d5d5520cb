"""Tokens/s of ``SpeechLLM.generate``: HF ``generate`` vs the static-cache decode path
(``speechsum/models/decode.py``), on the benchmark student's shapes, interleaved in one process.

The student is configs/sft.yaml's: a Whisper tiny.en-sized encoder (frozen; run once per batch by
``precompute_audio``, as KD and pairs do), the CTC projector with compression, and the backbone LM of
configs/benchmark/text_lm.yaml (Phi, hidden 128, 4 layers, 2 heads, partial rotary, BPE vocab
4096) with LoRA r=16 α=32 on every linear layer; all random-init (speed does not depend on the
weights; a random LM never emits its stop token, so every row decodes ``max_new_tokens``), except
that the CTC blank logit is raised until compression keeps ``--ctc-keep`` of the audio frames, the
share an aligned projector keeps (``--ctc-keep 1``: the random projector's 45–85 %). Each
repeat times the two paths back to back on the same batch (same seed: the last column counts
the runs whose outputs, greedy or sampled, were equal; in fp32 they all are, under bf16 autocast
the merged LoRA weights round differently); tokens/s are medians over repeats and ratios the median of the
per-repeat ratios: for the whole ``generate`` call, without the prompt embedding (encoder frames →
CTC projector over the 4096-token vocabulary → placeholders; the same code in both paths), and of
the token loops alone (also without the prefill, the LM's forward over the prompt).

Run: ``OMP_NUM_THREADS=1 python -m benchmarks.decode_speed [--repeats 5] [--bf16]``
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import numpy as np
import torch

from speechsum.data.batch import SpeechBatch, SpeechCollator
from speechsum.data.manifest import Example
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.projectors import ctc_keep_mask

STUDENT_LLM = {  # configs/benchmark/text_lm.yaml, vocab_size = the benchmark BPE's 4096
    "model_type": "phi", "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
    "num_attention_heads": 2, "max_position_embeddings": 2048, "tie_word_embeddings": False, "vocab_size": 4096,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
}
WHISPER_TINY = {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536,
                "decoder_layers": 1, "decoder_attention_heads": 6, "decoder_ffn_dim": 64, "num_mel_bins": 80}
INSTRUCTION = "Write a short summary of the call: who spoke, what was decided, and the next steps."


def build_student() -> ComposedSpeechLLM:
    return ComposedSpeechLLM(llm=STUDENT_LLM, encoder=WHISPER_TINY, projector="ctc", end_of_turn="<|im_end|>",
                             user_prompt="Transcript:\n{audio}\n\n{instruction}")


def emulate_alignment(model: ComposedSpeechLLM, batch: SpeechBatch, keep: float) -> float:
    """Raise the CTC blank logit until at most ``keep`` of the batch's audio frames survive CTC
    compression (the random-init projector keeps most frames; an aligned one, configs/align.yaml,
    keeps about one per spoken token: ~2.5 words/s against 12.5 frames/s). Returns the kept share."""
    projector = model.projector
    with torch.no_grad():
        frames, counts = model._projector_inputs(batch.audio)
        logits = projector.logits(frames)
        valid = torch.arange(logits.shape[1])[None, :] < torch.tensor(counts)[:, None]
        for bias in torch.arange(0.0, 50.0, 0.1):
            logits[..., projector.blank] += 0.1 if bias else 0.0
            share = float((ctc_keep_mask(logits.argmax(-1), projector.blank) & valid).sum() / valid.sum())
            if share <= keep:
                break
        projector.head[1].bias[projector.blank] += float(bias)
    return share


def student_batch(model: ComposedSpeechLLM, batch_size: int, seconds: tuple[float, float], seed: int = 0) -> SpeechBatch:
    """``batch_size`` clips of noise, lengths spread over ``seconds``, encoder output precomputed."""
    rng = np.random.default_rng(seed)
    items = [
        (Example(id=str(i), audio="-", instruction=INSTRUCTION, duration=float(s), summary="-"),
         (0.1 * rng.standard_normal(int(16_000 * s))).astype(np.float32))
        for i, s in enumerate(np.linspace(*seconds, batch_size))
    ]
    batch = SpeechCollator(model.processor)(items)
    batch.audio = model.precompute_audio(batch.audio)
    return batch


class PhaseTimer:
    """Times, inside ``generate``, the two phases both paths share: the prompt embedding
    (``model.embed_prompt``: encoder frames → CTC projector → placeholders) and the prefill (the
    LM's first forward of the call, over the prompt); the rest is the token loop."""

    def __init__(self, model: ComposedSpeechLLM):
        self.embedding = self.prefill = 0.0
        self.llm_calls = 0
        embed_prompt, llm_forward = model.embed_prompt, model.llm.forward

        @functools.wraps(embed_prompt)  # generate() reads the forward's signature (position_ids)
        def timed_embed(*args, **kwargs):
            start = time.perf_counter()
            result = embed_prompt(*args, **kwargs)
            self.embedding += time.perf_counter() - start
            return result

        @functools.wraps(llm_forward)
        def timed_forward(*args, **kwargs):
            start = time.perf_counter()
            result = llm_forward(*args, **kwargs)
            if self.llm_calls == 0:
                self.prefill += time.perf_counter() - start
            self.llm_calls += 1
            return result

        model.embed_prompt, model.llm.forward = timed_embed, timed_forward

    def reset(self) -> None:
        self.embedding = self.prefill = 0.0
        self.llm_calls = 0


def timed_generate(model: ComposedSpeechLLM, timer: PhaseTimer, batch: SpeechBatch, fast: bool,
                   **kwargs) -> tuple[dict[str, float], torch.Tensor]:
    """Tokens/s of one ``generate`` through the chosen path — of the whole call ("total"), without
    the prompt embedding ("decoding") and of the token loop alone ("loop") — and the new tokens."""
    model.fast_decoding = fast
    timer.reset()
    start = time.perf_counter()
    ids, mask = model.generate(batch, **kwargs)
    seconds = time.perf_counter() - start
    tokens = float(mask.sum())
    decoding = seconds - timer.embedding
    return {"total": tokens / seconds, "decoding": tokens / decoding, "loop": tokens / (decoding - timer.prefill)}, ids


def compare(model: ComposedSpeechLLM, timer: PhaseTimer, batch: SpeechBatch, repeats: int,
            **kwargs) -> dict[str, tuple[float, float, float]]:
    """Interleaved HF / fast runs (one warm-up pair first). Per measure (see :func:`timed_generate`):
    median tokens/s of HF and of the fast path, and the median of the per-repeat ratios; and
    "same_tokens": (runs whose two outputs were equal, runs, 0)."""
    rates: dict[str, list[tuple[float, float]]] = {"total": [], "decoding": [], "loop": []}
    differ = 0
    for repeat in range(repeats + 1):
        torch.manual_seed(repeat)
        hf, hf_ids = timed_generate(model, timer, batch, fast=False, **kwargs)
        torch.manual_seed(repeat)
        fast, fast_ids = timed_generate(model, timer, batch, fast=True, **kwargs)
        if not torch.equal(hf_ids, fast_ids):
            differ += 1
        if repeat:  # the first pair warms both paths up
            for key, pairs in rates.items():
                pairs.append((hf[key], fast[key]))
    result = {
        key: (statistics.median(h for h, _ in pairs), statistics.median(f for _, f in pairs),
              statistics.median(f / h for h, f in pairs))
        for key, pairs in rates.items()
    }
    result["same_tokens"] = (repeats + 1 - differ, repeats + 1, 0.0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--seconds", type=float, nargs=2, default=(10.0, 30.0), help="clip length range")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ctc-keep", type=float, default=0.25,
                        help="share of audio frames kept by CTC compression (1: the random-init projector's)")
    parser.add_argument("--bf16", action="store_true", help="under bf16 autocast, as the stages' bf16-mixed runs")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_student()
    model.eval()
    batch = student_batch(model, args.batch_size, tuple(args.seconds))
    if args.ctc_keep < 1.0:
        emulate_alignment(model, batch, args.ctc_keep)
    kept = model.embed_prompt(batch.audio, batch.prompt_ids, batch.prompt_mask)[1].sum(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); batch {args.batch_size}, prompt "
          f"{batch.prompt_ids.shape[1]} tokens ({int(kept.min())}-{int(kept.max())} attended after CTC "
          f"compression), bf16 autocast: {args.bf16}")
    print("| decoding | new tokens | HF generate tok/s | decode path tok/s | ratio | ratio without "
          "prompt embedding | ratio of the token loops (after prefill) | same tokens |")
    print("|---|---|---|---|---|---|---|---|")
    settings = {"greedy": {}, "sampled (T=1)": {"do_sample": True},
                "sampled (T=0.8, top-p 0.9)": {"do_sample": True, "temperature": 0.8, "top_p": 0.9}}
    timer = PhaseTimer(model)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        for new_tokens in args.new_tokens:
            for label, kwargs in settings.items():
                r = compare(model, timer, batch, args.repeats, max_new_tokens=new_tokens, **kwargs)
                (hf, fast, ratio), decoding, loop = r["total"], r["decoding"], r["loop"]
                print(f"| {label} | {new_tokens} | {hf:.0f} | {fast:.0f} | {ratio:.2f}× | {decoding[2]:.2f}× | "
                      f"{loop[2]:.2f}× | {r['same_tokens'][0]}/{r['same_tokens'][1]} |", flush=True)

if __name__ == "__main__":
    main()
