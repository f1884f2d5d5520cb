"""Batching by total audio duration with duration buckets (what Lhotse/NeMo do for speech)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import BatchSampler, DistributedSampler, Sampler

# Lightning warns at validate/test under DDP that its sampler repeats examples, so that metrics count some
# twice; this one marks its repeats (PaddingBatch), which the stages weigh 0: each example counts once.
warnings.filterwarnings("ignore", message="Using `DistributedSampler` with the dataloaders. During `trainer.")


class _EpochSampler(Sampler[int]):
    """Stand-in for ``sampler=None``: indices in order, and the epoch Lightning sets each epoch."""

    def __init__(self, size: int):
        self.size = size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.size))

    def __len__(self) -> int:
        return self.size


class PaddingBatch(list):
    """Indices of a batch that a rank runs again only so that every rank takes as many steps (the
    DDP padding of :class:`DurationBucketBatchSampler`); its ``SpeechBatch`` says so (``padding``),
    and the stages weigh it 0 in their validation and test metrics."""


class DurationBucketBatchSampler(BatchSampler):
    """Yields lists of indices whose summed duration stays under ``max_batch_seconds``.

    Examples are sorted by ``lengths`` (default: the durations; a text LM's data module gives its
    examples' text lengths, since its clips say nothing of its sequence lengths) and cut into
    ``num_buckets`` equal-count buckets, so a batch holds examples of similar length and little
    padding. Within a bucket the order is shuffled
    (``shuffle=True``) and packed greedily; a single clip longer than the budget forms its own
    batch. Batch order is shuffled across buckets. Everything is drawn from
    ``torch.Generator().manual_seed(seed + epoch)``, so every process builds the same batches.

    Distributed: ``sampler`` only tells the layout. When Lightning injects a
    ``DistributedSampler`` (its default under DDP), each rank takes every ``world``-th batch of the
    common list, which is first trimmed (``drop_last``) or padded with repeats (cycling through the
    list when it is shorter than the padding) to a multiple of ``world`` so that all ranks run the
    same number of steps. The repeats are :class:`PaddingBatch` es: validation and test metrics leave
    them out (each example counts once, as in one process), training steps on them.

    Resuming mid-epoch: ``resume_offset()`` returns how many of this epoch's batches were already
    trained (the data module reads it from the restored fit loop); they are skipped. ``len()``
    stays the full epoch, which is what Lightning counts batches against.

    Epochs: Lightning calls ``set_epoch`` on ``batch_sampler.sampler``, never on the batch sampler
    itself, so the epoch is read from ``sampler`` (a ``DistributedSampler`` under DDP; with
    ``sampler=None`` a stand-in that only carries the epoch).
    """

    def __init__(
        self,
        sampler: Sampler | None,
        durations: Sequence[float],
        max_batch_seconds: float,
        num_buckets: int = 8,
        max_batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        resume_offset: Callable[[], int] | None = None,
        lengths: Sequence[float] | None = None,
    ):
        if max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds must be positive, got {max_batch_seconds}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1 (or null: the duration budget only), got {max_batch_size}")
        self.durations = [float(d) for d in durations]
        self.lengths = self.durations if lengths is None else [float(length) for length in lengths]
        if len(self.lengths) != len(self.durations):
            raise ValueError(f"{len(self.lengths)} lengths for {len(self.durations)} durations")
        self.sampler = sampler if sampler is not None else _EpochSampler(len(self.durations))
        self.max_batch_seconds = max_batch_seconds
        self.num_buckets = max(1, min(num_buckets, len(self.durations)))
        self.max_batch_size = max_batch_size
        self.batch_size = max_batch_size  # read by Lightning; None means "set by duration"
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.resume_offset = resume_offset
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def _current_epoch(self) -> int:
        epoch = getattr(self.sampler, "epoch", None)
        return epoch if isinstance(epoch, int) else self.epoch

    def _layout(self) -> tuple[int, int]:
        if isinstance(self.sampler, DistributedSampler):
            return self.sampler.rank, self.sampler.num_replicas
        return 0, 1

    def _pack(self, indices: list[int]) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        seconds = 0.0
        for index in indices:
            duration = self.durations[index]
            full = self.max_batch_size is not None and len(current) >= self.max_batch_size
            if current and (seconds + duration > self.max_batch_seconds or full):
                batches.append(current)
                current, seconds = [], 0.0
            current.append(index)
            seconds += duration
        if current:
            batches.append(current)
        return batches

    def global_batches(self) -> list[list[int]]:
        """All batches of this epoch, before they are shared out to ranks."""
        generator = torch.Generator().manual_seed(self.seed + self._current_epoch())
        by_length = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], i))
        bounds = torch.linspace(0, len(by_length), self.num_buckets + 1).round().long().tolist()
        batches: list[list[int]] = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            bucket = by_length[start:end]
            if self.shuffle:
                bucket = [bucket[i] for i in torch.randperm(len(bucket), generator=generator).tolist()]
            batches.extend(self._pack(bucket))
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def _rank_batches(self) -> list[list[int]]:
        batches = self.global_batches()
        rank, world = self._layout()
        if world == 1:
            return batches
        if self.drop_last:
            batches = batches[: len(batches) - len(batches) % world]
        else:
            missing = (world - len(batches) % world) % world  # more than len(batches) with more ranks than batches
            batches = batches + [PaddingBatch(batches[i % len(batches)]) for i in range(missing)]
        return batches[rank::world]

    def __iter__(self) -> Iterator[list[int]]:
        # Asked when iteration starts: > 0 only when training resumes mid-epoch, and then the
        # batches this rank already trained on are skipped, so the run continues exactly.
        skip = self.resume_offset() if self.resume_offset else 0
        yield from self._rank_batches()[skip:]

    def __len__(self) -> int:
        return len(self._rank_batches())
