"""A Hugging Face dataset whose audio column holds in-memory ``{array, sampling_rate}`` structs (not an
``Audio`` feature): read as the samples they are, any dtype and channel layout, no torchcodec needed;
a row without a sampling rate or with an empty array is a bad row naming split, row and column."""

from __future__ import annotations

import numpy as np
import pytest

from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.data.hf_dataset import HFDatasetError

datasets = pytest.importorskip("datasets")

RATE = 16_000
WAVE = 0.25 * np.sin(np.linspace(0, 200 * np.pi, RATE))  # 1 s in [-0.25, 0.25]


@pytest.fixture
def processor(tiny_composed):
    return tiny_composed.processor


def setup_rows(processor, audio: list[dict], **kwargs) -> SpeechSumDataModule:
    rows = [{"audio": cell, "instruction": "Summarise.", "summary": "ok"} for cell in audio]
    dm = SpeechSumDataModule(hf_dataset="memory", hf_splits={"train": "train"}, max_batch_seconds=60.0, **kwargs)
    dm.processor = processor
    dm._hf_tables = {"train": datasets.Dataset.from_list(rows)}
    dm.setup("fit")
    return dm


@pytest.mark.parametrize(("samples", "scale"), [
    (WAVE.astype(np.float32), 1.0),
    (WAVE, 1.0),
    ((WAVE * 2**15).astype(np.int16), 2**15),
    ((WAVE * 2**31).astype(np.int32), 2**31),
    (np.stack([WAVE, WAVE]).astype(np.float32), 1.0),  # (2, n)
    (np.stack([WAVE, WAVE], axis=1).astype(np.float32), 1.0),  # (n, 2)
])
@pytest.mark.parametrize("rate", [RATE, float(RATE)])  # 16000.0 (a float column) was refused as no integer
def test_in_memory_arrays_read_as_their_samples(processor, samples, scale, rate) -> None:
    dm = setup_rows(processor, [{"array": samples, "sampling_rate": rate}])
    example, waveform = dm.datasets["train"][0]
    assert example.duration == pytest.approx(1.0)
    np.testing.assert_allclose(waveform, WAVE, atol=2 / scale + 1e-6)


@pytest.mark.parametrize(("dtype", "middle"), [(np.uint8, 2**7), (np.uint16, 2**15), (np.uint32, 2**31)])
def test_unsigned_samples_are_centred(processor, dtype, middle) -> None:
    samples = np.round(WAVE * (middle - 1) + middle).astype(dtype)
    _, waveform = setup_rows(processor, [{"array": samples, "sampling_rate": RATE}]).datasets["train"][0]
    np.testing.assert_allclose(waveform, WAVE, atol=2 / middle + 1e-6)


@pytest.mark.parametrize(("cell", "message"), [
    ({"array": WAVE.astype(np.float32)}, "sampling_rate"),
    ({"array": WAVE.astype(np.float32), "sampling_rate": 16000.5}, "positive integer 'sampling_rate', got 16000.5"),
    ({"array": np.zeros(0, np.float32), "sampling_rate": RATE}, "shape"),
    # soundfile cannot write a rate of 2**31: an OverflowError traceback, not a bad row
    ({"array": WAVE.astype(np.float32), "sampling_rate": 2**31},
     r"memory\[train\] row 1: sample rate 2147483648 Hz is outside 1000-1000000 Hz"),
])
def test_bad_array_rows_name_split_row_column_or_are_skipped(processor, cell, message) -> None:
    good = {"array": WAVE.astype(np.float32), "sampling_rate": RATE}
    with pytest.raises(HFDatasetError, match=message) as caught:
        setup_rows(processor, [good, cell])
    assert (caught.value.split, caught.value.row, caught.value.column) == ("train", 1, "audio")
    dm = setup_rows(processor, [good, cell], on_bad_example="skip")
    assert [s.line for s in dm.skipped["train"]] == [1] and len(dm.datasets["train"]) == 1


@pytest.mark.parametrize("samples", [(WAVE * 2**15).astype(np.int16).tolist(), (WAVE * 2**15).astype(np.int64)])
def test_64_bit_integer_samples_are_refused_not_read_as_silence(processor, samples) -> None:
    """A list of Python ints (int16 samples) is stored as int64: scaled by 2**63 it trained on ~1e-15."""
    expected = (r"split 'train', row 0, column 'audio'\): the audio array holds int64 samples \(peak 8191\), a width "
                r"no audio has .*np\.asarray\(samples, dtype=np\.int16\)")
    with pytest.raises(HFDatasetError, match=expected) as caught:
        setup_rows(processor, [{"array": samples, "sampling_rate": RATE}])
    assert (caught.value.split, caught.value.row, caught.value.column) == ("train", 0, "audio")


@pytest.mark.parametrize(("cells", "held", "advice"), [
    ([WAVE.astype(np.float32)], "List(Value('float32'))", "lists of samples without their sampling rate: store each "
     "cell as {'array': samples, 'sampling_rate': RATE} (e.g. dataset.map(lambda row: {'audio': {'array': "
     "row['audio'], 'sampling_rate': 16000}}))"),
    ([3], "Value('int64')", "no audio: give a datasets.Audio column, file paths (strings), the files' bytes, or "
     "{'array': samples, 'sampling_rate': RATE} cells (or map data.hf_columns.audio to the audio column)"),
])
def test_an_audio_column_of_neither_files_nor_arrays_says_what_it_holds(processor, cells, held, advice) -> None:
    """Before: pyarrow's TypeError "Couldn't cast array of type list<item: float> to struct<bytes: binary, path:
    string>" (or ArrowNotImplementedError), no dataset, split or column named."""
    with pytest.raises(HFDatasetError) as caught:
        setup_rows(processor, cells)
    assert str(caught.value) == f"dataset memory (split 'train', column 'audio'): the audio column holds {held}: {advice}"
    if held.startswith("List"):  # the advice works
        table = datasets.Dataset.from_list([{"audio": cell, "instruction": "Summarise.", "summary": "ok"}
                                            for cell in cells])
        fixed = table.map(lambda row: {"audio": {"array": row["audio"], "sampling_rate": 16000}})
        dm = SpeechSumDataModule(hf_dataset="memory", hf_splits={"train": "train"})
        dm.processor, dm._hf_tables = processor, {"train": fixed}
        dm.setup("fit")
        assert dm.datasets["train"].examples[0].duration == pytest.approx(1.0)
