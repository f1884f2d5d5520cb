"""Per-example scores of predictions, and their means with 95 % bootstrap CIs per group.

Score keys (per example; None = not applicable, left out of the means):

- ``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum``: ROUGE F1, stemmed (rouge-score);
- ``bertscore_f1``: BERTScore F1 (model, layer and rescaling in the description);
- ``fact_judge``: the offline fact judge's 1–7 score, ``fact_recall`` its recall of the required
  facts, ``fact_hallucinated`` its count of invented facts (examples whose ``meta`` has ``facts``);
- ``llm_judge``: the LLM rubric judge's 1–7 score (None when unjudged);
- ``hallucination``: 1 if the prediction names an entity (name, number, date) the source
  transcript does not contain, else 0; ``hallucinated_entities``: how many (both None without a
  transcript: every name and number was counted invented, 1.0);
- ``repetition``: repeated word 3-gram rate ``1 − distinct/total``;
- ``length_words``: words in the prediction; ``compression``: prediction words / transcript words
  (None without a transcript);
- ``truncated``: 1 if generation hit ``max_new_tokens`` without an end-of-turn token.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechsum.evaluation import metrics
from speechsum.judges.rubric import RubricItem, RubricJudge
from speechsum.utils.text_files import raw_lines

METRIC_GROUPS = ("rouge", "bertscore", "fact_judge", "llm_judge")
REFERENCE_FREE = ("fact_judge", "llm_judge")  # need no reference summary (nor do the basic scores)
# the scores each group adds to a row's `scores` (and metrics.json), besides the basic ones always there
GROUP_SCORES = {"rouge": ("rouge1", "rouge2", "rougeL", "rougeLsum"), "bertscore": ("bertscore_f1",),
                "fact_judge": ("fact_judge", "fact_recall", "fact_hallucinated"), "llm_judge": ("llm_judge",)}
BASIC_DESCRIPTIONS = {
    "hallucination": "share of predictions naming an entity (name, number, date) absent from the source transcript",
    "hallucinated_entities": "entities per prediction absent from the source transcript",
    "repetition": "repeated word 3-gram rate, 1 - distinct/total, per prediction",
    "length_words": "words per prediction",
    "compression": "prediction words / source transcript words",
    "truncated": "share of predictions cut at --max-new-tokens (no end-of-turn token)",
}
log = logging.getLogger(__name__)
ROUGE_DESCRIPTION = "{} F1 with Porter stemming (rouge-score), prediction vs reference"


@dataclass
class ScoringOptions:
    """Which metrics to compute (subset of :data:`METRIC_GROUPS`; the basic ones always) and how."""

    metrics: tuple[str, ...] = ("rouge", "bertscore", "fact_judge")
    bertscore_model: str | None = None
    bertscore_layer: int = 6
    bertscore_baseline: str | None = None  # bert-score baseline CSV: when given, F1 is rescaled
    judge: RubricJudge | None = None


def source_text(row: dict) -> str:
    """What the summary must be faithful to: the English transcript when there is one
    (``meta.transcript_en`` on cross-lingual data), else the transcript."""
    return (row.get("meta") or {}).get("transcript_en") or row.get("transcript") or ""


class Scorer:
    """Scores rows ``{prediction, reference, instruction, transcript, meta, truncated}`` in place
    (``row["scores"]``, plus ``row["hallucinated"]`` and judge details) and describes each metric."""

    def __init__(self, options: ScoringOptions):
        unknown = sorted(set(options.metrics) - set(METRIC_GROUPS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {METRIC_GROUPS}")
        if "llm_judge" in options.metrics and options.judge is None:
            raise ValueError("metric llm_judge needs a judge endpoint: pass --judge-model (and --judge-base-url)")
        self.options = options
        self._bert = None
        self._fact_judge = None
        self.descriptions = dict(BASIC_DESCRIPTIONS)
        if "rouge" in options.metrics:
            self.descriptions |= {k: ROUGE_DESCRIPTION.format(k) for k in GROUP_SCORES["rouge"]}
        if "bertscore" in options.metrics:
            self.descriptions["bertscore_f1"] = self.bert.description
        if "fact_judge" in options.metrics:
            from speechsum.judges.fact import FactJudge

            self._fact_judge = FactJudge()
            self.descriptions |= {
                "fact_judge": f"offline fact judge {self._fact_judge.name}: score 1-7 (fact recall, invented facts, "
                "repetition, style); examples with meta.facts only",
                "fact_recall": "share of the instruction's required facts the prediction states (fact judge)",
                "fact_hallucinated": "invented facts per prediction (fact judge)",
            }
        if options.judge is not None and "llm_judge" in options.metrics:
            self.descriptions["llm_judge"] = options.judge.description

    @property
    def bert(self) -> metrics.BertScorer:
        if self._bert is None:
            self._bert = metrics.BertScorer(
                model=self.options.bertscore_model, num_layers=self.options.bertscore_layer,
                rescale=self.options.bertscore_baseline is not None,
                baseline_path=self.options.bertscore_baseline,
            )
        return self._bert

    def score(self, rows: list[dict]) -> list[dict]:
        if not rows:
            return rows
        predictions = [row["prediction"] for row in rows]
        references = [row["reference"] for row in rows]
        for row in rows:
            scores = row.setdefault("scores", {})
            source = source_text(row)
            source_words = metrics.word_count(source)
            # no transcript: nothing to be faithful to, so unscored (every name and number was "invented": 1.0)
            hallucinated = metrics.hallucinated_entities(row["prediction"], source) if source_words else None
            row["hallucinated"] = hallucinated or []
            words = metrics.word_count(row["prediction"])
            scores |= {
                "hallucination": None if hallucinated is None else float(bool(hallucinated)),
                "hallucinated_entities": None if hallucinated is None else float(len(hallucinated)),
                "repetition": metrics.repetition_rate(row["prediction"], 3),
                "length_words": float(words),
                "compression": words / source_words if source_words else None,
                "truncated": float(bool(row.get("truncated"))),
            }
        if "rouge" in self.options.metrics:
            warn_rouge_unreadable(rows)
            for row, rouge in zip(rows, metrics.rouge_scores(predictions, references)):
                row["scores"] |= {key: float(value) for key, value in rouge.items()}
        if "bertscore" in self.options.metrics:
            for row, f1 in zip(rows, self.bert.f1(predictions, references)):
                row["scores"]["bertscore_f1"] = float(f1)
        if self._fact_judge is not None:
            for row in rows:
                meta = row.get("meta") or {}
                if not meta.get("facts"):
                    continue
                verdict = self._fact_judge.score(row["prediction"], meta, row["instruction"])
                row["scores"] |= {
                    "fact_judge": float(verdict.score),
                    "fact_recall": float(verdict.recall),
                    "fact_hallucinated": float(len(verdict.hallucinated)),
                }
                row["fact_verdict"] = {"hallucinated": list(verdict.hallucinated), "style_ok": verdict.style_ok,
                                       "reasons": verdict.reasons}
        if "llm_judge" in self.options.metrics:
            items = [RubricItem(row["instruction"], row["prediction"], source_text(row), row["reference"] or "")
                     for row in rows]
            for row, verdict in zip(rows, self.options.judge.score(items)):
                row["scores"]["llm_judge"] = None if verdict.score is None else float(verdict.score)
                row["llm_judge"] = {"criteria": verdict.criteria, "reasons": verdict.reasons, "error": verdict.error}
        return rows


def check_fact_meta(manifests: dict[str, Path]) -> None:
    """A ValueError naming ``file:line`` and the field of the first manifest line whose ``meta.facts`` the fact
    judge cannot read (:func:`speechsum.judges.fact.fact_meta_problem`), so that it stops before any system
    generates (it stopped after the first system had, naming a document id at best; a string of keys was read
    letter by letter). Lines that are no JSON object are the manifest loader's to name."""
    from speechsum.judges.fact import fact_meta_problem

    for path in dict.fromkeys(manifests.values()):
        if not Path(path).is_file():
            continue  # the loader names it
        for number, raw in raw_lines(path):
            try:
                row = json.loads(raw.decode("utf-8"))
            except ValueError:
                continue
            meta = row.get("meta") if isinstance(row, dict) else None
            if isinstance(meta, dict) and meta.get("facts") and (problem := fact_meta_problem(meta)):
                raise ValueError(f"{path}:{number}: fact judge: {problem}; fix the line's meta, or leave fact_judge "
                                 "out of --metrics (e.g. --metrics rouge,bertscore)")


