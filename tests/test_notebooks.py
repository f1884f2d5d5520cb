"""Notebooks run end to end."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHSUM_REPO", str(REPO))
    monkeypatch.setenv("QUICKSTART_EPOCHS", "1")
    notebook = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the loss plot
    assert "prediction" in str(outputs[-1].get("data", {}).get("text/plain", ""))


def test_make_notebook_installs_jupyterlab_from_its_extra_and_opens_the_results_notebook():
    import configparser
    import subprocess

    dry_run = subprocess.run(["make", "-n", "notebook"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
    assert "-e '.[notebook]'" in dry_run and "jupyter lab notebooks/explore_results.ipynb" in dry_run
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert "jupyterlab" in setup["options.extras_require"]["notebook"]
    assert "jupyterlab" not in setup["options"]["install_requires"]  # not in the base install
    assert "datasets" in setup["options.extras_require"]["hf"] and "datasets" in setup["options.extras_require"]["dev"]
