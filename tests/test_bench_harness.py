"""The benchmark harness's fairness helpers (our side only; TRL is never imported by tests)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from benchmarks.common import (
    StepLog,
    alternate,
    describe_llm,
    emit,
    medians,
    model_shapes,
    prompt_completion_inputs,
    speech_batch,
    speedup,
    tokenize_examples,
    with_vocab,
)


def test_throughput_counts_whole_steps_after_the_warmup():
    log = StepLog(starts=[0.0, 10.0, 12.0, 14.0], samples=[4, 4, 4, 4], tokens=[99, 8, 8, 0])
    figures = log.throughput(warmup=1)  # steps 1 and 2 (10 → 14 s); step 3 only marks the end
    assert figures == {"seconds_per_step": 2.0, "samples_per_s": 2.0, "tokens_per_s": 4.0, "tokens_per_step": 8.0}
    with pytest.raises(ValueError, match="at least 3 steps"):
        StepLog([0.0, 1.0], [1, 1], [1, 1]).throughput(warmup=1)


def test_alternation_flips_the_order_and_medians_and_speedup():
    calls = []
    counter = iter(range(100))

    def run(name):
        def go():
            calls.append(name)
            return {"samples_per_s": float(next(counter))}
        return go

    results = alternate({"ours": run("ours"), "base": run("base")}, repeats=3, log=lambda _: None)
    assert calls == ["ours", "base", "base", "ours", "ours", "base"]
    table = medians(results)
    assert table == {"ours": {"samples_per_s": 3.0}, "base": {"samples_per_s": 2.0}}
    assert speedup(table["ours"], table["base"]) == 1.5


def test_batches_match_what_trl_builds_from_the_same_tokens():
    from speechsum.models.text_llm import TextProcessor
    from speechsum.models.tokenizer import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    records = [{"id": f"d{i}", "instruction": "Summarise.", "transcript": "A: hi. " * (i + 1),
                "summary": f"Fact {i}. Other fact."} for i in range(3)]
    examples = tokenize_examples(records, TextProcessor(tokenizer), max_prompt_tokens=60)
    assert all(len(e.prompt) <= 60 for e in examples)
    assert all(e.response[-1] == tokenizer.eos_token_id and e.rejected != e.response for e in examples)
    batch = speech_batch(examples, tokenizer.pad_token_id, preference=True)
    inputs = prompt_completion_inputs(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
    for row, example in enumerate(examples):  # real tokens in order, labels only on the completion
        kept = inputs["input_ids"][row][inputs["attention_mask"][row] == 1].tolist()
        assert kept == example.prompt + example.response
        labels = inputs["labels"][row]
        assert labels[labels != -100].tolist() == example.response
    assert torch.equal(batch.chosen_ids, batch.response_ids)
    assert with_vocab({"a": 1}, None) == {"a": 1} and with_vocab({"a": 1}, 7)["vocab_size"] == 7


def test_pipeline_shapes_are_the_default_pipelines_text_lms():
    student, teacher, world = model_shapes("pipeline")
    assert (describe_llm(student), describe_llm(teacher), world) == ("Phi 4×128", "Phi 4×256", "compact")
    assert student["intermediate_size"] == 384 and teacher["intermediate_size"] == 1024
    assert describe_llm(model_shapes("llama")[1]) == "Llama 6×384"
    with pytest.raises(ValueError, match="unknown shapes 'gpt'"):
        model_shapes("gpt")


def test_the_harness_helpers_do_not_need_trl():
    assert "trl" not in sys.modules


def test_json_results_go_into_a_new_folder(tmp_path, capsys):
    out = tmp_path / "new" / "folder" / "result.json"
    result = {"ratio": 2.02, "path": tmp_path}  # a value JSON cannot hold is written as str
    assert emit(result, str(out)) is result
    assert json.loads(out.read_text()) == {"ratio": 2.02, "path": str(tmp_path)}
    assert json.loads(capsys.readouterr().out) == json.loads(out.read_text())


def test_warm_start_benchmark_times_both_starts_of_a_real_command(tmp_path, toy_data):
    from benchmarks.warm_start import main
    from tests.helpers import run_config

    out = tmp_path / "warm_start.json"
    main(["--config", str(run_config(tmp_path, toy_data)), "--repeats", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert len(result["fresh_s"]) == len(result["warm_s"]) == 1
    assert result["fresh_median_s"] > 0 and result["warm_median_s"] > 0
    assert result["command"].endswith("--print_config")


def test_collate_speed_benchmark_times_both_collations_of_a_cached_stage(tmp_path, toy_data):
    import yaml

    from benchmarks.collate_speed import main
    from tests.helpers import run_config

    config_path = run_config(tmp_path, toy_data)
    config = yaml.safe_load(config_path.read_text())
    config["model"]["init_args"]["model"]["init_args"]["feature_cache"] = str(tmp_path / "cache")
    config_path.write_text(yaml.safe_dump(config))
    result = main(["--config", str(config_path), "--batches", "2", "--repeats", "1", "--output", str(tmp_path / "r.json")])
    assert result["batches"] == 2 and len(result["passes"]["eager"]) == len(result["passes"]["deferred"]) == 1
    assert result["s_per_batch"]["eager"] > 0 and result["s_per_batch"]["deferred"] > 0
    assert json.loads((tmp_path / "r.json").read_text())["speedup"] == result["speedup"]
    with pytest.raises(SystemExit, match="does not defer"):  # no feature cache: nothing to compare
        main(["--config", str(run_config(tmp_path / "plain", toy_data)), "--batches", "1"])


def test_the_schedule_replay_reproduces_a_run_and_prices_the_dpo_lane():
    """benchmarks/schedule_sim.py on the committed EPYC runs: the old table on the old run's stage
    times gives its wall (780.6 s measured), and the current table on the same times is 35 s shorter."""
    from pathlib import Path

    from benchmarks.schedule_sim import old_dpo_table, simulate
    from speechsum.pipeline.table import PIPELINE

    summary = Path(__file__).parents[1] / "benchmarks/results/pipeline/epyc_dpo_lane_2026-12-07/pipeline_summary_b41db2e.json"
    seconds = {name: stage["elapsed_s"] for name, stage in json.loads(summary.read_text())["stages"].items()}
    old = simulate(old_dpo_table(), seconds)
    assert round(old["report"][1], 1) == 778.7 and old["dpo"][0] == old["baselines"][1]  # DPO waited for them
    new = simulate(PIPELINE, {**seconds, "dpo": 69.0, "evaluate_dpo": 27.1})  # the one-thread times
    assert round(new["report"][1], 1) == 743.4 and new["dpo"][0] == new["pairs"][1]


def test_the_schedule_replay_bounds_what_any_start_order_could_save():
    """The work on two lanes (the benchmark and report alone) bounds the wall of any start order:
    on the committed EPYC run of the current table it is 760.7 s against the replayed 763.5 s, so
    ordering by duration instead of chain length could save 3 s at most there."""
    from pathlib import Path

    from benchmarks.schedule_sim import lower_bound, simulate
    from speechsum.pipeline.table import PIPELINE

    summary = Path(__file__).parents[1] / "benchmarks/results/pipeline/epyc_dpo_lane_2026-12-07/pipeline_summary_2c1c6b1.json"
    seconds = {name: stage["elapsed_s"] for name, stage in json.loads(summary.read_text())["stages"].items()}
    bound = lower_bound(PIPELINE, seconds)
    assert round(bound["work_s"], 1) == 760.7 and round(bound["path_s"], 1) == 727.6
    assert bound["wall_s"] == bound["work_s"]
    assert round(simulate(PIPELINE, seconds)["report"][1], 1) == 763.5
    toy = {name: 1.0 for name in PIPELINE.names}  # one second each: the chain decides
    assert lower_bound(PIPELINE, toy)["path_s"] == max(PIPELINE.chain(name) for name in PIPELINE.names)


def test_length_groups_keep_rows_times_longest_within_the_budget():
    from benchmarks.kd_levers import length_groups

    assert length_groups([5, 3, 9, 4], 10) == [[1, 3], [0], [2]]  # 2 x 4 <= 10; 3 x 5 > 10; 9 alone
    assert length_groups([20, 20], 10) == [[0], [1]]  # a row over the budget is a group of its own
    assert length_groups([2, 2, 2], 100) == [[0, 1, 2]]


def test_grouped_forward_gives_the_padded_forwards_logits_and_gelu_forms_agree():
    from benchmarks.kd_levers import grouped_response_logits, sigmoid_form_gelu
    from speechsum.models.text_llm import TextLLM, TextProcessor
    from speechsum.models.tokenizer import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    model = TextLLM(llm={"model_type": "phi", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "hidden_act": "gelu_pytorch_tanh"}, init_seed=0)
    records = [{"id": f"d{i}", "instruction": "Summarise.", "transcript": "A: hi. " * (3 * i + 1),
                "summary": "Fact."} for i in range(4)]
    batch = speech_batch(tokenize_examples(records, TextProcessor(tokenizer), max_prompt_tokens=200),
                         tokenizer.pad_token_id)
    ids = torch.randint(0, 200, (4, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2, [1] * 5, [1] * 4 + [0]])
    with torch.no_grad():
        padded = grouped_response_logits(model, batch, ids, mask, None)
        grouped = grouped_response_logits(model, batch, ids, mask, 1)  # one row per group, left padding cut
    assert padded.shape == grouped.shape == (4, 5, model.llm.config.vocab_size)
    assert torch.allclose(padded, grouped, atol=1e-5)
    x = torch.linspace(-8, 8, 1001)
    assert torch.allclose(sigmoid_form_gelu(x), torch.nn.functional.gelu(x, approximate="tanh"), atol=1e-6)
