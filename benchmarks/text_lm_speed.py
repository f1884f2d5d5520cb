"""Text-LM training speed: real (non-padding) tokens trained per second per CPU thread, the
training step before issue 16's text-LM work against each change, in one run.

Every variant trains a fresh copy of the same model (the config's architecture and init seed)
under the config's precision, on the first ``--steps`` batches of an epoch of its own sampler,
with fused AdamW; the first ``--warmup`` steps are not timed. Variants run alternately
(A B C … A B C …), ``--repeats`` times; the median is reported with its ratio to the baseline.

- ``before``: the config's batches (the text LMs' configs draw them at random: ``num_buckets: 1``,
  as duration buckets were for them before, every text-only document having the same silent
  clip), prompt left-padded and response right-padded separately (a row is as wide as the longest
  prompt plus the longest response), SDPA attention, ``gelu_new``;
- ``joint_layout``: + one left-padded block per row (:func:`speechsum.stages.text_lm.joint_left_padded`,
  :class:`~speechsum.stages.text_lm.TextLMModule` now);
- ``eager_attention``: + transformers' eager attention;
- ``fused_gelu``: + the fused tanh GELU (``gelu_pytorch_tanh``);
- ``after``: + the token log-probs of the loss in row chunks (:func:`speechsum.losses.token_log_probs`,
  the same values and gradients) over every position's row: what configs/benchmark/text_*.yaml
  train with (the variants above it compute them as before: autograd through a float32 copy of the
  ``[:, :-1]`` slice of the logits);
- ``after_length_buckets``: ``after`` on batches from 4 text-length buckets (less padding; not
  used by the configs: it trained the backbone worse per step, RESULTS.md);
- ``erf_gelu``: ``after`` with the exact (erf) GELU, another activation function: torch's CPU
  kernel for it is ~4x faster than the tanh form's (not used: it would change the text LMs).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.text_lm_speed --config runs/pipeline/text_teacher/config.yaml
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from unittest import mock

import torch
from torch import Tensor
from transformers.activations import ACT2FN

from benchmarks.common import emit, machine_description
from speechsum.data.batch import SpeechBatch, SpeechCollator
from speechsum.data.sampler import DurationBucketBatchSampler
from speechsum.lightning_cli import lightning_cli
from speechsum.losses import masked_cross_entropy, masked_mean
from speechsum.models.base import sequence_positions
from speechsum.stages import text_lm

VARIANTS = {  # name: (4 text-length buckets, joint layout, attention, activation, chunked token log-probs)
    "before": (False, False, "sdpa", "gelu_new", False),
    "joint_layout": (False, True, "sdpa", "gelu_new", False),
    "eager_attention": (False, True, "eager", "gelu_new", False),
    "fused_gelu": (False, True, "eager", "gelu_pytorch_tanh", False),
    "after": (False, True, "eager", "gelu_pytorch_tanh", True),
    "after_length_buckets": (True, True, "eager", "gelu_pytorch_tanh", True),
    "erf_gelu": (False, True, "eager", "gelu", True),
}
LENGTH_BUCKETS = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True,
                        help="a text LM's fit config (a pipeline run's text_teacher/config.yaml or text_lm/config.yaml)")
    parser.add_argument("--steps", type=int, default=12, help="training steps per pass (timed: steps - warmup)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each pass")
    parser.add_argument("--repeats", type=int, default=3, help="alternating passes per variant")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (figures are per thread)")
    parser.add_argument("--output", default=None, help="write the figures as JSON here")
    return parser.parse_args(argv)


def autograd_token_log_probs(logits: Tensor, token_ids: Tensor) -> Tensor:
    """The token log-probs before the chunked function: autograd through a float32 copy."""
    logits = logits.float()
    return logits.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def autograd_cross_entropy(logits: Tensor, target_ids: Tensor, mask: Tensor) -> Tensor:
    return masked_mean(-autograd_token_log_probs(logits, target_ids), mask)


def sliced_text_lm_losses(logits: Tensor, input_ids: Tensor, attention_mask: Tensor, is_response: Tensor):
    """:func:`speechsum.stages.text_lm.text_lm_losses` before the chunked token log-probs: the
    ``[:, :-1]`` slice of the logits through :func:`autograd_token_log_probs`."""
    next_token_log_probs = autograd_token_log_probs(logits[:, :-1], input_ids[:, 1:])
    is_next_response = is_response[:, 1:]
    prompt_pairs = attention_mask[:, :-1] * attention_mask[:, 1:] * (1 - is_next_response)
    return masked_mean(-next_token_log_probs, is_next_response), masked_mean(-next_token_log_probs, prompt_pairs)


def separately_padded_step(module, batch: SpeechBatch, cross_entropy: Callable = masked_cross_entropy) -> Tensor:
    """The training step before the joint layout: [left-padded prompt | right-padded response]."""
    prompt_length = batch.prompt_ids.shape[1]
    input_ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)
    attention_mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1)
    logits = module.model(batch.audio, input_ids, attention_mask, sequence_positions(attention_mask))
    response_loss = cross_entropy(logits[:, prompt_length - 1 : -1], batch.response_ids, batch.response_mask)
    prompt_pairs = batch.prompt_mask[:, :-1] * batch.prompt_mask[:, 1:]
    prompt_loss = cross_entropy(logits[:, : prompt_length - 1], batch.prompt_ids[:, 1:], prompt_pairs)
    return response_loss + module.prompt_loss_weight * prompt_loss


def epoch_batches(datamodule, length_buckets: bool, count: int) -> list[SpeechBatch]:
    """The first ``count`` batches of epoch 0: the data module's own, or from
    :data:`LENGTH_BUCKETS` text-length buckets."""
    dataset = datamodule.datasets["train"]
    if not length_buckets:
        return list(itertools.islice(datamodule.train_dataloader(), count))
    sampler = DurationBucketBatchSampler(
        None, dataset.durations, max_batch_seconds=datamodule.max_batch_seconds, num_buckets=LENGTH_BUCKETS,
        max_batch_size=datamodule.max_batch_size, seed=datamodule.seed, lengths=dataset.lengths,
    )
    collate = SpeechCollator(datamodule.processor)
    return [collate([dataset[i] for i in indices]) for indices in list(sampler)[:count]]


def time_pass(build: Callable, variant: tuple, batches: list[SpeechBatch], warmup: int, precision: str) -> float:
    """Real tokens per second over the timed steps of one pass of a fresh model."""
    _, joint, attention, activation, chunked_log_probs = variant
    module = build()
    llm = module.model.llm
    llm.set_attn_implementation(attention)
    for layer in llm.model.layers:
        if not hasattr(layer.mlp, "activation_fn"):
            raise SystemExit(f"{type(llm).__name__}: expected a Phi-style `mlp.activation_fn` to swap")
        layer.mlp.activation_fn = ACT2FN[activation]
    module.log = lambda *args, **kwargs: None
    module.train()
    optimizer = torch.optim.AdamW([p for _, p in module.model.trainable_parameters()], lr=1e-4, fused=True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    tokens, started = 0, 0.0
    for step, batch in enumerate(batches):
        if step == warmup:
            started = time.perf_counter()
        with autocast:
            if not joint:
                loss = separately_padded_step(module, batch, masked_cross_entropy if chunked_log_probs
                                              else autograd_cross_entropy)
            elif chunked_log_probs:
                loss = module.training_step(batch, step)
            else:
                with mock.patch.object(text_lm, "text_lm_losses", sliced_text_lm_losses):
                    loss = module.training_step(batch, step)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= warmup:
            tokens += int(batch.prompt_mask.sum() + batch.response_mask.sum())
    return tokens / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or not names:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if not 0 <= args.warmup < args.steps:
        raise SystemExit(f"--warmup ({args.warmup}) must be at least 0 and below --steps ({args.steps})")
    machine = machine_description()
    cli_args = ["--config", args.config, "--trainer.logger", "false", "--trainer.callbacks", "[]"]
    cli = lightning_cli(cli_args, run=False)
    datamodule = cli.datamodule
    datamodule.processor = cli.model.model.processor
    datamodule.setup("fit")
    precision = str(cli.trainer.precision)
    if precision not in ("32-true", "bf16-mixed"):
        raise SystemExit(f"trainer.precision {precision!r}: this benchmark times 32-true or bf16-mixed")

    def build():
        return lightning_cli(cli_args, run=False).model

    batches = {flag: epoch_batches(datamodule, flag, args.steps) for flag in {VARIANTS[n][0] for n in names}}
    rates: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            rates[name].append(time_pass(build, VARIANTS[name], batches[VARIANTS[name][0]], args.warmup, precision))
            print(f"{name:16s} {rates[name][-1]:8.0f} tokens/s", flush=True)
    baseline = statistics.median(rates[names[0]])
    padding = {flag: sum(int(b.prompt_mask.sum() + b.response_mask.sum()) for b in bs)
               / sum(b.prompt_ids.numel() + b.response_ids.numel() for b in bs) for flag, bs in batches.items()}
    return emit({
        "benchmark": "text_lm_speed", "config": args.config, "precision": precision, "steps": args.steps,
        "warmup": args.warmup, "repeats": args.repeats, "machine": machine,
        "real_token_share_separately_padded": {("text-length buckets" if k else "the config's batches"): round(v, 3)
                                               for k, v in padding.items()},
        "variants": {name: {"tokens_per_s_median": round(statistics.median(r)), "tokens_per_s": [round(x) for x in r],
                            "ratio_to_first": round(statistics.median(r) / baseline, 3)} for name, r in rates.items()},
    }, args.output)


if __name__ == "__main__":
    main()
