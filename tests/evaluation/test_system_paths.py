"""A system's ``config`` (student) and ``asr_model`` (cascade) are checked with its path, before any
system runs: they failed only when their system ran, as '[Errno 2] No such file or directory' or
huggingface_hub's 'Repo id must use alphanumeric chars', naming neither the field nor the system."""

from __future__ import annotations

import pytest

from speechsum.evaluation.systems import SystemSpec, load_systems_file


@pytest.fixture
def sources(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"not read here")
    model = tmp_path / "lm"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return ckpt, model


def student_with_a_missing_config(tmp_path, ckpt, model) -> SystemSpec:
    return SystemSpec(kind="student", name="sft", path=str(ckpt), config=str(tmp_path / "gone.yaml"))


def cascade_from_a_systems_file(tmp_path, ckpt, model) -> SystemSpec:
    systems = tmp_path / "systems.yaml"
    systems.write_text(f"- {{kind: cascade, name: cascade, path: {model}, asr_model: whisper-small}}\n")
    return load_systems_file(systems)[0]


@pytest.mark.parametrize("make, message", [
    (student_with_a_missing_config, "system 'sft': config {tmp}/gone.yaml: no such file (a stage config to rebuild the "
     "student from; leave it out to use the checkpoint's own)"),
    (cascade_from_a_systems_file, "system 'cascade': asr_model {tmp}/whisper-small: no such folder (a Whisper model "
     "folder; leave it out for the bundled Whisper tiny.en)"),
])
def test_a_missing_config_or_asr_folder_is_named_with_its_system(tmp_path, sources, make, message):
    with pytest.raises(ValueError) as caught:
        make(tmp_path, *sources).check_source()
    assert str(caught.value) == message.format(tmp=tmp_path)


def test_existing_config_and_asr_folder_pass(tmp_path, sources):
    ckpt, model = sources
    (tmp_path / "sft.yaml").write_text("model: {}\n")
    SystemSpec(kind="student", name="sft", path=str(ckpt), config=str(tmp_path / "sft.yaml")).check_source()
    SystemSpec(kind="cascade", name="cascade", path=str(model), asr_model=str(model)).check_source()


def test_a_students_stage_config_is_the_projects_from_any_folder(tmp_path, monkeypatch, capsys):
    """`--system student:base:configs/sft_tiny.yaml` (docs/evaluation.md: a stage YAML evaluates the untrained
    model) in a folder without configs/ was 'configs/sft_tiny.yaml does not exist'; fit's --config took it."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)
    assert SystemSpec.parse("student:base:configs/sft_tiny.yaml").path == str(repo / "configs/sft_tiny.yaml")
    assert capsys.readouterr().err == (f"speechsum: --system configs/sft_tiny.yaml: not in this folder; using the "
                                       f"project's {repo / 'configs/sft_tiny.yaml'}\n")
    with pytest.raises(FileNotFoundError, match="system 'x': configs/none.yaml does not exist"):
        SystemSpec.parse("student:x:configs/none.yaml")
