"""The package's layering rule: a module imports only from its own subpackage or from lower layers.

Layers, lowest first (``LAYERS``): a subpackage may import any subpackage of a lower layer, never
one of its own layer or above, so there are no import cycles between subpackages and the layout
reads as the data flow: files and text → data → losses → models → trainer pieces → stages →
judges → pairs / synth → evaluation / benchmark → serving → pipeline → the command line.
Function-level (lazy) imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "speechsum"
LAYERS: list[tuple[str, ...]] = [
    ("utils",),
    ("data",),
    ("losses",),
    ("models",),
    ("training",),
    ("stages",),
    ("judges",),
    ("pairs", "synth"),
    ("evaluation", "benchmark"),
    ("serving",),
    ("pipeline",),
    ("lightning_cli",),
    ("cli",),
    ("__main__",),  # python -m speechsum: the command line itself
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def subpackage(module: str) -> str:
    """``speechsum.models.base`` → ``models``; ``speechsum`` (the root, its version only) → ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def speechsum_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every speechsum import in ``path``, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "speechsum":
            if node.module == "speechsum":
                found += [(node.lineno, f"speechsum.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "speechsum"]
    return found


def layer_violations(package: Path = PACKAGE) -> list[str]:
    violations = []
    for path in sorted(package.rglob("*.py")):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        own = subpackage(module)
        if own in ("", "__init__"):
            continue
        if own not in RANK:
            violations.append(f"{module}: subpackage {own!r} has no layer in tests/test_layers.py")
            continue
        for line, imported in speechsum_imports(path):
            other = subpackage(imported)
            if other in ("", own):
                continue
            if other not in RANK or RANK[other] >= RANK[own]:
                violations.append(f"{path.relative_to(package.parent)}:{line}: {own} imports {imported}")
    return violations


def test_layers_import_downwards_only():
    violations = layer_violations()
    assert not violations, "a lower layer imports a higher one:\n" + "\n".join(violations)


def test_the_check_catches_an_upward_import(tmp_path):
    fake = tmp_path / "speechsum"
    (fake / "data").mkdir(parents=True)
    (fake / "models").mkdir()
    (fake / "data" / "batch.py").write_text("def f():\n    from speechsum.models.base import SpeechLLM\n")
    (fake / "models" / "base.py").write_text("from speechsum.data.batch import f\n")
    assert layer_violations(fake) == ["speechsum/data/batch.py:2: data imports speechsum.models.base"]


@pytest.mark.parametrize("name", sorted({p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}))
def test_every_subpackage_has_a_layer(name):
    assert name in RANK, f"speechsum/{name}/ needs a place in LAYERS"
