"""The sampling processors: Gumbel-max noise draws from the softmax, the nucleus filter keeps what
HF's ``TopPLogitsWarper`` keeps (hand-computed, and over random rows both inside and beyond its
candidates), and the processors apply temperature and top-p before the draw."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from speechsum.models.sampling import GumbelMaxSampler, NucleusFilter, Temperature, sampling_processors

INF = float("inf")


def test_gumbel_max_sampler_draws_from_the_softmax():
    torch.manual_seed(0)
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0, -float("inf")])
    rows = 40_000
    draws = GumbelMaxSampler()(torch.zeros(rows, 1, dtype=torch.long), logits.expand(rows, -1).clone()).argmax(-1)
    frequencies = torch.bincount(draws, minlength=5).float() / rows
    torch.testing.assert_close(frequencies, logits.softmax(-1), atol=0.01, rtol=0.0)
    assert frequencies[4] == 0


def test_sampling_processors_apply_temperature_and_top_p_before_sampling():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -3.0]]).expand(20_000, -1).clone()
    processors = sampling_processors(temperature=0.5, top_p=0.9)
    draws = processors(torch.zeros(20_000, 1, dtype=torch.long), logits).argmax(-1)
    tempered = (logits[0] / 0.5).softmax(-1)  # [0.867, 0.117, 0.016, …]: top-p 0.9 keeps ids 0 and 1
    expected = torch.tensor([tempered[0], tempered[1], 0.0, 0.0]) / (tempered[0] + tempered[1])
    torch.testing.assert_close(torch.bincount(draws, minlength=4).float() / 20_000, expected, atol=0.01, rtol=0.0)


@pytest.mark.parametrize("candidates", [2, 3, 64])
def test_nucleus_filter_keeps_the_ids_ranked_under_top_p(candidates):
    # ids by rank: logits 2, 1, 0, -3; softmax 0.662, 0.244, 0.090, 0.004; mass ranked above: 0, 0.662, 0.906, 0.996
    logits = torch.tensor([[0.0, 2.0, -3.0, 1.0]])
    ids = torch.zeros(1, 0, dtype=torch.long)
    # top-p 0.95 keeps the ids with less than 0.95 above them; 2 candidates hold 0.906 < 0.95 (the
    # nucleus goes past them: full sort), 3 hold 0.996, 64 are more than the vocabulary
    assert NucleusFilter(0.95, candidates)(ids, logits).tolist() == [[0.0, 2.0, -INF, 1.0]]
    assert NucleusFilter(0.9, candidates)(ids, logits).tolist() == [[-INF, 2.0, -INF, 1.0]]
    assert NucleusFilter(0.5, candidates)(ids, logits).tolist() == [[-INF, 2.0, -INF, -INF]]


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.97])
def test_nucleus_filter_matches_hf_top_p_away_from_rounding_ties(top_p):
    generator = torch.Generator().manual_seed(0)
    rows, vocab = 3000, 500
    # peaked and flat rows, so some nuclei fit in the 16 candidates and some do not
    logits = torch.randn(rows, vocab, generator=generator) * torch.linspace(0.3, 8.0, rows)[:, None]
    logits[:, 7] = -INF  # a suppressed id
    ids = torch.zeros(rows, 0, dtype=torch.long)
    ours = NucleusFilter(top_p, candidates=16)(ids, logits.clone())
    hf = TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1)(ids, logits.clone())
    probs = logits.double().softmax(-1)
    sorted_probs = probs.sort(-1, descending=True).values
    above = sorted_probs.cumsum(-1) - sorted_probs
    near_tie = ((above - top_p).abs() < 1e-5).any(-1)  # float32 sums in other orders may differ here
    fits = sorted_probs[:, :16].sum(-1) >= top_p + 1e-5
    assert 0 < int(fits.sum()) < rows  # both the candidates' path and the full sort ran
    assert torch.equal(ours[~near_tie], hf[~near_tie])
    assert int(near_tie.sum()) < rows // 20
    assert torch.isinf(ours[:, 7]).all()


def test_nucleus_filter_at_the_ends_of_top_p_and_on_nan_rows_does_what_hf_does():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 500, generator=generator) * 30  # nearly all mass on one id, a long tail
    ids = torch.zeros(4, 0, dtype=torch.long)
    assert torch.equal(NucleusFilter(1.0, candidates=16)(ids, logits), logits)  # top-p 1 filters nothing
    only_top = NucleusFilter(0.0, candidates=16)(ids, logits)  # top-p 0 keeps the most likely id
    assert torch.equal(only_top, TopPLogitsWarper(top_p=0.0, min_tokens_to_keep=1)(ids, logits))
    assert (torch.isfinite(only_top).sum(-1) == 1).all()
    logits[1, 3] = float("nan")  # a broken row is left to the warper, not silently filtered to -inf
    ours, hf = NucleusFilter(0.9, candidates=16)(ids, logits), TopPLogitsWarper(0.9, min_tokens_to_keep=1)(ids, logits)
    assert torch.equal(ours.isnan(), hf.isnan()) and torch.equal(ours[~ours.isnan()], hf[~hf.isnan()])
    for top_p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="top_p"):
            NucleusFilter(top_p)


@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.3, 1e-5])
def test_temperature_of_float32_scores_is_hf_bit_for_bit(temperature):
    generator = torch.Generator().manual_seed(2)
    scores = torch.randn(6, 300, generator=generator) * 20
    scores[:, 5] = -INF  # a suppressed id
    ids = torch.zeros(6, 0, dtype=torch.long)
    ours = Temperature(temperature)(ids, scores)
    assert torch.equal(ours, TemperatureLogitsWarper(temperature)(ids, scores)) and ours.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_a_row_whose_scaled_scores_overflow_keeps_only_its_argmax(dtype):
    """Before: HF's warper scaled in the scores' dtype (fp16 60,000 / 1e-3 is +inf) and a row of several
    +inf scores was then sampled as its first +inf id (or, through top-p's NaNs, id 0); now the scores are
    scaled in float32 and a row that still overflows keeps its argmax alone (sampling's limit as T -> 0)."""
    big = 6e4 if dtype == torch.float16 else 1e35
    temperature = 1e-3 if dtype == torch.float16 else 2e-5
    scores = torch.tensor([[big * 0.5, -3.0, big, big * 0.9, 0.0], [1.0, 2.0, -1.0, 0.5, -INF]]).to(dtype)
    ids = torch.zeros(2, 0, dtype=torch.long)
    ours = Temperature(temperature)(ids, scores)
    assert ours.dtype == torch.float32
    if dtype == torch.float16:  # in float32 it fits: scaled, not cut to the argmax
        assert torch.equal(ours, scores.float() / temperature)
    else:
        assert torch.equal(ours[0], torch.tensor([-INF, -INF, 0.0, -INF, -INF]))
        assert torch.equal(ours[1], scores[1].float() / temperature)  # the other row as it was
    for top_p in (1.0, 0.9):
        torch.manual_seed(0)
        drawn = sampling_processors(temperature, top_p)(ids, scores.clone()).argmax(-1)
        assert int(drawn[0]) == 2
    with pytest.raises(ValueError, match="temperature"):
        Temperature(0.0)
