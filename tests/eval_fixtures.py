"""Session fixtures for the evaluation tests: a tiny benchmark-style test set (transcripts + meta),
tiny random-init text LMs, a tiny student checkpoint from a real one-step ``fit``, and one real
``speechsum evaluate`` run over them (also the results fixture of the notebook test)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from tests.conftest import CONFIGS
from tests.servers import ScriptedChatBackend, prompt_text, serve_in_thread

FAKE_OPENAI_KEY = "sk-fake-openai-key-for-eval-tests-7f3a"
FAKE_WANDB_KEY = "fakewandbkey0123456789abcdef0123456789abcd"

DOCUMENTS = [
    ("meeting", "one_sentence", "Summarise the meeting in one sentence.",
     "Maria: The budget is forty thousand euros.\nTom: I will send the report on Friday.",
     "Maria set the budget at 40,000 euros and Tom will send the report on Friday.",
     [{"kind": "number", "text": "budget 40,000 euros", "keys": ["40000"]},
      {"kind": "action", "text": "Tom sends the report on Friday", "keys": ["tom", "report", "friday"]}],
     ["maria", "tom", "40000", "friday"], ["Maria", "Tom"]),
    ("call", "bullets", "List the key points as bullets.",
     "Ana: The launch moves to March third.\nLee: Berlin hosts the event.",
     "- The launch moves to March 3.\n- Berlin hosts the event.",
     [{"kind": "date", "text": "launch on March 3", "keys": ["launch", "march 3"]},
      {"kind": "place", "text": "event in Berlin", "keys": ["berlin"]}],
     ["ana", "lee", "march 3", "berlin"], ["Ana", "Lee"]),
    ("lecture", "one_sentence", "What was the lecture about, in one sentence?",
     "Kim: Today we cover photosynthesis and the Calvin cycle.",
     "The lecture by Kim covers photosynthesis and the Calvin cycle.",
     [{"kind": "person", "text": "Kim", "keys": ["kim"]},
      {"kind": "decision", "text": "topic photosynthesis", "keys": ["photosynthesis"]}],
     ["kim", "calvin"], ["Kim"]),
]


def write_eval_set(folder: Path) -> dict[str, Path]:
    """Manifests ``test`` (4 lines) and ``test_unseen`` (2 lines) with espeak speech, transcripts and meta."""
    from speechsum.benchmark.tts import synthesize

    (folder / "audio").mkdir(parents=True, exist_ok=True)
    manifests = {}
    for split, count in (("test", 4), ("test_unseen", 2)):
        lines = []
        for index in range(count):
            genre, style, instruction, transcript, summary, facts, entities, speakers = DOCUMENTS[index % 3]
            speech = " ".join(line.partition(": ")[2] for line in transcript.splitlines())
            sf.write(folder / "audio" / f"{split}-{index}.wav", synthesize(speech, rate=220), 16_000)
            meta = {"doc_id": f"{split}-{index}", "split": split, "genre": genre, "style": style, "lang": "en",
                    "speakers": speakers, "facts": facts, "required_facts": list(range(len(facts))), "entities": entities}
            lines.append({"id": f"{split}-{index}", "audio": f"audio/{split}-{index}.wav", "instruction": instruction,
                          "summary": summary, "transcript": transcript, "lang": "en", "meta": meta})
        manifests[split] = folder / f"{split}.jsonl"
        manifests[split].write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifests


def save_tiny_text_lm(folder: Path, seed: int) -> Path:
    from speechsum.models.text_llm import TextLLM

    llm = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
           "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 1024}
    TextLLM(llm=llm, init_seed=seed).save_pretrained(folder)
    return folder


def fit_tiny_student(folder: Path, manifests: dict[str, Path]) -> Path:
    """One real training step of the tiny composed student (configs/model/composed_tiny.yaml)."""
    from speechsum.cli import lightning_cli

    config = yaml.safe_load((CONFIGS / "trainer" / "cpu.yaml").read_text().replace("runs/default", str(folder)))
    config.update(yaml.safe_load((CONFIGS / "model" / "composed_tiny.yaml").read_text()))
    config["trainer"].update({"max_steps": 1, "enable_progress_bar": False, "enable_model_summary": False,
                              "limit_val_batches": 0, "callbacks": config["trainer"]["callbacks"][:1]})
    config["data"] = {"train_manifest": str(manifests["test"]), "max_batch_size": 4, "num_buckets": 1}
    path = folder / "fit.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    lightning_cli(["fit", "--config", str(path)])
    return folder / "checkpoints" / "last.ckpt"


def scripted_judge_reply(messages: list[dict]) -> str:
    """A deterministic judge: score from a hash of the candidate (1..7)."""
    candidate = prompt_text(messages).rpartition("CANDIDATE:\n")[2]
    score = 1 + zlib.crc32(candidate.encode()) % 7
    return json.dumps({"accuracy": score, "coherence": score, "style": score, "hallucination": score,
                       "instruction_following": score, "score": score, "reasons": "scripted"})


_RUNS: dict[int, dict] = {}  # one run per session, also when several test modules import the fixture


@pytest.fixture(scope="session")
def eval_run(tmp_path_factory) -> dict:
    """A real `speechsum evaluate` run (5 systems × 2 splits, LLM judge through `speechsum serve`'s
    HTTP stack, W&B offline) with fake API keys in the environment; returns its paths."""
    if id(tmp_path_factory) not in _RUNS:
        _RUNS[id(tmp_path_factory)] = _evaluate_once(tmp_path_factory)
    return _RUNS[id(tmp_path_factory)]


def _evaluate_once(tmp_path_factory) -> dict:
    from speechsum.evaluation.cli import evaluate_main

    root = tmp_path_factory.mktemp("eval")
    manifests = write_eval_set(root / "data")
    teacher = save_tiny_text_lm(root / "teacher", seed=1)
    backbone = save_tiny_text_lm(root / "backbone", seed=2)
    student = fit_tiny_student(root / "sft", manifests)
    systems = root / "systems.yaml"
    systems.write_text(yaml.safe_dump([
        {"kind": "student", "name": "base", "path": str(CONFIGS / "model" / "composed_tiny.yaml")},
        {"kind": "cascade", "name": "cascade", "path": "backbone"},
    ]))
    out = root / "results"
    mp = pytest.MonkeyPatch()
    mp.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
    mp.setenv("WANDB_API_KEY", FAKE_WANDB_KEY)
    mp.setenv("WANDB_MODE", "offline")
    backend = ScriptedChatBackend(scripted_judge_reply)
    try:
        with serve_in_thread(backend, api_key=FAKE_OPENAI_KEY) as url:
            evaluate_main([
                "--system", f"text:teacher:{teacher}", "--system", f"text:backbone:{backbone}",
                "--system", f"student:sft:{student}", "--systems", str(systems),
                "--manifest", str(manifests["test"]), "--manifest", f"test_unseen={manifests['test_unseen']}",
                "--out", str(out), "--max-new-tokens", "12", "--batch-size", "3", "--accelerator", "cpu",
                "--metrics", "rouge,bertscore,fact_judge,llm_judge", "--judge-base-url", url,
                "--judge-model", "scripted", "--bootstrap-resamples", "200", "--wandb",
            ])
    finally:
        mp.undo()
    return {"root": root, "out": out, "manifests": manifests, "judge_requests": backend.count}
