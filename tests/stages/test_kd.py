"""OnPolicyKDModule + TeacherScoringCallback through the real `speechsum fit` CLI and by hand."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml

from speechsum.cli import lightning_cli
from speechsum.models.checkpoint import read_checkpoint
from speechsum.utils.arguments import ConfigError
from tests.helpers import run_config

TEACHER_LLM = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 272,  # the tiny student's embedding size
    "max_position_embeddings": 1024,
}


@pytest.fixture(scope="module")
def teacher_dir(toy_data, tmp_path_factory):
    """A tiny text teacher trained briefly on the toy set (transcript + instruction → summary),
    saved as an HF directory with the student's byte tokenizer: peaked, sensible distributions."""
    from speechsum.data.manifest import load_manifest
    from speechsum.losses import masked_cross_entropy
    from speechsum.models.text_llm import TextLLM

    torch.manual_seed(0)
    lm = TextLLM(llm=TEACHER_LLM, end_of_turn="<|im_end|>", init_seed=7)
    examples, _ = load_manifest(toy_data["train"])
    prompts = lm.processor.encode_prompts((), [e.instruction for e in examples], [e.transcript for e in examples])
    response_ids, response_mask = lm.processor.encode_responses([e.summary for e in examples])
    batch = SimpleNamespace(audio={}, prompt_ids=prompts.prompt_ids, prompt_mask=prompts.prompt_mask)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    for _ in range(60):
        loss = masked_cross_entropy(lm.response_logits(batch, response_ids, response_mask), response_ids, response_mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = tmp_path_factory.mktemp("teacher") / "toy-teacher"
    lm.save_pretrained(out)
    return out


def hf_teacher(teacher_dir) -> dict:
    return {"class_path": "speechsum.stages.kd.teachers.HFTeacher", "init_args": {"model": str(teacher_dir)}}


def kd_config(tmp_path, toy_data, teacher, **kd_args):
    """tests.helpers.run_config turned into a KD run: OnPolicyKDModule + the teacher above."""
    path = run_config(tmp_path, toy_data, num_sanity_val_steps=0, log_every_n_steps=1)
    config = yaml.safe_load(path.read_text())
    model = config["model"]
    model["class_path"] = "speechsum.stages.kd.OnPolicyKDModule"
    model["init_args"].update({"teacher": teacher, "max_new_tokens": 8, **kd_args})
    config["data"]["require_transcript"] = True
    model["init_args"]["model"]["init_args"]["policy"]["llm"] = "full"  # learns fast enough for a test
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def metric_rows(run_dir):
    metrics = next(run_dir.glob("logs/version_*/metrics.csv"))
    return list(csv.DictReader(metrics.open()))


def test_kd_fit_lowers_the_students_kl_to_the_teacher(tmp_path, toy_data, teacher_dir):
    config = kd_config(tmp_path, toy_data, hf_teacher(teacher_dir), learning_rate=0.005, warmup_steps=2, loss="jsd", beta=0.5)
    cli = lightning_cli(["fit", "--config", str(config), "--trainer.max_epochs", "4"])
    rows = metric_rows(tmp_path / "run")
    val_kl = [float(r["val/kl"]) for r in rows if r.get("val/kl")]
    assert len(val_kl) == 4
    print("val/kl per epoch", val_kl)
    # greedy validation completions of 8 tokens: a flipped token moves one epoch's KL (e.g. with 2
    # threads instead of 1), so the best later epoch must be well below the first and the last below it
    assert min(val_kl[1:]) < 0.85 * val_kl[0] and val_kl[-1] < val_kl[0], val_kl

    train = [r for r in rows if r.get("train/loss")]
    assert len(train) == cli.trainer.global_step
    for name in ("train/kl", "train/time_generation", "train/time_teacher", "train/time_optimization",
                 "train/generated_tokens_per_s", "train/completion_length", "train/hit_max_new_tokens",
                 "train/repetition_rate"):
        values = [float(r[name]) for r in rows if r.get(name)]
        assert len(values) == len(train) and all(v >= 0 for v in values), name
    assert all(float(r["train/on_policy"]) == 1.0 for r in train)  # lmbda defaults to 1

    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")  # weights-only loadable
    assert not any("teacher" in key for key in checkpoint["state_dict"])  # teacher weights never saved
    assert checkpoint["hyper_parameters"]["teacher"]["class_path"].endswith("HFTeacher")  # its config is


def test_off_policy_steps_use_the_reference_and_sampled_token_loss_trains(tmp_path, toy_data, teacher_dir):
    config = kd_config(tmp_path, toy_data, hf_teacher(teacher_dir), lmbda=0.0, loss="sampled_token")
    cli = lightning_cli(["fit", "--config", str(config), "--trainer.max_steps", "3", "--trainer.limit_val_batches", "1"])
    rows = [r for r in metric_rows(tmp_path / "run") if r.get("train/loss")]
    assert len(rows) == 3 and all(float(r["train/on_policy"]) == 0.0 for r in rows)
    assert not any(r.get("train/generated_tokens_per_s") for r in rows)  # nothing generated
    assert cli.trainer.global_step == 3


def one_batch(module, toy_data):
    from speechsum.data.datamodule import SpeechSumDataModule

    data = SpeechSumDataModule(train_manifest=str(toy_data["train"]), max_batch_seconds=8.0, max_batch_size=3)
    data.processor = module.processor
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def build_module(tiny_composed, **kwargs):
    from speechsum.stages.kd.module import OnPolicyKDModule
    from speechsum.stages.kd.teachers import HFTeacher

    return OnPolicyKDModule(tiny_composed, HFTeacher(TEACHER_LLM), max_new_tokens=6, **kwargs)


def test_frozen_encoder_runs_once_per_step(tiny_composed, toy_data):
    from speechsum.stages.kd.scoring_callback import TeacherScoringCallback

    module = build_module(tiny_composed)
    batch = one_batch(module, toy_data)
    calls = []
    encode = module.model._encode_windows  # a frozen encoder runs as its snapshot, not the module

    def counted(*args):
        calls.append(1)
        return encode(*args)

    module.model._encode_windows = counted
    callback = TeacherScoringCallback()
    callback._start(L.Trainer(accelerator="cpu", logger=False), module, batch, "val", 0)  # student generates, teacher scores
    rollout = module.pending_rollout
    ids, mask = rollout.completion_ids, rollout.completion_mask
    loss = module.kd_loss(module.model.response_logits(batch, ids, mask), ids, mask, rollout.teacher_scores())
    assert torch.isfinite(loss)
    assert len(calls) == 1, "the frozen encoder ran more than once for generation + training forward"


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "bf16-true"])
def test_rollout_and_teacher_scores_run_under_the_trainers_precision(tiny_composed, toy_data, precision, overlap):
    """Callback hooks run outside the step's autocast: the callback enters it itself, in the
    teacher's thread too when it overlaps. A ``*-true`` precision's context (the process-wide
    default dtype) is not entered, in either thread."""
    from speechsum.stages.kd.scoring_callback import TeacherScoringCallback

    module = build_module(tiny_composed)
    batch = one_batch(module, toy_data)
    seen = {}
    make_rollout, score = module.make_rollout, module.teacher.score

    def rollout_watched(*args, **kwargs):
        seen["rollout"] = torch.is_autocast_enabled("cpu")
        return make_rollout(*args, **kwargs)

    def score_watched(*args, **kwargs):
        seen["teacher"] = torch.is_autocast_enabled("cpu")
        return score(*args, **kwargs)

    module.make_rollout, module.teacher.score = rollout_watched, score_watched
    callback = TeacherScoringCallback(overlap=overlap)
    trainer = L.Trainer(accelerator="cpu", precision=precision, logger=False)
    callback._start(trainer, module, batch, "train", 0)
    assert module.pending_rollout.teacher_scores() is not None
    callback.teardown(trainer, module, "fit")
    assert seen == {"rollout": precision == "bf16-mixed", "teacher": precision == "bf16-mixed"}
    assert torch.get_default_dtype() == torch.float32


