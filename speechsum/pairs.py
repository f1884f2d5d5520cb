"""``speechsum pairs``: DPO preference pairs from a student checkpoint.

For every manifest example the student samples N summaries from the audio (batched, KV-cached
generation), a judge compares the distinct samples pairwise, and the best (most pairwise wins)
vs the worst becomes ``chosen``/``rejected`` when the judge preferred it in their direct
comparison; ties and unjudged examples are dropped and counted. Resumable: samples and verdicts
go to append-only caches as they are made, the output manifest is written whole at the end, so a
rerun after a crash or Ctrl-C re-samples and re-judges nothing and writes every pair exactly once.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from speechsum.data.batch import SpeechCollator
from speechsum.data.dataset import SpeechSumDataset, example_error
from speechsum.data.loader import SkippedExample, SpeechLoader, warn_skipped
from speechsum.data.manifest import Example, load_manifest, loaded_records
from speechsum.data.text_checks import blank, first_reserved, text_fields
from speechsum.judges.pairwise import FactPairJudge, JudgeInput, OpenAIJudge, PairVerdict, PairwiseJudge
from speechsum.models.base import SpeechLLM
from speechsum.models.checkpoint import load_speech_llm
from speechsum.models.generation import GenerationSettings, generate_texts
from speechsum.utils.arguments import (
    MAX_ATTEMPTS,
    MAX_BATCH,
    MAX_TOKENS,
    MAX_WORKERS,
    at_least,
    endpoint_url,
    key_variable,
    nucleus_top_p,
    positive_seconds,
    samples_per_input,
    sampling_temperature,
)
from speechsum.utils.chat_json import check_not_all_refused
from speechsum.utils.devices import check_device
from speechsum.utils.io import (
    check_cache_path,
    check_input_file,
    check_not_above,
    check_not_an_input,
    check_output_path,
    file_sha256,
    read_yaml,
    write_jsonl,
)
from speechsum.utils.jsonl_cache import remove_if_empty
from speechsum.utils.project_configs import project_config
from speechsum.utils.remote import JsonlCache, cache_key, check_key_option, endpoint_failure, map_concurrent
from speechsum.utils.repeated_options import OnceParser

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = OnceParser(
        prog="speechsum pairs",
        description="Sample N summaries per example from a student checkpoint, judge them pairwise, "
        "and write a DPO preference manifest (id, audio, instruction, transcript, chosen, rejected, meta).",
    )
    parser.add_argument("--ckpt", required=True, help="student checkpoint (.ckpt of any speechsum stage)")
    parser.add_argument("--config", required=True, type=project_config,
                        help="YAML the checkpoint was trained with (the run's saved config.yaml or the stage config)")
    parser.add_argument("--manifest", required=True, help="JSONL manifest of prompts (audio, instruction, transcript)")
    parser.add_argument("--out", required=True, help="output preference manifest (JSONL, written atomically at the end)")
    parser.add_argument("--num-samples", type=samples_per_input, default=4,
                        help="summaries sampled per example, 2-64: a pair needs two (default 4)")
    parser.add_argument("--temperature", type=sampling_temperature, default=1.0, help="sampling temperature (default 1.0)")
    parser.add_argument("--top-p", type=nucleus_top_p, default=1.0, help="nucleus sampling top-p (default 1.0: off)")
    parser.add_argument("--max-new-tokens", type=at_least(1, MAX_TOKENS), default=256, help="longest sampled summary in tokens (256)")
    parser.add_argument("--batch-size", type=at_least(1, MAX_BATCH), default=8, help="examples per generation batch (default 8)")
    parser.add_argument("--device", default=None, help="torch device for sampling (default: cuda if available)")
    # torch.manual_seed's range: a larger seed was a traceback after the checkpoint had loaded
    parser.add_argument("--seed", type=at_least(-(2**63), 2**64 - 1), default=0,
                        help="sampling seed, -2**63 to 2**64-1 (default 0)")
    parser.add_argument("--judge", choices=["fact", "openai"], default="fact",
                        help="fact: the bundled benchmark's offline fact judge (needs meta.facts); "
                        "openai: an LLM judge through an OpenAI-compatible endpoint (default fact)")
    parser.add_argument("--judge-model", default="gpt-4.1", help="judge model name at the endpoint (gpt-4.1)")
    parser.add_argument("--judge-base-url", type=endpoint_url, default=None,
                        help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: api.openai.com)")
    parser.add_argument("--api-key-env", type=key_variable, default="OPENAI_API_KEY",
                        help="environment variable holding the judge's API key (default OPENAI_API_KEY)")
    parser.add_argument("--judge-timeout", type=positive_seconds, default=60.0,
                        help="seconds before a judge request is abandoned and retried (default 60)")
    parser.add_argument("--judge-attempts", type=at_least(1, MAX_ATTEMPTS), default=4,
                        help="tries per judge request on timeouts, 429, 5xx and malformed replies (default 4)")
    parser.add_argument("--judge-max-tokens", type=at_least(1, MAX_TOKENS), default=256,
                        help="tokens per judge answer (default 256; reasoning models need thousands)")
    parser.add_argument("--concurrency", type=at_least(1, MAX_WORKERS), default=8, help="examples judged at once (default 8)")
    parser.add_argument("--pairing", choices=["round-robin", "first-two"], default="round-robin",
                        help="round-robin: judge every pair of distinct samples, pick most vs fewest wins; "
                        "first-two: judge only the first two distinct samples (2 calls per example with "
                        "the LLM judge). Default round-robin")
    parser.add_argument("--add-reference", action="store_true",
                        help="also put the example's reference summary (if it has one) among the candidates the "
                        "judge ranks; useful when a weak student's samples all tie (e.g. all at the fact judge's "
                        "floor). Off by default: pairs are then purely on-policy, as in the paper")
    parser.add_argument("--on-bad-example", choices=["error", "skip"], default="error",
                        help="a bad manifest line or audio that fails to read: error: stop (the default); skip: "
                        "leave it out, log it and count it in the summary (it gets no pair)")
    parser.add_argument("--cache", default=None,
                        help="folder of the resumable caches samples.jsonl and verdicts.jsonl (default: OUT.cache)")
    return parser


# -- the student -------------------------------------------------------------------------------
@dataclass
class Student:
    """The speech LLM to sample from, with the longest audio its data config feeds it (seconds;
    None: the backbone's own limit)."""

    model: SpeechLLM
    max_audio_seconds: float | None = None


def data_max_audio_seconds(config: str | Path) -> float | None:
    """``data.max_audio_seconds`` of a stage config YAML (``data.init_args`` also read); None when unset."""
    settings = read_yaml(config)
    data = (settings.get("data") if isinstance(settings, dict) else None) or {}
    if isinstance(data, dict) and isinstance(data.get("init_args"), dict):
        data = data["init_args"]
    value = data.get("max_audio_seconds") if isinstance(data, dict) else None
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
        raise ValueError(f"{config}: data.max_audio_seconds must be a positive number of seconds, got {value!r}")
    return value


def load_student(ckpt: str, config: str) -> Student:
    """The speech LLM built from ``config`` (the YAML it was trained with) with the checkpoint's
    (trainable-only) weights loaded on top; every trainable weight must come from the checkpoint."""
    model, _ = load_speech_llm(ckpt, config)
    return Student(model, data_max_audio_seconds(config))


def checkpoint_identity(ckpt: str) -> str:
    stat = Path(ckpt).stat()
    return f"{Path(ckpt).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def audio_hash(path: str) -> str:
    """The audio file's content (sha256): a clip rewritten at the same path (a data set rebuilt) is
    sampled again, not answered from the cache with the old clip's summaries. A file that cannot be
    read has none: sampling it names the problem (or skips it, ``--on-bad-example skip``)."""
    return (file_sha256(path) or "unreadable")[:16]


def judged_input_hash(item: JudgeInput) -> str:
    """What the judge reads besides the two summaries (instruction, transcript, meta): a verdict
    cached for another version of the example is not reused."""
    return text_hash(json.dumps([item.instruction, item.transcript, item.meta], sort_keys=True, default=str))


def sample_summaries(
    student: Student, examples: list[Example], cache: JsonlCache, keys: dict[str, str], args
) -> tuple[int, list[SkippedExample]]:
    """Sample ``num_samples`` summaries for every example not in ``cache``; returns how many examples
    were sampled now and those whose audio failed when read (``--on-bad-example skip``; "error" raises
    naming the manifest line). Each batch's samples are cached as soon as they exist."""
    todo = [e for e in examples if cache.get(keys[e.id]) is None]
    if not todo:
        return 0, []
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = student.model.to(device).eval()
    processor = model.processor
    for example in todo:  # the manifest loaded before the student, whose tokenizer says what is reserved
        found = first_reserved(vars(example), processor.reserved_text, text_fields(False))
        if found:
            raise example_error(example, *found)
    limit = student.max_audio_seconds or processor.max_audio_seconds
    on_bad_example = getattr(args, "on_bad_example", "error")
    dataset = SpeechSumDataset(todo, processor.sample_rate, limit, "truncate", on_bad_example=on_bad_example, advice=None)
    collate = SpeechCollator(processor, responses=False, on_too_long="error", advice=None)
    skipped: list[SkippedExample] = []

    def record_skipped(batch) -> None:
        warn_skipped(batch)
        skipped.extend(batch.skipped)

    loader = SpeechLoader(dataset, batch_size=args.batch_size, collate_fn=collate, on_skipped=record_skipped)
    torch.manual_seed(args.seed)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, do_sample=True, temperature=args.temperature, top_p=args.top_p
    )
    from lightning.fabric.utilities.apply_func import move_data_to_device

    for batch in tqdm(loader, desc="sampling", unit="batch"):
        batch = move_data_to_device(batch, device)
        batch.audio = model.precompute_audio(batch.audio)
        texts = generate_texts(model, batch, settings, num_return_sequences=args.num_samples).texts
        for row, example_id in enumerate(batch.ids):
            samples = texts[row * args.num_samples : (row + 1) * args.num_samples]
            cache.put(keys[example_id], {"id": example_id, "samples": samples})
    return len(todo) - len(skipped), skipped


