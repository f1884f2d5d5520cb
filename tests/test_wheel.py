"""A wheel that works: built without setuptools warnings, installed (not editable) into a fresh
environment, and `speechsum pipeline --preset tiny` runs from a folder outside the checkout."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the built wheel installed in it (no editable hook); third-party packages
    come from this test environment through a .pth line (their own .pth hooks are not run, so the
    checkout's editable finder is not either)."""
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-w", str(root / "dist")],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert "Warning" not in build.stdout + build.stderr, (build.stdout + build.stderr)[-3000:]
    env_dir = root / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    own_site = Path(subprocess.check_output([python, "-c", "import site; print(site.getsitepackages()[0])"], text=True).strip())
    (own_site / "test_environment.pth").write_text(site.getsitepackages()[0] + "\n")
    wheel = next((root / "dist").glob("speechsum-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, timeout=300)
    return env_dir


def test_the_installed_wheel_runs_the_tiny_pipeline_from_any_folder(installed, tmp_path):
    python = installed / "bin" / "python"
    where = subprocess.check_output([python, "-c", "import speechsum; print(speechsum.__file__)"], text=True, cwd=tmp_path)
    assert where.startswith(str(installed)), where  # the installed copy, not the checkout
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([installed / "bin" / "speechsum", "pipeline", "--preset", "tiny", "--run-dir", "run"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert (tmp_path / "run" / "report.md").read_text(encoding="utf-8").startswith("# speechsum report")
    assert (tmp_path / "run" / "paired.csv").is_file()
