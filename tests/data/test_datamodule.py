"""SpeechSumDataModule with the tiny composed backbone's processor: batches, padding, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch

from speechsum.data.audio import load_audio
from speechsum.data.batch import SpeechBatch
from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.data.manifest import ManifestError

SMALL = {"max_batch_seconds": 6.0, "max_batch_size": 4, "num_buckets": 3}


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_lines(path: Path, lines: list[dict | str]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def copy_manifest(toy: Path, out: Path, edit=None) -> Path:
    """The toy manifest rewritten at ``out`` with absolute audio paths, each line passed through ``edit``."""
    lines = []
    for line in read_lines(toy):
        line["audio"] = str(toy.parent / line["audio"])
        lines.append(edit(line) if edit else line)
    return write_lines(out, lines)


def drop_summary(line: dict) -> dict:
    line.pop("summary")
    return line


def datamodule(processor, **kwargs) -> SpeechSumDataModule:
    dm = SpeechSumDataModule(**{**SMALL, **kwargs})
    dm.processor = processor
    return dm


def batches_of(loader) -> list[SpeechBatch]:
    return list(loader)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def fit_dm(toy_data, processor) -> SpeechSumDataModule:
    dm = datamodule(
        processor, train_manifest=str(toy_data["train"]), val_manifest=str(toy_data["val"]), seed=3
    )
    dm.setup("fit")
    return dm


def test_train_batches(fit_dm: SpeechSumDataModule, toy_data, processor):
    by_id = {line["id"]: line for line in read_lines(toy_data["train"])}
    examples = {e.id: e for e in fit_dm.datasets["train"].examples}
    pad, end = processor.pad_id, processor.end_token_id
    batches = batches_of(fit_dm.train_dataloader())
    assert len(batches) > 3
    assert sorted(i for b in batches for i in b.ids) == sorted(by_id)
    for batch in batches:
        assert isinstance(batch, SpeechBatch)
        size = len(batch)
        assert 1 <= size <= 4
        waveforms = [load_audio(examples[i].audio, 16_000) for i in batch.ids]
        assert sum(len(w) for w in waveforms) / 16_000 <= 6.0 + 1e-3
        # prompts: left-padded, the last column is always a real token
        ids, mask = batch.prompt_ids, batch.prompt_mask
        assert ids.shape == mask.shape and ids.shape[0] == size
        assert mask[:, -1].tolist() == [1] * size
        assert (mask.diff(dim=1) >= 0).all()  # 0…0 1…1 in every row
        assert mask[:, 0].any()  # padded to the longest, no wider
        assert (ids[mask == 0] == pad).all()
        # responses: right-padded, the last real token is the end-of-turn token
        rids, rmask = batch.response_ids, batch.response_mask
        assert rids.shape == rmask.shape and rids.shape[0] == size
        assert rmask[:, 0].tolist() == [1] * size
        assert (rmask.diff(dim=1) <= 0).all()  # 1…1 0…0 in every row
        assert rmask[:, -1].any()
        lengths = rmask.sum(dim=1)
        assert rids[torch.arange(size), lengths - 1].tolist() == [end] * size
        assert (rids[rmask == 0] == pad).all()
        assert processor.decode_responses(rids, rmask) == [by_id[i]["summary"] for i in batch.ids]
        assert batch.references == [by_id[i]["summary"] for i in batch.ids]
        assert batch.transcripts == [by_id[i]["transcript"] for i in batch.ids]
        assert batch.instructions == [by_id[i]["instruction"] for i in batch.ids]
        assert batch.langs == ["en"] * size
        # audio: log-mel features padded to the batch's longest clip, not to 30 s
        frames = [len(w) // 160 for w in waveforms]
        features = batch.audio["input_features"]
        assert features.shape == (size, 80, max(frames))
        assert max(frames) < 3000
        assert batch.audio["mel_frames"].tolist() == frames
        assert batch.audio_seconds.tolist() == pytest.approx([len(w) / 16_000 for w in waveforms], abs=1e-6)
        for row, n in enumerate(frames):
            assert (features[row, :, n:] == 0).all()
        # one audio token per 4 encoder frames (2 mel frames each)
        audio_tokens = (ids == processor.audio_token_id).sum(dim=1)
        assert audio_tokens.tolist() == [-(-((n + 1) // 2) // 4) for n in frames]
        assert batch.chosen_ids is None and batch.rejected_ids is None


def test_val_loader_is_not_shuffled_and_covers_val(fit_dm: SpeechSumDataModule, toy_data):
    val = [b.ids for b in fit_dm.val_dataloader()]
    assert sorted(i for ids in val for i in ids) == sorted(line["id"] for line in read_lines(toy_data["val"]))
    assert [b.ids for b in fit_dm.val_dataloader()] == val
    examples = fit_dm.datasets["val"].examples
    by_duration = sorted(range(len(examples)), key=lambda i: (examples[i].duration, i))
    assert [i for ids in val for i in ids] == [examples[i].id for i in by_duration]


def test_mixed_rates_and_stereo_match_16k_mono(tmp_path: Path, processor):
    t = np.arange(12_800) / 16_000  # 0.8 s
    clip = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1_250 * t)).astype(np.float32)
    sf.write(tmp_path / "mono16k.wav", clip, 16_000, subtype="FLOAT")
    resampled = soxr.resample(clip, 16_000, 44_100, quality="HQ")
    assert len(resampled) == 35_280
    sf.write(tmp_path / "stereo44k.wav", np.stack([resampled, resampled], axis=1), 44_100, subtype="FLOAT")
    manifest = write_lines(
        tmp_path / "m.jsonl",
        [
            {"id": "mono", "audio": "mono16k.wav", "instruction": "Summarise."},
            {"id": "stereo", "audio": "stereo44k.wav", "instruction": "Summarise."},
        ],
    )
    dm = datamodule(processor, predict_manifest=str(manifest), max_batch_size=1)
    dm.setup("predict")
    mono, stereo = batches_of(dm.predict_dataloader())
    assert (mono.ids, stereo.ids) == (["mono"], ["stereo"])
    assert mono.audio_seconds.tolist() == stereo.audio_seconds.tolist() == pytest.approx([0.8])
    assert mono.audio["input_features"].shape == stereo.audio["input_features"].shape == (1, 80, 80)
    a, b = stereo.audio["input_features"], mono.audio["input_features"]
    # the clip's abrupt start and end are broadband; resampling there differs near 8 kHz only
    torch.testing.assert_close(a[..., 2:-1], b[..., 2:-1], atol=1e-3, rtol=0)
    assert (a - b).abs().mean() < 1e-3
    torch.testing.assert_close(stereo.prompt_ids, mono.prompt_ids)


def test_toy_clips_at_all_rates_load(toy_data, processor):
    rates = {
        sf.info(str(toy_data["train"].parent / line["audio"])).samplerate
        for line in read_lines(toy_data["train"])
    }
    channels = {
        sf.info(str(toy_data["train"].parent / line["audio"])).channels
        for line in read_lines(toy_data["train"])
    }
    assert rates == {8_000, 16_000, 22_050} and channels == {1, 2}  # the fixture exercises resampling


def train_ids(dm: SpeechSumDataModule) -> list[list[str]]:
    """Ids of the first epoch's batches, loaded and collated."""
    dm.setup("fit")
    return [b.ids for b in dm.train_dataloader()]