def warn_rouge_unreadable(rows: list[dict]) -> None:
    """A warning naming how many references of each split ROUGE cannot read (:func:`metrics.rouge_drops_every_word`:
    a Chinese or Russian split scored 0 for every system, silently)."""
    unreadable = [row for row in rows if metrics.rouge_drops_every_word(row["reference"])]
    if unreadable:
        splits = Counter(str(row.get("split")) for row in unreadable)
        log.warning("%s: ROUGE is 0 for %d of %d examples (%s; first id %r) whatever the prediction: their reference has "
                    "no word rouge-score's tokenizer keeps (ASCII letters and digits only: Chinese, Japanese, Arabic, "
                    "Cyrillic … words are dropped); compare such text with fact_judge, bertscore or llm_judge",
                    unreadable[0].get("system", "rouge"), len(unreadable), len(rows),
                    ", ".join(f"{n} on {split}" for split, n in splits.items()), unreadable[0].get("id"))


def collect_scores(rows: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    """Every rank's per-example scores, deduplicated and ordered by ``row["index"]``, through the
    torchmetrics collector :class:`speechsum.evaluation.metrics.ExampleScores` (its ``cat`` states
    sync across DDP ranks). A missing score travels as NaN. ``["example_position"]`` holds the
    positions (``row["index"]``) the values belong to."""
    collector = metrics.ExampleScores([*names, "example_position"])
    nan = float("nan")
    scores = {name: [nan if row["scores"].get(name) is None else row["scores"][name] for row in rows] for name in names}
    positions = [row["index"] for row in rows]  # also a score, so that compute() returns the synced order
    collector.update(scores | {"example_position": positions}, index=positions)
    # one example comes back as a 0-d tensor from the cat state: every score is an array of examples
    values = {name: np.atleast_1d(tensor.cpu().numpy()) for name, tensor in collector.compute().items()}
    values["example_position"] = values["example_position"].astype(np.int64)
    return values


def summarise(values_by_metric: dict[str, np.ndarray], num_resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """``{metric: {mean, low, high, n}}`` (95 % bootstrap CI of the mean) over the non-NaN values."""
    out = {}
    for metric, values in values_by_metric.items():
        kept = np.asarray(values, dtype=np.float64)
        kept = kept[~np.isnan(kept)]
        if kept.size == 0:
            continue
        mean, low, high = metrics.bootstrap_ci(kept, confidence=0.95, num_resamples=num_resamples, seed=seed)
        out[metric] = {"mean": mean, "low": low, "high": high, "n": int(kept.size)}
    return out


def aggregate(values: dict[str, np.ndarray], groups: dict[str, list], num_resamples: int = 1000, seed: int = 0) -> dict:
    """``{"all": stats, "split": {name: stats}, "genre": {…}, "style": {…}}`` (see :func:`summarise`);
    ``groups[field][i]`` is the group of the i-th example of ``values`` (None: in no group)."""
    result: dict = {"all": summarise(values, num_resamples, seed)}
    for field, labels in groups.items():
        labels = np.asarray([str(label) if label is not None else "" for label in labels])
        result[field] = {
            name: summarise({m: v[labels == name] for m, v in values.items()}, num_resamples, seed)
            for name in sorted(set(labels.tolist()) - {""})
        }
    return result
