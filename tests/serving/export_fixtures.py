"""Tiny trained-looking students of every backbone, saved as stage checkpoints, for the export,
summarize and audio-serving tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

from speechsum.data.batch import SpeechBatch, SpeechCollator
from speechsum.data.manifest import Example
from speechsum.models.base import SpeechLLM
from speechsum.models.checkpoint import instantiate_speech_llm

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"
TINY_TEXT_LLM = {
    "class_path": "speechsum.models.text_llm.TextLLM",
    "init_args": {
        "llm": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512},
        "end_of_turn": "<|im_end|>",
        "policy": {"llm": "lora", "train_projector": False, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
    },
}
BACKBONES = ["composed_tiny", "phi4mm_tiny", "qwen2_audio_tiny", "text_llm"]
DURATIONS = [0.6, 1.0, 0.8]  # seconds; the tiny Qwen2-Audio encoder takes at most 1 s


def model_config(name: str) -> dict:
    """``{"class_path", "init_args"}`` of a tiny backbone, LoRA dropout off (deterministic)."""
    if name == "text_llm":
        return yaml.safe_load(yaml.safe_dump(TINY_TEXT_LLM))
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["model"]["init_args"]["model"]
    config["init_args"]["policy"]["lora_dropout"] = 0.0
    return config


def trained_student(name: str, folder: Path, seed: int = 0) -> tuple[SpeechLLM, Path]:
    """The tiny backbone with its trainable weights (LoRA, projector) moved off their init, and a
    stage checkpoint of it (trainable weights + the CLI's hyperparameters) at ``folder/last.ckpt``."""
    config = model_config(name)
    model = instantiate_speech_llm(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in model.trainable_parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    state = {f"model.{key}": value for key, value in model.state_dict().items()
             if key in dict(model.trainable_parameters())}
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = {"state_dict": state,
                  "hyper_parameters": {"model": config, "_class_path": "speechsum.stages.dpo.module.DPOModule"}}
    torch.save(checkpoint, folder / "last.ckpt")
    return model.eval(), folder / "last.ckpt"


def waveforms(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(16_000 * s))).astype(np.float32) for s in DURATIONS]


def batch_for(
    model: SpeechLLM, clips: list[np.ndarray] | None = None, instruction: str = "Summarise the call"
) -> SpeechBatch:
    """A batch of the clips (default :func:`waveforms`) with references and transcripts."""
    clips = waveforms() if clips is None else clips
    items = [
        (Example(id=str(i), audio="x", instruction=instruction, duration=len(w) / 16_000,
                 summary="ok " * (i + 2), transcript=f"we met on day {i} and agreed"), w)
        for i, w in enumerate(clips)
    ]
    return SpeechCollator(model.processor)(items)


def write_wavs(folder: Path, rate: int = 22_050, stereo: bool = True) -> list[Path]:
    """The clips of :func:`waveforms` as files at ``rate`` (stereo: the clip on both channels)."""
    import soxr

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, clip in enumerate(waveforms()):
        data = soxr.resample(clip, 16_000, rate)
        if stereo:
            data = np.stack([data, data], axis=1)
        path = folder / f"clip{i}.wav"
        sf.write(path, data, rate)
        paths.append(path)
    return paths


def sine_wav(seconds: float = 0.5, rate: int = 16_000) -> bytes:
    """A quiet sine as WAV file bytes."""
    import io

    buffer = io.BytesIO()
    sf.write(buffer, 0.1 * np.sin(np.arange(int(seconds * rate)) / 5).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


def audio_request(text: str, wav: bytes | None = None) -> list[dict]:
    """Chat messages: one user message of ``wav`` (default :func:`sine_wav`) as input_audio and ``text``."""
    import base64

    data = base64.b64encode(sine_wav() if wav is None else wav).decode()
    return [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
                                         {"type": "text", "text": text}]}]
