"""Collation of a stage's training batches with the log-mel features computed at collation
(``eager``, before) against left to the model for the feature cache's misses only (``deferred``,
``ComposedProcessor.defer_log_mel``), alternating, median of ``--repeats`` passes over the same
``--batches`` batches (their audio read once, before); the feature cache is filled first, as from a stage's second epoch on (and in
every stage after the alignment's). Each pass also runs the model's encoder-frame lookup on every
batch (``clip_frames``: hits, the deferred path's only remaining use of the audio), so the figures
are collation plus what the deferral moved into the step.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.collate_speed --config runs/pipeline/sft/config.yaml
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import time

import torch

from benchmarks.common import emit
from speechsum.lightning_cli import lightning_cli


def timed_pass(loader, model) -> tuple[float, int]:
    """Seconds to collate every batch of ``loader`` and look its clips' frames up; the batch count."""
    start, count = time.perf_counter(), 0
    for batch in loader:
        model.clip_frames(batch.audio)
        count += 1
    return time.perf_counter() - start, count


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a speech stage's config (RUN/<stage>/config.yaml of a "
                        "pipeline run whose backbone has a feature_cache)")
    parser.add_argument("--batches", type=int, default=20, help="training batches per pass (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each setting (default 3)")
    parser.add_argument("--output", default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    cli = lightning_cli(["--config", args.config, "--trainer.logger", "false"], run=False)
    model, datamodule = cli.model.model, cli.datamodule
    if not model.processor.defer_log_mel:
        raise SystemExit(f"{args.config}: the backbone does not defer its log-mel features (it needs a "
                         "feature_cache and a frozen encoder)")
    datamodule.processor = model.processor
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    index_batches = list(itertools.islice(loader.batch_sampler, args.batches))  # the loader's own batches
    items = [[loader.dataset[index] for index in indices] for indices in index_batches]  # audio read once
    collate = loader.collate_fn

    class Loader:  # the same items every pass: only the collation differs
        def __iter__(self):
            return (collate(batch_items) for batch_items in items)

    timed_pass(Loader(), model)  # fills the feature cache
    seconds: dict[str, list[float]] = {"eager": [], "deferred": []}
    for _ in range(args.repeats):
        for setting in seconds:
            model.processor.defer_log_mel = setting == "deferred"
            elapsed, count = timed_pass(Loader(), model)
            seconds[setting].append(elapsed / count)
    eager, deferred = (statistics.median(seconds[s]) for s in ("eager", "deferred"))
    return emit({
        "benchmark": "collate_speed", "config": args.config, "batches": len(items), "repeats": args.repeats,
        "clips": sum(map(len, items)), "torch_threads": torch.get_num_threads(), "machine": platform.processor()
        or platform.machine(), "s_per_batch": {"eager": eager, "deferred": deferred}, "passes": seconds,
        "speedup": eager / deferred,
    }, args.output)


if __name__ == "__main__":
    main()