def test_a_teacher_that_cannot_score_needs_sequence_level_kd(tiny_composed):
    from speechsum.stages.kd.module import OnPolicyKDModule
    from speechsum.stages.kd.teachers import OpenAICompatibleTeacher

    teacher = OpenAICompatibleTeacher("gpt-4o", base_url="http://127.0.0.1:9/v1", scoring="none")
    with pytest.raises(ValueError, match="seq_kd: true and lmbda: 0"):
        OnPolicyKDModule(tiny_composed, teacher)
    module = OnPolicyKDModule(tiny_composed, teacher, seq_kd=True, lmbda=0.0)
    assert "teacher" not in module.hparams  # a teacher object is never pickled into checkpoints


def test_an_empty_teacher_summary_carries_no_loss_in_sequence_level_kd(tiny_composed, toy_data, caplog):
    """A teacher that wrote nothing (a content filter, max_tokens spent on reasoning): before, the
    student learnt the empty summary, i.e. to end its answer at once."""
    import logging

    from speechsum.stages.kd.module import OnPolicyKDModule
    from speechsum.stages.kd.teachers import HFTeacher

    class TerseTeacher(HFTeacher):
        def write_summaries(self, batch, max_new_tokens):
            return [" ", *["A short summary."] * (len(batch) - 1)]

    module = OnPolicyKDModule(tiny_composed, TerseTeacher(TEACHER_LLM), max_new_tokens=6, seq_kd=True, lmbda=0.0)
    batch = one_batch(module, toy_data)
    with caplog.at_level(logging.WARNING, logger="speechsum.stages.kd.module"):
        rollout = module.make_rollout(batch, "train")
    assert not rollout.on_policy and rollout.completion_mask[0].sum() == 0
    assert (rollout.completion_mask[1:].sum(1) > 0).all()
    assert f"the teacher wrote no summary for 1 of {len(batch)} examples ({batch.ids[0]})" in caplog.text