def cached_samples(cache: JsonlCache, key: str) -> list[str]:
    """The summaries cached under ``key``, checked: an entry whose ``samples`` were text, not a list
    of texts, was judged letter by letter."""
    samples = cache.get(key).get("samples")
    if not (isinstance(samples, list) and samples and all(isinstance(s, str) for s in samples)):
        shown = json.dumps(samples, ensure_ascii=False)[:200]
        raise ValueError(f"{cache.path}: the entry with key {key}: samples must be a list of summary texts, got "
                         f"{shown}. Remove that line or the file to rebuild the cache.")
    return list(samples)


# -- judging -------------------------------------------------------------------------------------
def distinct(samples: list[str]) -> list[str]:  # not one of only zero-width characters, which DPO's loader refuses
    return [s for s in dict.fromkeys(s.strip() for s in samples) if not blank(s)]


def judge_example(judge: PairwiseJudge, cache: JsonlCache, item: JudgeInput, samples: list[str], pairing: str) -> dict:
    """Pairwise verdicts over the distinct samples (cached per pair), then best vs worst.

    Returns ``{"kind", "chosen", "rejected", "verdict", "wins"}``: kind "pair" when the sample with
    the most wins (a win 1, a tie ½) beat the one with the fewest in their own comparison; "tie"
    otherwise; "unjudged" if any verdict failed (nothing is guessed)."""
    texts = distinct(samples)
    if len(texts) < 2:
        return {"kind": "identical"}
    wanted = [(0, 1)] if pairing == "first-two" else list(itertools.combinations(range(len(texts)), 2))
    verdicts: dict[tuple[int, int], PairVerdict] = {}
    judged_input = judged_input_hash(item)  # the same for every pair of this example
    for i, j in wanted:
        key = cache_key("pair", item.id, judged_input, text_hash(texts[i]), text_hash(texts[j]), judge.identity)
        hit = cache.get(key)
        if hit is not None:
            verdicts[i, j] = PairVerdict.from_cache(hit, f"{cache.path}: the entry with key {key}")
            continue
        verdict = judge.compare(item, texts[i], texts[j])
        if not verdict.judged:
            return {"kind": "unjudged", "reasons": verdict.reasons}
        cache.put(key, {"winner": verdict.winner, "reasons": verdict.reasons, "details": verdict.details})
        verdicts[i, j] = verdict
    wins = [0.0] * len(texts)
    for (i, j), verdict in verdicts.items():
        if verdict.winner == "tie":
            wins[i] += 0.5
            wins[j] += 0.5
        else:
            wins[i if verdict.winner == "A" else j] += 1.0
    involved = sorted({k for pair in verdicts for k in pair})
    best = max(involved, key=lambda k: (wins[k], -k))
    worst = min(involved, key=lambda k: (wins[k], -k))
    direct = verdicts.get((min(best, worst), max(best, worst)))
    best_won = direct is not None and direct.winner == ("A" if best < worst else "B")
    if best == worst or not best_won:
        return {"kind": "tie"}
    return {"kind": "pair", "chosen": texts[best], "rejected": texts[worst], "verdict": direct, "wins": wins,
            "num_distinct": len(texts)}


