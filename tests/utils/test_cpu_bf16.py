"""bf16 settings on a CPU without bf16 instructions run in float32 (speechsum/utils/cpu_bf16.py): the
trainer's precision, the students' encoder_dtype and the cascade's Whisper dtype."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml

from speechsum.lightning_cli import lightning_cli
from speechsum.utils import cpu_bf16
from speechsum.utils.cpu_bf16 import ENV, cpu_has_native_bf16, cpu_precision, cpu_runs_bf16, runs_on_cpu
from tests.helpers import run_config
from tests.models.test_whisper_fast import audio, build


@pytest.fixture
def no_cpu_bf16(monkeypatch):
    """A CPU without bf16 (SPEECHSUM_CPU_BF16=0), every warning not yet given."""
    monkeypatch.setenv(ENV, "0")
    monkeypatch.setattr(cpu_bf16, "_warned", set())


def test_bf16_precisions_run_as_32_true_on_such_a_cpu_warned_once(no_cpu_bf16, caplog, monkeypatch):
    with caplog.at_level(logging.WARNING, logger=cpu_bf16.__name__):
        assert cpu_precision("bf16-mixed", "cpu") == "32-true"
        assert cpu_precision("bf16-mixed", "cpu") == "32-true"
        assert cpu_precision("bf16-true", "cpu") == "32-true"
        assert cpu_precision("16-mixed", "cpu") == "32-true"  # Lightning runs it as bf16-mixed on a CPU
    assert [record.getMessage() for record in caplog.records] == [
        f"trainer.precision bf16-mixed runs as 32-true on this CPU: {ENV}=0",
        f"trainer.precision bf16-true runs as 32-true on this CPU: {ENV}=0",
        f"trainer.precision 16-mixed runs as 32-true on this CPU: {ENV}=0",
    ]
    assert [cpu_precision(p, "cpu") for p in ("16-true", "32-true", 64)] == ["16-true", "32-true", 64]
    assert cpu_precision("bf16-mixed", "gpu") == "bf16-mixed"
    monkeypatch.setenv(ENV, "1")
    assert cpu_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_auto_is_the_cpu_only_without_cuda_or_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runs_on_cpu("auto") and runs_on_cpu(None) and runs_on_cpu("cpu") and not runs_on_cpu("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not runs_on_cpu("auto") and runs_on_cpu("cpu")


@pytest.mark.parametrize(("machine", "avx512_bf16", "amx", "mkldnn_bf16", "native"), [
    ("x86_64", True, False, True, True), ("x86_64", False, True, True, True),
    ("x86_64", False, False, True, False),  # AVX512 without BF16: oneDNN emulates bf16
    ("aarch64", False, False, True, True), ("aarch64", False, False, False, False),
])
def test_native_bf16_is_the_instructions_not_the_emulation(monkeypatch, machine, avx512_bf16, amx, mkldnn_bf16, native):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(cpu_bf16.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn_bf16)
    assert cpu_has_native_bf16() is native and cpu_runs_bf16() is native


def test_a_value_of_the_variable_other_than_1_or_0_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(ValueError, match=f"{ENV}='yes': write 1 .* or 0 "):
        cpu_runs_bf16()


def test_a_fit_config_in_bf16_mixed_trains_and_saves_32_true_on_such_a_cpu(no_cpu_bf16, tmp_path, toy_data):
    config = run_config(tmp_path, toy_data, precision="bf16-mixed", accelerator="cpu", max_steps=1)
    cli = lightning_cli(["--config", str(config)], run=False)
    assert cli.trainer.precision == "32-true" and cli.config.trainer.precision == "32-true"
    assert yaml.safe_load(config.read_text())["trainer"]["precision"] == "bf16-mixed"


def test_evaluate_predicts_in_32_true_on_such_a_cpu(no_cpu_bf16, tmp_path):
    from speechsum.evaluation.evaluate import EvalOptions, predict_trainer

    assert predict_trainer(EvalOptions(str(tmp_path), accelerator="cpu", precision="bf16-mixed")).precision == "32-true"


def test_encoder_dtype_bfloat16_encodes_the_float32_frames_under_their_key_on_such_a_cpu(no_cpu_bf16):
    fp32, bf16 = build("float32"), build("bfloat16")
    assert bf16.encoder_compute_dtype() == "float32" and bf16.encoder_id() == fp32.encoder_id()
    clips = audio(fp32, seconds=(1.0, 2.5))
    assert all(torch.equal(a, b) for a, b in zip(bf16.clip_frames(clips), fp32.clip_frames(clips)))


def test_the_cascades_whisper_loads_in_float32_on_such_a_cpu(no_cpu_bf16):
    from speechsum.models.asr import WhisperTranscriber

    transcriber = WhisperTranscriber(batch_size=2, dtype="bfloat16")
    assert transcriber.dtype == "float32" and transcriber.settings["dtype"] == "float32"
    assert next(transcriber.model.parameters()).dtype == torch.float32 and transcriber.fast_encoder is None