def test_kd_with_a_remote_teacher_over_http(tmp_path, toy_data, teacher_dir):
    """Teacher behind `speechsum serve` on loopback: top-k scores, the top-k + tail loss, overlap on."""
    from speechsum.serving.cli import HFBackend
    from tests.servers import serve_in_thread

    backend = HFBackend(teacher_dir)
    with serve_in_thread(backend) as url:
        remote = {
            "class_path": "speechsum.stages.kd.teachers.OpenAICompatibleTeacher",
            "init_args": {"model": backend.model_name, "base_url": url, "tokenizer": str(teacher_dir), "top_k": 8},
        }
        config = kd_config(tmp_path, toy_data, teacher=remote, teacher_overlap=True, loss="reverse_kl")
        lightning_cli(["fit", "--config", str(config), "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"])
    rows = metric_rows(tmp_path / "run")
    kl = [float(r["train/kl"]) for r in rows if r.get("train/kl")]
    assert len(kl) == 2 and all(v > 0 for v in kl)
    assert [r for r in rows if r.get("train/time_teacher_wait")]
    assert [r for r in rows if r.get("val/kl")]


def test_a_teacher_object_never_becomes_a_hyperparameter(tiny_composed):
    module = build_module(tiny_composed, lmbda=0.25)
    assert module.hparams["lmbda"] == 0.25 and module.hparams["max_new_tokens"] == 6
    assert not {"model", "teacher"} & (module.hparams.keys() | module.hparams_initial.keys())


def test_a_key_given_as_the_teachers_api_key_env_is_refused_unsaved_and_unshown(tmp_path, toy_data, capsys):
    """The key where its variable's name belongs: before, it went into config.yaml, hparams and the
    checkpoint, and the error said "the environment variable sk-… is not set" at the first request."""
    from speechsum.cli import main

    key = "sk-PROBE-123-the-key-itself"
    remote = {"class_path": "speechsum.stages.kd.teachers.OpenAICompatibleTeacher",
              "init_args": {"model": "teacher", "base_url": "http://127.0.0.1:9/v1", "scoring": "none", "api_key_env": key}}
    config = kd_config(tmp_path, toy_data, teacher=remote, seq_kd=True, lmbda=0.0)
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(config), "--trainer.max_steps", "1"])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert ("speechsum fit: error: OpenAICompatibleTeacher api_key_env: expected the name of the environment variable "
            "holding the API key (letters, digits and _, e.g. OPENAI_API_KEY), not the key itself") in error
    assert key not in error
    assert not [path for path in (tmp_path / "run").rglob("*") if path.is_file() and key.encode() in path.read_bytes()]


