"""Every module, file and link the README and docs/ mention exists: docs follow the code when it moves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MODULE = re.compile(r"(?<![\w/.])speechsum(?:\.[A-Za-z_]\w*)+")
FILE = re.compile(r"(?<![\w/.<$])((?:speechsum|tests|benchmarks|configs|notebooks|docs)/[\w./-]*\w)")
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def module_resolves(dotted: str) -> bool:
    """``speechsum.a.b[.Name[.method]]``: the longest module prefix exists, and the first name after
    it is defined or imported there (a class, function or assignment)."""
    parts = dotted.split(".")
    for k in range(len(parts), 1, -1):
        base = REPO.joinpath(*parts[:k])
        source = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
        if not source.exists():
            continue
        if k == len(parts):
            return True
        name = re.escape(parts[k])
        return re.search(rf"(^|\n)\s*(class|def)\s+{name}\b|(^|\n)\s*{name}\s*[:=]|import [^\n]*\b{name}\b", source.read_text()) is not None
    return False


def anchors(markdown: Path) -> set[str]:
    """GitHub-style heading anchors of a Markdown file."""
    headings = re.findall(r"^#+ (.*)$", markdown.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).strip().replace(" ", "-") for h in headings}


def problems(doc: Path) -> list[str]:
    found = []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{doc.relative_to(REPO) if doc.is_relative_to(REPO) else doc.name}:{number}"
        found += [f"{where}: module {m}" for m in MODULE.findall(line) if not module_resolves(m)]
        for path in FILE.findall(line):
            if "*" in path or "<" in path:
                continue
            if not (REPO / path).exists() and not (doc.parent / path).exists():
                found.append(f"{where}: path {path}")
        for target, anchor in LINK.findall(line):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            linked = doc.parent / target
            if not linked.exists():
                found.append(f"{where}: link {target}")
            elif anchor and linked.suffix == ".md" and anchor[1:] not in anchors(linked):
                found.append(f"{where}: anchor {target}{anchor}")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(REPO)) for d in DOCS])
def test_mentions_resolve(doc):
    assert problems(doc) == []


def test_the_check_catches_stale_mentions(tmp_path):
    (tmp_path / "architecture.md").write_text("# Layers\n", encoding="utf-8")
    probe = tmp_path / "stale_probe.md"
    probe.write_text(
        "See `speechsum.teachers.HFTeacher`, `speechsum/pipeline_runner.py`, [x](nowhere.md) and "
        "[y](architecture.md#no-such-heading); fine: `speechsum.stages.kd.OnPolicyKDModule`, [z](architecture.md#layers).\n",
        encoding="utf-8",
    )
    assert problems(probe) == [
        "stale_probe.md:1: module speechsum.teachers.HFTeacher",
        "stale_probe.md:1: path speechsum/pipeline_runner.py",
        "stale_probe.md:1: link nowhere.md",
        "stale_probe.md:1: anchor architecture.md#no-such-heading",
    ]


RUNS_PATH = re.compile(r"(?<![\w/.-])(runs/[\w.=/-]*\w)")
WRITTEN = re.compile(r"--(?:out|run-dir)[ =](runs/[\w.=/-]*\w)")
EXAMPLE_PATHS = {"runs/lr=0.1/test.jsonl"}  # evaluation.md's example of a path holding '='


def written_run_folders() -> set[str]:
    """The ``runs/…`` folders something writes: a config's own paths (default_root_dir, dirpath, output_path, …),
    an ``--out`` / ``--run-dir`` in a config's header or a doc's command, and the pipeline's default run folder."""
    import yaml

    def strings(node):
        if isinstance(node, dict | list):
            for value in node.values() if isinstance(node, dict) else node:
                yield from strings(value)
        elif isinstance(node, str) and node.startswith("runs/"):
            yield node

    roots = {"runs/pipeline"}
    for config in (REPO / "configs").rglob("*.yaml"):
        text = config.read_text(encoding="utf-8")
        roots.update(strings(yaml.safe_load(text)), WRITTEN.findall(text))
    for doc in DOCS:
        roots.update(WRITTEN.findall(doc.read_text(encoding="utf-8")))
    return roots


def unwritten_run_paths(name: str, text: str, roots: set[str]) -> list[str]:
    """``NAME:LINE: runs/…`` for each run path of ``text`` that no folder of ``roots`` holds or is held by."""
    return [f"{name}:{number}: {path}" for number, line in enumerate(text.splitlines(), start=1)
            for path in RUNS_PATH.findall(line) if path not in EXAMPLE_PATHS and not any(
                path == root or path.startswith(root + "/") or root.startswith(path + "/") for root in roots)]


def test_every_run_path_the_docs_read_is_one_something_writes():
    """A new user copies the commands: ``speechsum serve --model runs/benchmark/teacher`` (the teacher is
    written to runs/benchmark/text_teacher/model), ``speechsum evaluate`` of ``runs/bench/teacher`` and
    ``runs/bench/backbone`` (in the docs and ``evaluate --help``) and ``speechsum toyscore
    runs/toy-run/predictions.jsonl`` (configs/trainer/cpu.yaml writes runs/default/) named folders nothing writes."""
    from speechsum.evaluation.cli import EVALUATE_EPILOG

    roots = written_run_folders()
    found = [problem for doc in [*DOCS, REPO / "notebooks" / "README.md"]
             for problem in unwritten_run_paths(str(doc.relative_to(REPO)), doc.read_text(encoding="utf-8"), roots)]
    assert found + unwritten_run_paths("speechsum evaluate --help", EVALUATE_EPILOG, roots) == []
    assert unwritten_run_paths("old", "speechsum serve --model runs/benchmark/teacher\nruns/toy-run/p.jsonl", roots) == [
        "old:1: runs/benchmark/teacher", "old:2: runs/toy-run/p.jsonl"]
