"""DurationBucketBatchSampler: coverage, budgets, buckets, determinism, epochs and the DDP layout."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from lightning.fabric.utilities.data import _replace_dunder_methods, _set_sampler_epoch
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from speechsum.data.sampler import DurationBucketBatchSampler


def mixed_durations(n: int = 200, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(0.5, 20.0), 3) for _ in range(n)]


def flat(batches: list[list[int]]) -> list[int]:
    return [i for batch in batches for i in batch]


def make(durations, **kwargs) -> DurationBucketBatchSampler:
    kwargs = {"max_batch_seconds": 60.0, "num_buckets": 8, **kwargs}
    return DurationBucketBatchSampler(kwargs.pop("sampler", None), durations, **kwargs)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("max_batch_size", [None, 3])
def test_every_index_exactly_once(shuffle: bool, max_batch_size: int | None):
    durations = mixed_durations()
    sampler = make(durations, shuffle=shuffle, max_batch_size=max_batch_size, seed=5)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        assert sorted(flat(list(sampler))) == list(range(len(durations)))


def test_budget_respected_and_long_clips_alone():
    durations = mixed_durations() + [75.0, 61.0, 200.0]  # three clips over the 60 s budget
    sampler = make(durations, max_batch_seconds=60.0, seed=1)
    batches = list(sampler)
    singles = []
    for batch in batches:
        total = sum(durations[i] for i in batch)
        if total > 60.0:
            assert len(batch) == 1
            singles.append(batch[0])
    assert sorted(singles) == [200, 201, 202]
    assert all(sum(durations[i] for i in batch) <= 60.0 for batch in batches if batch[0] < 200)


def test_batches_are_filled_greedily():
    durations = [1.0] * 20
    batches = list(make(durations, max_batch_seconds=4.0, num_buckets=1, shuffle=False))
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]]


def test_unshuffled_order_is_by_duration():
    batches = list(make([3.0, 1.0, 2.0, 5.0, 4.0], max_batch_seconds=6.0, num_buckets=1, shuffle=False))
    assert batches == [[1, 2, 0], [4], [3]]


@pytest.mark.parametrize("max_batch_size", [1, 3, 7])
def test_max_batch_size(max_batch_size: int):
    durations = [0.5] * 50
    batches = list(make(durations, max_batch_seconds=1_000.0, num_buckets=5, max_batch_size=max_batch_size))
    assert max(len(b) for b in batches) == max_batch_size
    # each of the 5 buckets of 10 clips packs into ceil(10 / size) batches
    assert len(batches) == 5 * -(-10 // max_batch_size)
    assert sorted(flat(batches)) == list(range(50))


@pytest.mark.parametrize("max_batch_size", [0, -3])
def test_a_batch_size_cap_below_one_is_refused(max_batch_size: int):
    with pytest.raises(ValueError, match=f"max_batch_size must be at least 1 .*got {max_batch_size}"):
        make([0.5] * 4, max_batch_seconds=10.0, max_batch_size=max_batch_size)


def test_same_seed_and_epoch_same_batches():
    durations = mixed_durations()
    a, b = make(durations, seed=7), make(durations, seed=7)
    assert list(a) == list(b)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again does not move on


def test_different_epoch_or_seed_different_order():
    durations = mixed_durations()
    sampler = make(durations, seed=7)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0
    assert sorted(flat(epoch1)) == sorted(flat(epoch0))
    sampler.set_epoch(0)
    assert list(sampler) == epoch0
    assert list(make(durations, seed=8)) != epoch0


def test_unshuffled_ignores_epoch():
    durations = mixed_durations()
    sampler = make(durations, shuffle=False)
    epoch0 = list(sampler)
    sampler.set_epoch(4)
    assert list(sampler) == epoch0


def test_batches_come_from_buckets():
    durations = [float(d) for d in range(1, 101)]
    order = list(range(100))
    random.Random(0).shuffle(order)
    shuffled = [durations[i] for i in order]  # indices are not sorted by duration
    sampler = make(shuffled, max_batch_seconds=40.0, num_buckets=10, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(flat(batches)) == list(range(100))
        for batch in batches:
            seconds = [shuffled[i] for i in batch]
            assert max(seconds) - min(seconds) < 10  # the bucket width
            # buckets are 1..10, 11..20, ...: every clip of a batch is in the same one
            assert len({(s - 1) // 10 for s in seconds}) == 1


def test_buckets_follow_lengths_when_given_and_the_budget_stays_in_seconds():
    """A text LM's examples all have the same silent clip: buckets follow their text lengths."""
    lengths = [float(d) for d in range(1, 101)]
    order = list(range(100))
    random.Random(1).shuffle(order)
    shuffled = [lengths[i] for i in order]
    sampler = make([1.0] * 100, lengths=shuffled, max_batch_seconds=3.0, num_buckets=10, seed=0)
    batches = list(sampler)
    assert sorted(flat(batches)) == list(range(100)) and {len(b) for b in batches} == {3, 1}  # 10 = 3+3+3+1
    assert all(len({(shuffled[i] - 1) // 10 for i in batch}) == 1 for batch in batches)
    with pytest.raises(ValueError, match="2 lengths for 3 durations"):
        make([1.0, 1.0, 1.0], lengths=[1.0, 2.0])


def test_batch_order_is_mixed_across_buckets():
    durations = [float(d) for d in range(1, 101)]
    batches = list(make(durations, max_batch_seconds=40.0, num_buckets=10, seed=0))
    firsts = [durations[b[0]] for b in batches]
    assert firsts != sorted(firsts)


def test_more_buckets_than_examples():
    sampler = make([1.0, 2.0, 3.0], num_buckets=8, max_batch_seconds=100.0, shuffle=False)
    assert sampler.num_buckets == 3
    assert list(sampler) == [[0], [1], [2]]


def test_len_matches_iteration():
    durations = mixed_durations()
    for kwargs in ({}, {"max_batch_size": 2}, {"shuffle": False}, {"max_batch_seconds": 5.0}):
        sampler = make(durations, **kwargs)
        assert len(sampler) == len(list(sampler))


def test_rejects_non_positive_budget():
    with pytest.raises(ValueError, match="max_batch_seconds must be positive, got 0"):
        make([1.0], max_batch_seconds=0)


def ranks(
    durations, drop_last: bool, world: int = 2, seed: int = 0, **kwargs
) -> list[DurationBucketBatchSampler]:
    dataset = list(range(len(durations)))
    return [
        make(
            durations,
            sampler=DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False),
            drop_last=drop_last,
            seed=seed,
            **kwargs,
        )
        for rank in range(world)
    ]


def odd_batch_count_durations() -> list[float]:
    durations = mixed_durations(101, seed=2)
    assert len(make(durations).global_batches()) % 2 == 1  # so that the layout must pad or trim
    return durations


def test_ddp_pads_with_repeats_when_not_dropping_last():
    durations = odd_batch_count_durations()
    rank0, rank1 = ranks(durations, drop_last=False)
    common = make(durations).global_batches()
    assert rank0.global_batches() == rank1.global_batches() == common
    b0, b1 = list(rank0), list(rank1)
    assert len(b0) == len(b1) == (len(common) + 1) // 2
    assert len(rank0) == len(b0) and len(rank1) == len(b1)
    assert b0 == common[0::2] and b1 == common[1::2] + [common[0]]  # the first batch is repeated
    assert set(flat(b0)) | set(flat(b1)) == set(range(len(durations)))
    counts = Counter(flat(b0) + flat(b1))
    assert {i for i, c in counts.items() if c > 1} == set(common[0])
    assert all(c == 2 for i, c in counts.items() if i in common[0])


def test_ddp_drop_last_trims():
    durations = odd_batch_count_durations()
    rank0, rank1 = ranks(durations, drop_last=True)
    common = make(durations).global_batches()
    b0, b1 = list(rank0), list(rank1)
    assert len(b0) == len(b1) == len(common) // 2
    assert len(rank0) == len(b0) and len(rank1) == len(b1)
    assert not set(flat(b0)) & set(flat(b1))
    assert sorted(flat(b0) + flat(b1)) == sorted(set(range(len(durations))) - set(common[-1]))


def test_ddp_even_batch_count_is_an_exact_split():
    durations = mixed_durations(100, seed=4)
    for drop_last in (False, True):
        rank0, rank1 = ranks(durations, drop_last=drop_last, max_batch_size=2)
        common = make(durations, max_batch_size=2).global_batches()
        assert len(common) % 2 == 0
        b0, b1 = list(rank0), list(rank1)
        assert len(b0) == len(b1) == len(common) // 2
        assert sorted(flat(b0) + flat(b1)) == list(range(100))


def test_ddp_ranks_follow_the_distributed_sampler_epoch():
    durations = mixed_durations(101, seed=2)
    rank0, rank1 = ranks(durations, drop_last=False)
    before = list(rank0)
    for sampler in (rank0, rank1):
        sampler.sampler.set_epoch(1)  # what Lightning does each epoch under DDP
    assert list(rank0) != before
    assert rank0.global_batches() == rank1.global_batches() == make(durations, seed=1).global_batches()


@pytest.mark.parametrize("distributed", [False, True])
def test_lightning_set_epoch_reaches_the_batch_sampler(distributed: bool):
    """Lightning calls ``set_epoch`` on ``dataloader.sampler`` and ``dataloader.batch_sampler.sampler``."""
    durations = mixed_durations(60)
    sampler = ranks(durations, drop_last=False)[0] if distributed else make(durations)
    loader = DataLoader(list(range(60)), batch_sampler=sampler, collate_fn=list)
    epoch0 = [list(b) for b in loader]
    _set_sampler_epoch(loader, 1)
    epoch1 = [list(b) for b in loader]
    assert epoch1 != epoch0
    expected = make(durations)
    expected.set_epoch(1)
    assert epoch1 == (expected.global_batches()[0::2] if distributed else list(expected))
    _set_sampler_epoch(loader, 0)
    assert [list(b) for b in loader] == epoch0


def test_dataloader_yields_the_batches():
    durations = mixed_durations(40)
    sampler = make(durations, max_batch_seconds=30.0)
    loader = DataLoader(torch.arange(40), batch_sampler=sampler)
    assert [b.tolist() for b in loader] == list(sampler)


def test_lightning_can_inject_a_distributed_sampler():
    """Under DDP Lightning rebuilds the batch sampler with a ``DistributedSampler`` in place of ``sampler``."""
    durations = mixed_durations(101, seed=2)
    dataset = list(range(101))
    with _replace_dunder_methods(BatchSampler, "__pl_saved"):  # what Lightning wraps dataloader hooks in
        loader = DataLoader(dataset, batch_sampler=make(durations, seed=4), collate_fn=list)
    common = make(durations, seed=4)
    for epoch in (0, 1):
        common.set_epoch(epoch)
        expected = common.global_batches()
        expected = expected + expected[: len(expected) % 2]
        per_rank = []
        for rank in range(2):
            injected = _update_dataloader(
                loader, DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
            )
            assert isinstance(injected.batch_sampler, DurationBucketBatchSampler)
            assert (injected.batch_sampler.seed, injected.batch_sampler.max_batch_seconds) == (4, 60.0)
            _set_sampler_epoch(injected, epoch)
            per_rank.append([list(b) for b in injected])
        assert per_rank == [expected[0::2], expected[1::2]]


@pytest.mark.parametrize(("examples", "world"), [(1, 4), (2, 8), (3, 8)])
def test_ddp_more_ranks_than_batches_gives_every_rank_a_batch(examples: int, world: int):
    # a small validation set on many GPUs: one batch, 4 or 8 ranks. The padding took the first
    # `missing` batches once, so ranks 2+ got no batch and the others waited for them in a collective.
    samplers = ranks([1.0] * examples, drop_last=False, world=world, num_buckets=1)
    (common,) = make([1.0] * examples, num_buckets=1).global_batches()
    assert [list(sampler) for sampler in samplers] == [[common]] * world
    assert [len(sampler) for sampler in samplers] == [1] * world