@pytest.mark.parametrize(("url", "problem"), [
    ("127.0.0.1:8000/v1", "'127.0.0.1:8000/v1' is not an http:// or https:// URL; write it whole, e.g. "
                          "http://127.0.0.1:8000/v1"),
    ("http:///v1", "'http:///v1' names no host: write it whole, e.g. http://127.0.0.1:8000/v1"),
])
def test_a_teachers_base_url_no_client_can_reach_is_refused_before_training(tmp_path, toy_data, capsys, url, problem):
    """Before: refused by the client at the first training step naming no setting, or (no host) tried as a
    connection error, retried, after the model and the run folder were made."""
    from speechsum.cli import main

    remote = {"class_path": "speechsum.stages.kd.teachers.OpenAICompatibleTeacher",
              "init_args": {"model": "teacher", "base_url": url, "scoring": "none", "attempts": 1}}
    config = kd_config(tmp_path, toy_data, teacher=remote, seq_kd=True, lmbda=0.0)
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(config), "--trainer.max_steps", "1"])
    assert stop.value.code == 2
    assert f"speechsum fit: error: OpenAICompatibleTeacher base_url {problem}\n" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_line_without_a_transcript_is_a_bad_line_at_load_when_the_teacher_reads_them(tmp_path, toy_data, teacher_dir,
                                                                                         capsys):
    """With data.require_transcript left at its default (false), such a line crashed KD with a traceback
    when its batch reached the teacher, after the steps before it; ``predict`` still needs none."""
    import json

    from speechsum.cli import main

    config = kd_config(tmp_path, toy_data, hf_teacher(teacher_dir))
    settings = yaml.safe_load(config.read_text())
    settings["data"]["require_transcript"] = False
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    rows = [json.loads(line) for line in toy_data["train"].read_text().splitlines()]
    for row in rows:
        row["audio"] = str(toy_data["train"].parent / row["audio"])
    del rows[7]["transcript"]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--data.train_manifest", str(manifest), "--trainer.max_steps", "20"])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert f"speechsum fit: error: {manifest}:8: missing field 'transcript'\n" in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # before any step

    main(["fit", "--config", str(config), "--data.train_manifest", str(manifest), "--data.on_bad_example", "skip",
          "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"])
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    predict = tmp_path / "predict.jsonl"
    predict.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "transcript"}) + "\n" for row in rows[:2]))
    main(["predict", "--config", str(config), "--data.predict_manifest", str(predict), "--ckpt_path",
          str(tmp_path / "run" / "checkpoints" / "last.ckpt")])
    assert len((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("given", ["config", "command line"])
def test_a_teacher_url_with_credentials_is_masked_in_the_run_folder(tmp_path, toy_data, teacher_dir, given):
    """Before: Lightning's config.yaml and the logged hyperparameters (hparams.yaml, W&B's config) held the
    base_url's user:password@ whole. The user's own config keeps it: a rerun or resume reads it there. On the
    command line is how the pipeline gives it (its RUN/kd/config.yaml masked)."""
    from speechsum.serving.cli import HFBackend
    from tests.servers import serve_in_thread

    backend = HFBackend(teacher_dir)
    with serve_in_thread(backend) as url:
        secret_url = url.replace("http://", "http://teacher-user:secret-pass-4711@")
        teacher = {"class_path": "speechsum.stages.kd.teachers.OpenAICompatibleTeacher", "init_args": {
            "model": backend.model_name, "base_url": secret_url if given == "config" else url,
            "tokenizer": str(teacher_dir), "top_k": 5}}
        config = kd_config(tmp_path, toy_data, teacher)
        option = ["--model.init_args.teacher.init_args.base_url", secret_url] if given == "command line" else []
        cli = lightning_cli(["fit", "--config", str(config), *option, "--trainer.max_steps", "1",
                             "--trainer.limit_val_batches", "1"])
        last = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
        # validate rebuilds the model from the checkpoint's hyperparameters: the URL whole from what is given
        validated = lightning_cli(["validate", "--config", str(config), *option, "--ckpt_path", last,
                                   "--trainer.limit_val_batches", "1"])
        if given == "command line":
            with pytest.raises(ConfigError) as refused:
                lightning_cli(["validate", "--config", str(config), "--ckpt_path", last])
            assert str(refused.value) == (
                f"ckpt_path {last}: model.init_args.teacher.init_args.base_url was saved with its URL's credentials "
                f"masked ({url.replace('http://', 'http://***@')}): give the URL whole in the --config file or on the "
                "command line")
    assert cli.trainer.global_step == 1 and cli.model.teacher.base_url == validated.model.teacher.base_url == secret_url
    saved = [path for path in (tmp_path / "run").rglob("*") if path.is_file()]  # checkpoints too
    assert {path.name for path in saved} >= {"config.yaml", "hparams.yaml", "metrics.csv"}
    for path in saved:
        assert b"secret-pass-4711" not in path.read_bytes(), path
    masked = url.replace("http://", "http://***@")
    lightning_config = yaml.safe_load(next((tmp_path / "run").rglob("config.yaml")).read_text())
    assert lightning_config["model"]["init_args"]["teacher"]["init_args"]["base_url"] == masked
    hparams = yaml.safe_load(next((tmp_path / "run").rglob("hparams.yaml")).read_text())
    assert hparams["teacher"]["init_args"]["base_url"] == masked
    assert ("secret-pass-4711" in config.read_text()) == (given == "config")  # the user's own config, untouched
