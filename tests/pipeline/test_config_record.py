"""What the run folder records of the settings each stage ran with: ``RUN/pipeline_config.yaml``
described the newest YAML only, also when stages kept from an earlier run had run with another, and a
text LM's marker listed only its model's config.json (a lost weights file kept the stage complete)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import yaml

import speechsum.pipeline.cli as pipeline
from speechsum.pipeline.cli import read_marker
from speechsum.pipeline.config import load_pipeline_config
from speechsum.pipeline.resume import lost_outputs
from speechsum.pipeline.stages import run_fit
from tests.conftest import REPO
from tests.pipeline.test_config_shape import checkpoint_writing_stages

TINY = REPO / "configs" / "pipeline" / "tiny.yaml"


def with_sft_steps(path: Path, steps: int) -> Path:
    config = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    config["stages"]["sft"]["overrides"]["trainer"]["max_steps"] = steps
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run(run_dir: Path, config: Path) -> dict:
    args = pipeline.build_parser().parse_args(["--config", str(config), "--run-dir", str(run_dir), "--until", "sft"])
    return pipeline.run_pipeline(args, checkpoint_writing_stages())


def test_a_stage_kept_from_a_run_with_other_settings_names_the_yaml_it_ran_with(tmp_path):
    run_dir = tmp_path / "run"
    run(run_dir, with_sft_steps(tmp_path / "first.yaml", 2))
    first = Path(read_marker(run_dir, "sft")["pipeline_config"])
    assert yaml.safe_load(first.read_text())["stages"]["sft"]["overrides"]["trainer"]["max_steps"] == 2
    assert first.read_text().startswith(f"# from {tmp_path / 'first.yaml'}\n")
    summary = run(run_dir, with_sft_steps(tmp_path / "second.yaml", 5))
    assert {stage: entry["status"] for stage, entry in summary["stages"].items()} == dict.fromkeys(
        ["benchmark", "text_lm", "align", "sft"], "skipped")
    record = (run_dir / "pipeline_config.yaml").read_text()
    assert record.splitlines()[:3] == [
        f"# from {tmp_path / 'second.yaml'}",
        "# the stages below were kept from earlier runs and ran with other settings than these (--from STAGE reruns "
        "one with these); the YAML each ran with:",
        f"#   sft: {first}"]  # the others: their settings did not change
    assert yaml.safe_load(record)["stages"]["sft"]["overrides"]["trainer"]["max_steps"] == 5
    assert read_marker(run_dir, "sft")["pipeline_config"] == str(first)


def test_a_text_lms_marker_lists_its_models_weights(tmp_path):
    folder = tmp_path / "text_lm"

    def fit(command: list[str]) -> None:  # what speechsum fit and ExportHFModel write
        (folder / "checkpoints").mkdir(parents=True)
        with zipfile.ZipFile(folder / "checkpoints" / "last.ckpt", "w") as checkpoint:  # whole, as torch's
            checkpoint.writestr("data.pkl", "x" * 4000)
        (folder / "model").mkdir()
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (folder / "model" / name).write_text("{}")

    ctx = SimpleNamespace(stage="text_lm", run_dir=tmp_path, config=load_pipeline_config(TINY), wandb=False,
                          checkpoint_every_s=60.0, resume=False, run=fit, note=print, log_path=lambda s: tmp_path / s)
    outputs = run_fit(ctx)
    assert outputs == [folder / "config.yaml", folder / "checkpoints" / "last.ckpt", folder / "model" / "config.json",
                       folder / "model" / "model.safetensors", folder / "model" / "tokenizer.json"]
    marker = json.loads(json.dumps({"outputs": [str(path) for path in outputs]}))
    (folder / "model" / "model.safetensors").unlink()
    assert lost_outputs(marker, tmp_path) == [(str(folder / "model" / "model.safetensors"), "is gone")]
