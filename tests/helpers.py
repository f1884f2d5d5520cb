"""Helpers for tests that drive the real `speechsum` CLI."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import CONFIGS


def with_options(argv: list[str], *changes: str) -> list[str]:
    """``argv`` with each ``--option value`` of ``changes`` in place of the same option's value there
    (added at the end when ``argv`` has none), and each flag of ``changes`` added: the commands refuse
    a plain option given twice with two values."""
    out, index = list(argv), 0
    while index < len(changes):
        option = changes[index]
        has_value = index + 1 < len(changes) and not changes[index + 1].startswith("--")
        if has_value and option in out:
            out[out.index(option) + 1] = changes[index + 1]
        else:
            out += changes[index:index + 1 + has_value]
        index += 1 + has_value
    return out


def run_config(tmp_path: Path, toy_data: dict[str, Path], **trainer_overrides) -> Path:
    """Write a config stacking configs/trainer/cpu.yaml + composed_tiny.yaml + the toy data, with
    every output under ``tmp_path``; returns its path."""
    text = (CONFIGS / "trainer" / "cpu.yaml").read_text().replace("runs/default", str(tmp_path / "run"))
    config = yaml.safe_load(text)
    config.update(yaml.safe_load((CONFIGS / "model" / "composed_tiny.yaml").read_text()))
    config["model"]["init_args"]["model"]["init_args"]["policy"]["lora_dropout"] = 0.0
    config["model"]["init_args"]["num_val_samples"] = 2
    config["model"]["init_args"]["generation"] = {"max_new_tokens": 8}
    config["trainer"].update({"enable_progress_bar": False, "enable_model_summary": False})
    config["trainer"].update(trainer_overrides)
    config["data"] = {
        "train_manifest": str(toy_data["train"]),
        "val_manifest": str(toy_data["val"]),
        "test_manifest": str(toy_data["test"]),
        "predict_manifest": str(toy_data["test"]),
        "max_batch_seconds": 8.0,
        "max_batch_size": 4,
        "num_buckets": 2,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def failed_command(argv: list[str], capsys) -> tuple[int | str | None, str]:
    """(exit code, stderr) of a ``speechsum`` command that must end with ``SystemExit``."""
    import pytest

    from speechsum.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err
