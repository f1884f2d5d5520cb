"""Tokens/s of ``SpeechLLM.generate``: HF ``generate`` vs the static-cache decode path
(``speechsum/models/decode.py``), on the benchmark student's shapes, interleaved in one process.

The student is configs/sft.yaml's: a Whisper tiny.en-sized encoder (frozen; run once per batch by
``precompute_audio``, as KD and pairs do), the CTC projector with compression, and the backbone LM of
configs/benchmark/text_lm.yaml (Phi, hidden 128, 4 layers, 2 heads, partial rotary, the fused tanh
GELU; vocabulary ``--vocab``: 2210 ids, what the default preset's compact-world BPE holds, or 4096, the
full world's) with LoRA r=16 α=32 on every linear layer; all random-init (a random LM never emits its stop
token, so every row decodes ``max_new_tokens``), with two changes that make it decode like a trained
student: the CTC blank logit is raised until compression keeps ``--ctc-keep`` of the audio frames,
the share an aligned projector keeps (``--ctc-keep 1``: the random projector's 45–85 %), and the LM
head is scaled until the median top-p nucleus holds at most ``--nucleus`` ids (a random head's
distribution is nearly flat; the README run's students: median 1 id). Each repeat times the paths back
to back on the same batch: HF ``generate`` running speechsum's sampling processors (same seed: the
"same tokens" column counts the runs whose outputs, greedy or sampled, were equal; in fp32 they all
are, under bf16 autocast the merged LoRA weights round differently), the decode path, and, when
sampling, HF ``generate(do_sample=True)`` with its own warpers and multinomial draw (what a user of
HF gets). Tokens/s are medians over repeats and ratios the median of the per-repeat ratios: for the
whole ``generate`` call, without the prompt embedding (encoder frames → CTC projector over the
4096-token vocabulary → placeholders; the same code in both paths), and of the token loops alone
(also without the prefill, the LM's forward over the prompt).

Run: ``OMP_NUM_THREADS=1 python -m benchmarks.decode_speed [--repeats 5] [--bf16]``
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import numpy as np
import torch

from benchmarks.common import pipeline_llm, with_vocab
from speechsum.data.batch import SpeechBatch, SpeechCollator
from speechsum.data.manifest import Example
from speechsum.models.base import mask_after_stop, sequence_positions
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.projectors import ctc_keep_mask

WHISPER_TINY = {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536,
                "decoder_layers": 1, "decoder_attention_heads": 6, "decoder_ffn_dim": 64, "num_mel_bins": 80}
NUCLEUS = 4  # a trained student (README run): median 1 id, 90th percentile 4-5 at T 0.8 / top-p 0.9
INSTRUCTION = "Write a short summary of the call: who spoke, what was decided, and the next steps."


DEFAULT_VOCAB = 2210  # the default preset's student (compact world): its BPE's ids incl. <|audio|> etc.


def build_student(vocab_size: int = DEFAULT_VOCAB, hidden_act: str = "gelu_pytorch_tanh") -> ComposedSpeechLLM:
    """The benchmark student, random-init: configs/benchmark/text_lm.yaml's LM with ``vocab_size``
    ids (``hidden_act="gelu_new"``: Phi's unfused GELU, as the configs had before 2026-12-04)."""
    llm = {**with_vocab(pipeline_llm("configs/benchmark/text_lm.yaml"), vocab_size), "hidden_act": hidden_act}
    return ComposedSpeechLLM(llm=llm, encoder=WHISPER_TINY, projector="ctc", end_of_turn="<|im_end|>",
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


def emulate_training(model: ComposedSpeechLLM, batch: SpeechBatch, nucleus: int, temperature: float = 0.8,
                     top_p: float = 0.9) -> float:
    """Scale the LM head until the median top-p nucleus of the prompts' next-token distributions
    (at ``temperature`` / ``top_p``) holds at most ``nucleus`` ids, as a trained student's does (a
    random-init LM's distribution is nearly flat: its nucleus is most of the vocabulary, which only
    a full sort can find). Speed depends on the weights here only through this width. Returns the scale."""
    head = model.llm.get_output_embeddings()
    with torch.no_grad():
        logits = model(batch.audio, batch.prompt_ids, batch.prompt_mask,
                       sequence_positions(batch.prompt_mask), logits_to_keep=1)[:, -1].float()
        for scale in torch.arange(1.0, 200.0, 0.5).tolist():
            probs = (logits * scale / temperature).softmax(-1).sort(-1, descending=True).values
            widths = ((probs.cumsum(-1) - probs) < top_p).sum(-1)
            if float(widths.median()) <= nucleus:
                break
        head.weight.mul_(scale)
        if head.bias is not None:
            head.bias.mul_(scale)
    return scale


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


def timed_generate(model: ComposedSpeechLLM, timer: PhaseTimer, batch: SpeechBatch, path: str,
                   **kwargs) -> tuple[dict[str, float], torch.Tensor]:
    """Tokens/s of one ``generate`` through ``path`` — of the whole call ("total"), without the
    prompt embedding ("decoding") and of the token loop alone ("loop") — and the new tokens. Paths:
    "fast" (the decode path), "hf" (HF ``generate`` with speechsum's sampling processors: the
    fallback, same tokens), "hf_sampling" (HF ``generate(do_sample=True)`` with its own temperature,
    top-p and multinomial warpers, as a user of HF would sample)."""
    model.fast_decoding = path == "fast"
    timer.reset()
    start = time.perf_counter()
    if path == "hf_sampling":
        config = model.greedy_config(kwargs["max_new_tokens"])
        config.do_sample, config.top_k = True, 0
        config.temperature, config.top_p = kwargs.get("temperature", 1.0), kwargs.get("top_p", 1.0)
        with torch.no_grad():  # main() put the model in eval mode
            ids = model.generate_tokens(batch.audio, batch.prompt_ids, batch.prompt_mask, config)
        mask = mask_after_stop(ids, model.processor.stop_token_ids)
    else:
        ids, mask = model.generate(batch, **kwargs)
    seconds = time.perf_counter() - start
    tokens = float(mask.sum())
    decoding = seconds - timer.embedding
    return {"total": tokens / seconds, "decoding": tokens / decoding, "loop": tokens / (decoding - timer.prefill)}, ids


def compare(model: ComposedSpeechLLM, timer: PhaseTimer, batch: SpeechBatch, repeats: int,
            **kwargs) -> dict[str, tuple[float, float, float]]:
    """Interleaved HF / fast runs (one warm-up round first). Per measure (see :func:`timed_generate`):
    median tokens/s of HF and of the fast path, and the median of the per-repeat ratios; when
    sampling, "hf_sampling": the same for HF's own sampling (whole call) against the fast path; and
    "same_tokens": (runs whose HF and fast outputs were equal, runs, 0)."""
    rates: dict[str, list[tuple[float, float]]] = {"total": [], "decoding": [], "loop": [], "hf_sampling": []}
    differ = 0
    for repeat in range(repeats + 1):
        torch.manual_seed(repeat)
        hf, hf_ids = timed_generate(model, timer, batch, "hf", **kwargs)
        torch.manual_seed(repeat)
        fast, fast_ids = timed_generate(model, timer, batch, "fast", **kwargs)
        native = timed_generate(model, timer, batch, "hf_sampling", **kwargs)[0] if kwargs.get("do_sample") else None
        if not torch.equal(hf_ids, fast_ids):
            differ += 1
        if repeat:  # the first round warms every path up
            for key in ("total", "decoding", "loop"):
                rates[key].append((hf[key], fast[key]))
            if native is not None:
                rates["hf_sampling"].append((native["total"], fast["total"]))
    result = {
        key: (statistics.median(h for h, _ in pairs), statistics.median(f for _, f in pairs),
              statistics.median(f / h for h, f in pairs))
        for key, pairs in rates.items() if pairs
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
    parser.add_argument("--nucleus", type=int, default=NUCLEUS,
                        help="scale the random LM head until the median top-p 0.9 nucleus at temperature 0.8 holds "
                             "at most this many ids, as a trained student's (0: the random head's, nearly the whole "
                             "vocabulary)")
    parser.add_argument("--bf16", action="store_true", help="under bf16 autocast, as the stages' bf16-mixed runs")
    parser.add_argument("--vocab", type=int, default=DEFAULT_VOCAB,
                        help=f"the student LM's vocabulary (default {DEFAULT_VOCAB}: the default preset's compact-world "
                             "BPE; 4096: the full world's, as this benchmark measured until 2026-12-06)")
    parser.add_argument("--act", default="gelu_pytorch_tanh", choices=["gelu_pytorch_tanh", "gelu_new"],
                        help="the LM's GELU: the configs' fused kernel, or Phi's default 5-op gelu_new")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_student(args.vocab, args.act)
    model.eval()
    batch = student_batch(model, args.batch_size, tuple(args.seconds))
    if args.ctc_keep < 1.0:
        emulate_alignment(model, batch, args.ctc_keep)
    head_scale = emulate_training(model, batch, args.nucleus) if args.nucleus else 1.0
    kept = model.embed_prompt(batch.audio, batch.prompt_ids, batch.prompt_mask)[1].sum(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); vocabulary {args.vocab}, {args.act}; "
          f"batch {args.batch_size}, prompt "
          f"{batch.prompt_ids.shape[1]} tokens ({int(kept.min())}-{int(kept.max())} attended after CTC "
          f"compression), LM head scaled ×{head_scale:g} (median nucleus ≤ {args.nucleus or 'all'} ids), "
          f"bf16 autocast: {args.bf16}")
    print("| decoding | new tokens | HF generate tok/s | decode path tok/s | ratio | ratio without "
          "prompt embedding | ratio of the token loops (after prefill) | same tokens | HF generate, its own "
          "sampling, tok/s | ratio to it |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    settings = {"greedy": {}, "sampled (T=1)": {"do_sample": True},
                "sampled (T=0.8, top-p 0.9)": {"do_sample": True, "temperature": 0.8, "top_p": 0.9}}
    timer = PhaseTimer(model)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        for new_tokens in args.new_tokens:
            for label, kwargs in settings.items():
                r = compare(model, timer, batch, args.repeats, max_new_tokens=new_tokens, **kwargs)
                (hf, fast, ratio), decoding, loop = r["total"], r["decoding"], r["loop"]
                native = f"{r['hf_sampling'][0]:.0f} | {r['hf_sampling'][2]:.2f}×" if "hf_sampling" in r else "– | –"
                print(f"| {label} | {new_tokens} | {hf:.0f} | {fast:.0f} | {ratio:.2f}× | {decoding[2]:.2f}× | "
                      f"{loop[2]:.2f}× | {r['same_tokens'][0]}/{r['same_tokens'][1]} | {native} |", flush=True)

if __name__ == "__main__":
    main()