def planned_ids(dm: SpeechSumDataModule, loader=None) -> list[list[str]]:
    """Ids of the batches the loader's batch sampler plans, without loading audio."""
    dm.setup("fit")
    loader = loader or dm.train_dataloader()
    examples = dm.datasets["train"].examples
    return [[examples[i].id for i in batch] for batch in loader.batch_sampler]


def test_same_seed_same_batches(toy_data, processor):
    first = train_ids(datamodule(processor, train_manifest=str(toy_data["train"]), seed=11))
    second = train_ids(datamodule(processor, train_manifest=str(toy_data["train"]), seed=11))
    other = planned_ids(datamodule(processor, train_manifest=str(toy_data["train"]), seed=12))
    assert first == second
    assert planned_ids(datamodule(processor, train_manifest=str(toy_data["train"]), seed=11)) == first
    assert other != first
    assert sorted(i for b in other for i in b) == sorted(i for b in first for i in b)


def test_workers_give_the_same_batches(toy_data, processor):
    serial = datamodule(processor, train_manifest=str(toy_data["train"]), seed=5)
    parallel = datamodule(processor, train_manifest=str(toy_data["train"]), seed=5, num_workers=2)
    serial.setup("fit")
    parallel.setup("fit")
    a, b = batches_of(serial.train_dataloader()), batches_of(parallel.train_dataloader())
    assert [x.ids for x in a] == [x.ids for x in b]
    for x, y in zip(a, b):
        torch.testing.assert_close(x.audio["input_features"], y.audio["input_features"], atol=0, rtol=0)
        torch.testing.assert_close(x.prompt_ids, y.prompt_ids, atol=0, rtol=0)
        torch.testing.assert_close(x.response_ids, y.response_ids, atol=0, rtol=0)
        torch.testing.assert_close(x.audio_seconds, y.audio_seconds, atol=0, rtol=0)


def test_lightning_epochs_reshuffle(fit_dm: SpeechSumDataModule):
    """Lightning sets the epoch on ``batch_sampler.sampler``; the next epoch must bring a new order."""
    loader = fit_dm.train_dataloader()
    epoch0 = planned_ids(fit_dm, loader)
    _set_sampler_epoch(loader, 1)
    epoch1 = planned_ids(fit_dm, loader)
    assert epoch1 != epoch0
    assert sorted(i for b in epoch1 for i in b) == sorted(i for b in epoch0 for i in b)


