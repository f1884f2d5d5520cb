"""notebooks/explore_results.ipynb runs end to end on the results of a real tiny evaluation run."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO
from tests.eval_fixtures import eval_run  # noqa: F401  (session fixture: a real `speechsum evaluate` run)


def test_results_notebook_runs(eval_run, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SPEECHSUM_RESULTS", str(eval_run["out"]))
    notebook = nbformat.read(REPO / "notebooks" / "explore_results.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "5 systems, 30 predictions; main metric: llm_judge" in text
    assert "| text teacher |" in text and "Share of the text-teacher gap closed" in text
    assert "student + SFT (sft) vs student (no training) (base) on llm_judge" in text  # wins/losses: base → sft
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the report chart + the length plot
    assert any("<audio" in str(o.get("data", {}).get("text/html", "")) for o in outputs)  # audio players