def output_row(example: Example, record: dict, result: dict, judge: PairwiseJudge, out_dir: Path) -> dict:
    audio = Path(example.audio)
    audio_field = str(audio.relative_to(out_dir.resolve())) if audio.is_relative_to(out_dir.resolve()) else str(audio)
    verdict: PairVerdict = result["verdict"]
    row = {"id": example.id, "audio": audio_field, "instruction": example.instruction}
    row.update({k: record[k] for k in ("transcript", "summary", "lang", "duration") if record.get(k) is not None})
    row.update({"chosen": result["chosen"], "rejected": result["rejected"]})
    row["meta"] = {
        **(example.meta or {}),
        "judge": {
            "name": judge.name,
            "identity": judge.identity,
            "reasons": verdict.reasons,
            "details": verdict.details,
            "wins": result["wins"],
            "num_distinct_samples": result["num_distinct"],
        },
    }
    return row


def build_judge(args) -> PairwiseJudge:
    if args.judge == "fact":
        return FactPairJudge()
    return OpenAIJudge(args.judge_model, base_url=args.judge_base_url, api_key_env=args.api_key_env,
                       timeout=args.judge_timeout, request_attempts=args.judge_attempts,
                       max_tokens=args.judge_max_tokens)


def cache_folder(args) -> Path:
    """The caches' folder: ``--cache``, else ``OUT.cache``."""
    return Path(args.cache) if args.cache else Path(args.out).with_name(Path(args.out).name + ".cache")