class _RecordIds(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[str]] = []

    def training_step(self, batch: SpeechBatch, batch_idx: int):
        self.seen.append(list(batch.ids))
        return (self.weight * batch.audio_seconds.sum()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_trainer_sees_a_new_order_each_epoch(toy_data, processor):
    dm = datamodule(processor, train_manifest=str(toy_data["train"]), seed=2)
    module = _RecordIds()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    steps = len(dm.train_dataloader())
    assert len(module.seen) == 2 * steps
    epoch0, epoch1 = module.seen[:steps], module.seen[steps:]
    assert epoch0 == planned_ids(datamodule(processor, train_manifest=str(toy_data["train"]), seed=2))
    assert epoch1 != epoch0
    assert sorted(i for b in epoch1 for i in b) == sorted(i for b in epoch0 for i in b)


def test_preference_fills_chosen_and_rejected(tmp_path: Path, toy_data, processor):
    def add_preference(line):
        line["chosen"] = "Better: " + line["summary"]
        line["rejected"] = "worse"
        return line

    manifest = copy_manifest(toy_data["train"], tmp_path / "dpo.jsonl", add_preference)
    by_id = {line["id"]: line for line in read_lines(manifest)}
    dm = datamodule(processor, train_manifest=str(manifest), preference=True)
    dm.setup("fit")
    end = processor.end_token_id
    batches = batches_of(dm.train_dataloader())
    assert sum(len(b) for b in batches) == 24
    for batch in batches:
        for ids, mask, field in (
            (batch.chosen_ids, batch.chosen_mask, "chosen"),
            (batch.rejected_ids, batch.rejected_mask, "rejected"),
        ):
            assert ids is not None and ids.shape == mask.shape and ids.shape[0] == len(batch)
            assert processor.decode_responses(ids, mask) == [by_id[i][field] for i in batch.ids]
            assert ids[torch.arange(len(batch)), mask.sum(dim=1) - 1].tolist() == [end] * len(batch)
        assert batch.response_ids is not None


def test_preference_requires_chosen_and_rejected(toy_data, processor):
    dm = datamodule(processor, train_manifest=str(toy_data["train"]), preference=True)
    with pytest.raises(ManifestError, match=r"train\.jsonl:1: missing field 'chosen'"):
        dm.setup("fit")


def test_max_audio_seconds_truncates(toy_data, processor):
    dm = datamodule(processor, train_manifest=str(toy_data["train"]), max_audio_seconds=1.0)
    dm.setup("fit")
    assert max(dm.datasets["train"].durations) == 1.0
    batches = batches_of(dm.train_dataloader())
    seconds = torch.cat([b.audio_seconds for b in batches])
    assert seconds.max().item() == pytest.approx(1.0, abs=1 / 16_000)
    assert max(b.audio["input_features"].shape[-1] for b in batches) == 100


def test_default_limit_is_the_encoder_limit(toy_data, processor):
    dm = datamodule(processor, train_manifest=str(toy_data["train"]))
    dm.setup("fit")
    assert dm.datasets["train"].max_audio_seconds == processor.max_audio_seconds  # composed: None, no limit


def test_a_clip_over_the_limit_under_too_long_error_is_a_bad_line_at_setup(tmp_path: Path, toy_data, processor):
    """Its length is known from the header at load: refused then (file, line, field) or skipped and
    counted, not a stop mid-training when its batch comes."""
    manifest = copy_manifest(toy_data["train"], tmp_path / "train.jsonl")
    lines = read_lines(manifest)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(3 * 16_000, np.float32), 16_000)
    lines.insert(1, {**lines[0], "id": "long", "audio": str(long)})  # line 2
    write_lines(manifest, lines)
    reason = f"field 'audio': {long}: 3.00 s is longer than max_audio_seconds=2.5"
    dm = datamodule(processor, train_manifest=str(manifest), max_audio_seconds=2.5, too_long_audio="error")
    with pytest.raises(ManifestError, match=rf"train\.jsonl:2: {reason}"):
        dm.setup("fit")
    dm = datamodule(processor, train_manifest=str(manifest), max_audio_seconds=2.5, too_long_audio="error",
                    on_bad_example="skip")
    dm.setup("fit")
    assert [s.line for s in dm.skipped["train"]] == [2] and dm.skipped["train"][0].reason.startswith(reason)
    assert "long" not in [e.id for e in dm.datasets["train"].examples]
    dm = datamodule(processor, train_manifest=str(manifest), max_audio_seconds=2.5)  # truncate: kept
    dm.setup("fit")
    assert dm.skipped["train"] == [] and len(dm.datasets["train"]) == 25
