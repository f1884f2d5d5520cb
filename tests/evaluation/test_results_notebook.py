"""notebooks/explore_results.ipynb runs end to end, with its defaults, on a run folder laid out like
`make run`'s runs/pipeline (the systems of a real tiny evaluation run split into baselines/ and evaluate/)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.conftest import REPO
from tests.eval_fixtures import eval_run  # noqa: F401  (session fixture: a real `speechsum evaluate` run)

NOTEBOOK = REPO / "notebooks" / "explore_results.ipynb"
BASELINES = ("teacher", "backbone", "cascade")  # the pipeline's `baselines` stage; the students go to evaluate/


def pipeline_run_from(results: Path, run: Path) -> Path:
    """``run`` laid out like `make run`'s runs/pipeline: the systems of a `speechsum evaluate` output
    split into ``baselines/`` (text teacher, backbone, cascade) and ``evaluate/`` (the students)."""
    for system in (p for p in results.iterdir() if (p / "metrics.json").is_file()):
        stage = "baselines" if system.name in BASELINES else "evaluate"
        shutil.copytree(system, run / stage / system.name)
    return run


def run_notebook_with_defaults(run: Path, root: Path) -> tuple[list[dict], str]:
    """Execute the notebook as shipped, without SPEECHSUM_RESULTS, from ``root/notebooks`` of a
    checkout whose ``runs/pipeline`` is ``run`` (any pipeline run folder, e.g. a tiny one);
    returns the outputs and their text. Reusable by a test that has a real pipeline run."""
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(NOTEBOOK, root / "notebooks" / NOTEBOOK.name)
    (root / "runs").mkdir()
    (root / "runs" / "pipeline").symlink_to(run, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SPEECHSUM_RESULTS", raising=False)  # the kernel inherits this process's environment
        notebook = nbformat.read(root / "notebooks" / NOTEBOOK.name, as_version=4)
        outputs = execute(notebook, cwd=root / "notebooks")  # where Jupyter starts a notebook's kernel
    assert not [o for o in outputs if o.get("output_type") == "error"]
    pipeline = root / "runs" / "pipeline"
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert f"results:\n  {pipeline / 'baselines'}\n  {pipeline / 'evaluate'}\n" in text  # the defaults
    return outputs, text


def execute(notebook, cwd: Path) -> list[dict]:
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def test_results_notebook_runs_with_its_defaults_on_the_main_jobs_output(eval_run, tmp_path):  # noqa: F811
    run = pipeline_run_from(eval_run["out"], tmp_path / "pipeline-run")
    outputs, text = run_notebook_with_defaults(run, tmp_path / "checkout")
    assert "5 systems, 30 predictions; main metric: llm_judge" in text
    assert "| text teacher |" in text and "Share of the text-teacher gap closed" in text
    assert "student + SFT (sft) vs student (no training) (base) on llm_judge" in text  # wins/losses: base → sft
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the report chart + the length plot
    assert any("<audio" in str(o.get("data", {}).get("text/html", "")) for o in outputs)  # audio players


def settings_cell_only() -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells = [cell for cell in notebook.cells if cell.cell_type == "code"][:1]
    return notebook


def test_speechsum_results_overrides_relative_to_the_repo_from_any_folder(tmp_path, monkeypatch):
    root = tmp_path / "checkout"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(NOTEBOOK, root / "notebooks" / NOTEBOOK.name)
    for folder in ("runs/bench/eval", "runs/other/evaluate"):
        (root / folder).mkdir(parents=True)
    monkeypatch.setenv("SPEECHSUM_RESULTS", "runs/bench/eval:runs/other")
    outputs = execute(settings_cell_only(), cwd=root)  # Jupyter started in the repository root
    assert outputs[-1]["text"] == f"results:\n  {root / 'runs/bench/eval'}\n  {root / 'runs/other/evaluate'}\n"

    monkeypatch.setenv("SPEECHSUM_RESULTS", "runs/missing")
    with pytest.raises(CellExecutionError, match="runs/missing: no such results folder; run `make run`"):
        execute(settings_cell_only(), cwd=root)
