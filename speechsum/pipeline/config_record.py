"""What settings each stage of a run folder ran with. ``RUN/pipeline_config.yaml`` is the YAML of the
newest invocation; a stage kept complete from an earlier one may have run with other settings (its
marker's settings digest differs: "complete, skipped (its config or data changed since)"), which that
file alone hid. So every invocation also keeps its YAML under ``RUN/.state/configs/<digest>.yaml``
(content-addressed: one file per distinct YAML), each stage's marker names the one it ran with
(``pipeline_config``), and ``RUN/pipeline_config.yaml`` lists at its top the kept stages that ran with
other settings and the file of each."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import yaml

from speechsum.utils.arguments import masked_credentials
from speechsum.utils.io import write_atomic

CONFIGS_FOLDER = Path(".state") / "configs"


def config_text(config_file: Path | str, config: Mapping) -> str:
    """The pipeline YAML as the run folder keeps it: where it came from, then the settings, with every
    URL's ``user:password@`` masked (a rerun reads the user's own YAML, never these)."""
    return f"# from {config_file}\n" + yaml.safe_dump(masked_credentials(dict(config)), sort_keys=False)


def keep_config(run_dir: Path, config_file: Path | str, config: Mapping) -> Path:
    """Write this invocation's YAML to ``RUN/.state/configs/<digest>.yaml`` (once) and return its path."""
    text = config_text(config_file, config)
    path = run_dir / CONFIGS_FOLDER / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.is_file():
        write_atomic(path, text)
    return path


def other_settings(kept: Mapping[str, dict], digests: Mapping[str, str]) -> list[str]:
    """The stages kept complete (``kept``: their markers) that ran with other settings than these
    (``digests``: this YAML's settings digests)."""
    return [stage for stage, marker in kept.items() if marker.get("config_hash") != digests.get(stage)]


def write_run_config(run_dir: Path, config_file: Path | str, config: Mapping, kept: Mapping[str, dict],
                     digests: Mapping[str, str]) -> None:
    """``RUN/pipeline_config.yaml``: this invocation's YAML, headed by the stages kept from earlier runs
    that ran with other settings (``kept``: their markers; ``digests``: this YAML's settings digests)."""
    older = {stage: kept[stage].get("pipeline_config") for stage in other_settings(kept, digests)}
    header = ""
    if older:
        lines = [f"#   {stage}: {path or 'not recorded (ran before 2026-12-07)'}" for stage, path in older.items()]
        header = ("# the stages below were kept from earlier runs and ran with other settings than these (--from "
                  "STAGE reruns one with these); the YAML each ran with:\n" + "\n".join(lines) + "\n")
    write_atomic(run_dir / "pipeline_config.yaml", config_text(config_file, config).replace("\n", "\n" + header, 1))