def run_pairs(args, judge: PairwiseJudge | None = None, student: Student | None = None) -> dict:
    """The whole job (``main`` without argument parsing); returns the counts it printed."""
    check_output_path(args.out, "--out")  # before hours of sampling
    check_not_an_input(args.out, "--out", [("--manifest", args.manifest), ("--ckpt", args.ckpt), ("--config", args.config)])
    check_output_path(cache_folder(args), "--cache" if args.cache else "the default --cache", folder=True)
    check_not_above(args.out, "--out", cache_folder(args), "--cache")
    if args.device:  # torch.device("tpu9") or CUDA on a machine without one: a traceback after the model loaded
        check_device(args.device)
    if judge is None and args.judge == "openai":  # before sampling: the judge's key as the options name it
        check_key_option(args.api_key_env, args.judge_base_url)
    judge = judge or build_judge(args)
    examples, skipped = load_manifest(args.manifest, require_transcript=args.judge == "openai",
                                      on_bad_example=getattr(args, "on_bad_example", "error"))
    records = loaded_records(args.manifest, examples)
    out = Path(args.out)
    if isinstance(judge, FactPairJudge):  # known before sampling, which can take hours
        no_meta = [e.id for e in examples if not e.meta]
        if no_meta:
            raise ValueError(f"{args.manifest}: {len(no_meta)} example(s) have no `meta` (facts, entities), e.g. "
                             f"{no_meta[:3]}: the fact judge (--judge fact) scores the bundled benchmark's examples "
                             "only; use --judge openai for other data")
    check_input_file(args.ckpt, "--ckpt")
    check_input_file(args.config, "--config")
    cache_dir = cache_folder(args)
    for name in ("samples.jsonl", "verdicts.jsonl"):
        check_cache_path(cache_dir / name, "--cache", [("--manifest", args.manifest)], [("--out", out)])
    fresh_cache = not cache_dir.exists()  # not left behind empty by a run that fails before sampling
    samples_cache, verdicts_cache = JsonlCache(cache_dir / "samples.jsonl"), JsonlCache(cache_dir / "verdicts.jsonl")
    try:
        settings = (checkpoint_identity(args.ckpt), args.num_samples, args.temperature, args.top_p,
                    args.max_new_tokens, args.seed)
        keys = {e.id: cache_key("samples", e.id, e.audio, audio_hash(e.audio), e.instruction, *settings)
                for e in examples}
        todo = [e for e in examples if samples_cache.get(keys[e.id]) is None]
        if todo and student is None:
            student = load_student(args.ckpt, args.config)
        sampled, unread = sample_summaries(student, examples, samples_cache, keys, args) if todo else (0, [])
        examples = [e for e in examples if samples_cache.get(keys[e.id]) is not None]  # less those unread

        counts: Counter = Counter()
        lock = threading.Lock()

        def judge_one(example: Example) -> dict:
            item = JudgeInput(example.id, example.instruction, example.transcript, example.meta)
            samples = cached_samples(samples_cache, keys[example.id])
            if getattr(args, "add_reference", False) and example.summary:
                samples.append(example.summary)
            result = judge_example(judge, verdicts_cache, item, samples, args.pairing)
            with lock:
                counts[result["kind"]] += 1
            return result

        try:
            results = map_concurrent(judge_one, examples, max_workers=args.concurrency, desc="judging",
                                     postfix=lambda: {"pairs": counts["pair"], "ties": counts["tie"],
                                                      "failures": counts["unjudged"]})
        except Exception as error:  # e.g. a 401: one line naming the endpoint, not a traceback
            client = getattr(judge, "client", None)
            stop = client and endpoint_failure("speechsum pairs", client, args.api_key_env, error, cache_dir)
            if not stop:
                raise
            raise stop from error
    finally:
        samples_cache.close()
        verdicts_cache.close()
        if fresh_cache:
            remove_if_empty(cache_dir)
    client = getattr(judge, "client", None)
    if client is not None:  # a remote judge that refused every request: no empty pairs file, one line
        check_not_all_refused([r.get("reasons") if r["kind"] == "unjudged" else None for r in results
                               if r["kind"] != "identical"], str(client.base_url), args.judge_model, "the pair judge")
    if not counts["pair"]:  # not an empty file DPO refuses as 'no JSON line'; samples and verdicts stay cached
        raise ValueError(f"no preference pair from the {len(examples)} examples ({counts['tie']} ties, {counts['identical']} "
                         f"with < 2 distinct samples, {counts['unjudged']} unjudged, {len(unread)} unreadable audio); nothing "
                         f"written to {out}. Samples and verdicts stay cached in {cache_dir}: rerun with --add-reference "
                         "(the reference summary as a candidate), a higher --num-samples or --temperature, or another judge")
    rows = [output_row(e, records[e.id], r, judge, out.parent) for e, r in zip(examples, results) if r["kind"] == "pair"]
    write_jsonl(out, rows)
    summary = {
        "examples": len(examples),
        "skipped_lines": len(skipped),
        "skipped_unreadable_audio": len(unread),
        "sampled_now": sampled,
        "pairs": counts["pair"],
        "ties": counts["tie"],
        "unjudged": counts["unjudged"],
        "identical_samples": counts["identical"],
        "judge": judge.identity,
        "judge_calls": getattr(judge, "calls", None),
        "judge_usage": judge.usage() if hasattr(judge, "usage") else None,
        "out": str(out),
    }
    print(f"speechsum pairs: {summary['pairs']} pairs from {summary['examples']} examples -> {out}")
    print(f"  dropped: {summary['ties']} ties, {summary['unjudged']} unjudged (failed/malformed verdicts), "
          f"{summary['identical_samples']} with < 2 distinct samples; judge {judge.identity}, "
          f"{summary['judge_calls']} judge calls this run, {sampled} examples sampled this run")
    if skipped or unread:
        print(f"  skipped (--on-bad-example skip): {len(skipped)} bad manifest line(s), {len(unread)} example(s) "
              "whose audio failed when read; each is logged above")
    if summary["judge_usage"]:
        print(f"  judge endpoint: {summary['judge_usage']}")
    return summary


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    run_pairs(args)
