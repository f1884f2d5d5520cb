"""Hugging Face ``datasets`` as input: rows → the same validated :class:`Example` s as a manifest.

The audio column is read with ``datasets.Audio(decode=False)`` (the stored bytes or file path) and
decoded with soundfile, so neither FFmpeg nor torchcodec is needed: any format libsndfile reads works
(wav, flac, ogg; mp3 with libsndfile ≥ 1.1). A column of in-memory ``{array, sampling_rate}`` structs
(not an ``Audio`` feature) is read as those samples (:func:`array_audio`). Every row is checked as a manifest line is (required
fields present and non-empty strings, audio readable, non-empty, free of NaN/Inf, unique ids); a bad
row raises :class:`HFDatasetError` naming the dataset, split, row and column, or is skipped and
counted under ``on_bad_example="skip"``.

``name_or_path``: a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
(offline), or a folder of a dataset's data files (parquet, csv, json …: a hub dataset's download), else a hub name passed to ``datasets.load_dataset`` as is, which needs the network or a
copy in the Hugging Face cache (``HF_DATASETS_OFFLINE=1`` uses the cache only).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from speechsum.data.audio import audio_seconds, check_rate
from speechsum.data.manifest import Example, OnBadExample, Origin, SkippedLine, audio_path, same_pair
from speechsum.data.manifest_hints import (
    PAIR_WITHOUT_SUMMARY,
    blank_optional,
    empty_value,
    fill_advice,
    unread_key,
)
from speechsum.data.text_checks import (
    CONTROL_CHECKED,
    blank,
    control_character,
    first_reserved,
    id_clash,
    remember_id,
    text_fields,
)
from speechsum.utils.arguments import ConfigError

log = logging.getLogger(__name__)

FIELDS = ("id", "audio", "instruction", "summary", "transcript", "lang", "chosen", "rejected")
DEFAULT_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def say_default_split_missing(dataset: str, split: str, splits: Iterable[str]) -> None:
    """Log that ``dataset`` lacks the split ``data.hf_splits`` maps ``split`` to by default: without it a
    fit ran no validation without a word."""
    if split == "val":
        log.warning("data.hf_dataset %s has no split %r (data.hf_splits.val by default; its splits are %s): no "
                    "validation is run; map one with --data.hf_splits '{val: NAME}' (or give data.val_manifest)",
                    dataset, DEFAULT_SPLITS[split], sorted(splits))


class HFDatasetError(ValueError):
    """A dataset, split, column or row that cannot be used; the message says where and what to do."""

    def __init__(self, dataset: str, split: str, reason: str, row: int | None = None, column: str | None = None):
        self.dataset, self.split, self.row, self.column, self.reason = dataset, split, row, column, reason
        where = f"split {split!r}" + (f", row {row}" if row is not None else "")
        where += f", column {column!r}" if column is not None else ""
        super().__init__(f"dataset {dataset} ({where}): {reason}")


class NamedAudio(io.BytesIO):
    """Audio bytes from a dataset row that soundfile reads like a file; ``str()`` says where they are from."""

    def __init__(self, data: bytes, label: str):
        super().__init__(data)
        self.label = label

    def __str__(self) -> str:
        return self.label

    __repr__ = __str__  # soundfile's errors show the repr


def import_datasets() -> Any:
    """The ``datasets`` package, or an error saying how to install it."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            "reading Hugging Face datasets needs the `datasets` package: pip install 'speechsum[hf]'"
        ) from err
    return datasets


def load_splits(name_or_path: str, config_name: str | None = None) -> dict[str, Any]:
    """``{split name: datasets.Dataset}`` from a ``save_to_disk`` folder, a folder of data files or a hub
    name. A folder holding a single ``Dataset`` (no splits) is the split ``train``; a file is refused
    (a JSONL manifest goes to ``data.*_manifest``).
    """
    datasets = import_datasets()
    local = Path(name_or_path).expanduser()
    if local.is_dir() and not saved_to_disk(local):
        loaded = _data_files(local, config_name)
    elif local.exists() and not local.is_dir():
        manifest = local.suffix in (".jsonl", ".json")
        raise ConfigError(f"data.hf_dataset: {local} is a file, not a dataset folder: "
                         + ("a speechsum JSONL manifest goes to data.train_manifest (val_manifest, test_manifest, "
                            "predict_manifest)" if manifest else "give the folder that holds the dataset's files"))
    elif local.exists():
        loaded = datasets.load_from_disk(str(local))
    elif name_or_path.startswith((".", "~", os.sep)):
        raise FileNotFoundError(
            f"data.hf_dataset: no dataset folder {local}; give a folder written by `save_to_disk` or a hub name"
        )
    else:  # a hub name ("org/name"): needs the network or the HF cache
        try:
            loaded = datasets.load_dataset(name_or_path, config_name)
        except (ConnectionError, FileNotFoundError) as err:  # offline, or no such dataset (DatasetNotFoundError)
            raise ConfigError(f"data.hf_dataset: {name_or_path} is no folder here (working folder {os.getcwd()}), so "
                              f"it was read as a hub name, which failed ({type(err).__name__}: {err}); give a folder "
                              "written by save_to_disk or of the dataset's files, or a hub name (the network, or the "
                              "Hugging Face cache)") from err
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded)


def saved_to_disk(folder: Path) -> bool:
    """Whether ``folder`` was written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _data_files(folder: Path, config_name: str | None) -> Any:
    """The dataset a local folder of data files holds (a hub dataset's download: parquet, arrow, csv or
    json files, an audio folder), read with ``datasets.load_dataset`` from its absolute path (a bare
    relative name is looked up on the hub first); it was refused as "neither a `Dataset` directory nor a
    `DatasetDict` directory"."""
    try:
        return import_datasets().load_dataset(str(folder.resolve()), config_name)
    except Exception as err:  # noqa: BLE001 (datasets' many errors: no data files, a bad file, ...): said with the folder
        raise ConfigError(f"data.hf_dataset: {folder} is neither a folder written by save_to_disk nor one of data files "
                         f"datasets reads (parquet, arrow, csv, json, an audio folder): {type(err).__name__}: {err}") from err


def _resolve_columns(
    table: Any, dataset: str, split: str, columns: dict[str, str] | None, required: list[str]
) -> dict[str, str]:
    """``{field: column}`` for the fields this dataset provides; a required or explicitly mapped
    column that is missing raises an error listing the dataset's columns."""
    columns = columns or {}
    unknown = sorted(set(columns) - set(FIELDS))
    if unknown:
        raise HFDatasetError(dataset, split, f"hf_columns has unknown field(s) {unknown}; the fields are {list(FIELDS)}")
    resolved = {}
    for field in FIELDS:
        column = columns.get(field, field)
        if column in table.column_names:
            resolved[field] = column
        elif field in columns or field in required:
            raise HFDatasetError(
                dataset, split, f"no column {column!r} for field {field!r}; the dataset's columns are "
                f"{table.column_names}: set `data.hf_columns.{field}` to one of them"
                + (PAIR_WITHOUT_SUMMARY if field == "summary" and "chosen" in required else ""), column=column,
            )
    return resolved


def unread_columns(columns: list[str], mapped: dict[str, str]) -> list[tuple[str, str]]:
    """``(column, field)`` for each of a dataset's ``columns`` that is not read (``mapped``: field → column)
    but looks meant for a field it gives none ('ID', 'Transcript', 'transcription'): its values would be
    dropped without a word (ids made up as ``split-row``, no transcript), as a manifest's misnamed key is."""
    record = dict.fromkeys([*mapped, *(column for column in columns if column not in mapped.values())])
    found = []
    while (hit := unread_key(record, FIELDS)) is not None:
        found.append(hit)
        del record[hit[0]]
        record[hit[1]] = None
    return found


INT_SCALE = {"int8": 2**7, "int16": 2**15, "int32": 2**31}
UNSIGNED = {"uint8": 2.0**7, "uint16": 2.0**15, "uint32": 2.0**31}  # their midpoints
# no audio has 64-bit integer samples: such an array is int16/int32 samples widened (a list of Python ints
# becomes int64 in Arrow, as np.array of ints does), and scaled by 2**63 it was silence
UNSCALED = ("int64", "uint64")


def array_dtype(feature: Any) -> str | None:
    """The sample dtype of an in-memory audio column (a struct ``{array, sampling_rate}`` that is not
    an ``Audio`` feature: arrays as written, not encoded), else None."""
    inner = feature.get("array") if isinstance(feature, dict) else None
    while inner is not None and hasattr(inner, "feature"):
        inner = inner.feature
    return getattr(inner, "dtype", None)


def array_audio(value: dict, label: str, dtype: str) -> NamedAudio:
    """An in-memory ``{array, sampling_rate}`` cell as float WAV bytes: integer samples scaled to
    [-1, 1) (unsigned ones centred on their midpoint; 64-bit ones, of no known scale, refused), a
    ``(channels, n)`` or ``(n, channels)`` array as channels."""
    rate = value.get("sampling_rate")
    if isinstance(rate, float) and rate.is_integer():  # 16000.0: a column of floats (pandas makes one)
        rate = int(rate)
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        raise ValueError(f"an in-memory audio array needs a positive integer 'sampling_rate', got {rate!r}")
    check_rate(label, rate)  # before soundfile, which cannot write a rate of 2**31 or more
    samples = np.asarray(value["array"], dtype=np.float64)
    if samples.ndim == 2 and samples.shape[0] < samples.shape[1] and samples.shape[0] <= 8:
        samples = samples.T  # (channels, n), as datasets decodes multi-channel audio
    if samples.ndim not in (1, 2) or samples.size == 0 or (samples.ndim == 2 and samples.shape[1] > 8):
        raise ValueError(f"the audio array has shape {samples.shape}: give samples (n,) or (n, channels ≤ 8)")
    if dtype in UNSCALED:
        raise ValueError(f"the audio array holds {dtype} samples (peak {int(np.abs(samples).max())}), a width no audio "
                         "has (a list of Python ints is stored as int64), so their scale is unknown: store them with "
                         "their own dtype (e.g. np.asarray(samples, dtype=np.int16)) or as floats within [-1, 1] "
                         "(int16 samples / 32768)")
    if dtype in UNSIGNED:  # offset binary: the middle of the range is silence
        samples = (samples - UNSIGNED[dtype]) / UNSIGNED[dtype]
    elif dtype in INT_SCALE:
        samples = samples / INT_SCALE[dtype]
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), rate, format="WAV", subtype="FLOAT")
    return NamedAudio(buffer.getvalue(), label)


def _stored_audio(table: Any, column: str, dataset: str, split: str) -> Any:
    """``table`` with the audio ``column`` read as ``Audio(decode=False)``: each cell's bytes or path. A
    column that holds neither (bare lists of samples, numbers) is an :class:`HFDatasetError` saying what it
    holds and what to store (it was a ``TypeError`` of the cast: "Couldn't cast array of type list<item: double>")."""
    try:
        return table.cast_column(column, import_datasets().Audio(decode=False))
    except (TypeError, ValueError, NotImplementedError) as err:  # pyarrow's ArrowNotImplementedError is one
        feature = table.features[column]
        inner = array_dtype({"array": feature}) if hasattr(feature, "feature") else None
        if inner is not None and inner.startswith(("int", "uint", "float")):
            advice = ("lists of samples without their sampling rate: store each cell as {'array': samples, "
                      f"'sampling_rate': RATE}} (e.g. dataset.map(lambda row: {{'{column}': {{'array': row['{column}'], "
                      "'sampling_rate': 16000}}))")
        else:
            advice = ("no audio: give a datasets.Audio column, file paths (strings), the files' bytes, or "
                      "{'array': samples, 'sampling_rate': RATE} cells (or map data.hf_columns.audio to the audio column)")
        raise HFDatasetError(dataset, split, f"the audio column holds {feature}: {advice}", column=column) from err


def audio_source(value: Any, label: str, root: Path | None, allow_outside: bool = False,
                 dtype: str | None = None) -> str | NamedAudio:
    """What soundfile opens for one ``Audio(decode=False)`` cell: its bytes, else its file path
    (:func:`~speechsum.data.manifest.audio_path`: a relative one inside the dataset folder ``root``);
    for an in-memory ``{array, sampling_rate}`` cell (sample ``dtype``), :func:`array_audio`."""
    if dtype is not None and isinstance(value, dict):
        return array_audio(value, label, dtype)
    if isinstance(value, str):  # a plain path column
        value = {"bytes": None, "path": value}
    if not isinstance(value, dict) or not (value.get("bytes") or value.get("path")):
        raise ValueError("no audio (neither bytes nor a path)")
    if value.get("bytes"):
        return NamedAudio(value["bytes"], label)
    return str(audio_path(value["path"], root, allow_outside, folder="dataset folder"))


def probe_audio(source: str | NamedAudio, max_seconds: float | None = None, truncate_at: float | None = None) -> float:
    """Duration in seconds (:func:`~speechsum.data.audio.audio_seconds`, as for manifests)."""
    try:
        return audio_seconds(source, max_seconds, truncate_at)
    finally:
        if isinstance(source, NamedAudio):
            source.seek(0)


def _text(value: Any, field: str, required: bool) -> str | None:
    if value is None or value == "" or (required and isinstance(value, str) and blank(value)):
        if required and value in (None, ""):  # a null cell or an empty string, named as such (was "missing or empty")
            raise ValueError(f"{field} is {empty_value(value)}: {fill_advice(field)}, or drop the row")
        if required:  # as in manifests, a required text of only whitespace (or invisible characters) is missing
            what = "" if not value else " (only whitespace)" if not value.strip() else \
                " (only invisible characters, e.g. zero-width spaces)"
            raise ValueError(f"missing or empty {field}{what}")
        return None
    if isinstance(value, int) and not isinstance(value, bool) and field == "id":
        return str(value)
    if problem := blank_optional(field, value):  # "  " was the example's id or language
        raise ValueError(f"{field} {problem}, or drop the row")
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, got {type(value).__name__}")
    if field in CONTROL_CHECKED and (problem := control_character(value)):
        raise ValueError(f"{field} {problem}")
    return value


class HFAudio:
    """Opens the audio of example ``i`` of one split (picklable: DataLoader workers get it)."""

    def __init__(self, table: Any, column: str, rows: list[int], label: str, root: Path | None, allow_outside: bool,
                 dtype: str | None = None):
        self.table, self.column, self.rows, self.label, self.root = table, column, rows, label, root
        self.allow_outside, self.dtype = allow_outside, dtype

    def __call__(self, index: int) -> str | NamedAudio:
        row = self.rows[index]
        return audio_source(self.table[row][self.column], f"{self.label} row {row}", self.root, self.allow_outside,
                            self.dtype)


def load_hf_split(
    name_or_path: str,
    split: str,
    table: Any,
    *,
    columns: dict[str, str] | None = None,
    on_bad_example: OnBadExample = "error",
    require_summary: bool = False,
    require_transcript: bool = False,
    require_preference: bool = False,
    allow_paths_outside_dataset_dir: bool = False,
    max_audio_seconds: float | None = None,
    reserved_text: tuple[str, ...] = (),
    truncate_audio_seconds: float | None = None,
) -> tuple[list[Example], list[SkippedLine], HFAudio]:
    """Validate every row of one split; returns ``(examples, skipped rows, audio opener)``.

    ``SkippedLine.line`` is the row index. ``Example.audio`` names the row (``dataset[split][row]``);
    the returned :class:`HFAudio` opens it for :class:`~speechsum.data.dataset.SpeechSumDataset`.
    A relative audio path must stay inside a local dataset's folder unless ``allow_paths_outside_dataset_dir``;
    a clip longer than ``max_audio_seconds`` (when given) is a bad row, as is a text the model reads
    that holds one of ``reserved_text`` (its tokenizer's special tokens); ``truncate_audio_seconds``:
    as for :func:`~speechsum.data.manifest.load_manifest`.
    """
    datasets = import_datasets()
    required = ["audio", "instruction"] + (["summary"] if require_summary else [])
    required += (["transcript"] if require_transcript else []) + (["chosen", "rejected"] if require_preference else [])
    mapped = _resolve_columns(table, name_or_path, split, columns, required)
    for column, field in unread_columns(table.column_names, mapped):
        log.warning("dataset %s (split %r): column %r is not read (did you mean %r?): its values are not used; set "
                    "data.hf_columns.%s: %s to read it", name_or_path, split, column, field, field, column)
    table = table.select_columns(sorted(set(mapped.values())))
    dtype = array_dtype(table.features[mapped["audio"]])  # in-memory arrays are read as they are: no torchcodec
    if dtype is None and (not isinstance(table.features[mapped["audio"]], datasets.Audio)
                          or table.features[mapped["audio"]].decode):
        table = _stored_audio(table, mapped["audio"], name_or_path, split)
    root = Path(name_or_path).expanduser() if Path(name_or_path).expanduser().exists() else None
    label = f"{name_or_path}[{split}]"
    examples: list[Example] = []
    rows: list[int] = []
    skipped: list[SkippedLine] = []
    seen: dict[str, tuple[str, str]] = {}  # ids in NFC form -> (as given, where)
    for row, record in enumerate(table):
        field = "id"
        try:
            values = {}
            for field, column in mapped.items():
                if field != "audio":
                    values[field] = _text(record[column], field, field in required)
            reserved = first_reserved(values, reserved_text,
                                      text_fields(require_transcript, require_summary or require_preference))
            if reserved:
                field = reserved[0]
                raise ValueError(f"{field} {reserved[1]}")
            if require_preference and (pair_problem := same_pair(values["chosen"], values["rejected"])):
                field = "rejected"
                raise ValueError(pair_problem)
            field = "audio"
            source = audio_source(record[mapped["audio"]], f"{label} row {row}", root, allow_paths_outside_dataset_dir,
                                  dtype)
            duration = probe_audio(source, max_audio_seconds, truncate_audio_seconds)
            field = "id"
            example_id = values.get("id") or f"{split}-{row}"
            if clash := id_clash(example_id, seen):
                raise ValueError(clash)
        except ValueError as err:
            error = HFDatasetError(name_or_path, split, str(err), row=row, column=mapped.get(field, field))
            if on_bad_example == "error":
                raise error from err
            skipped.append(SkippedLine(row, str(error)))
            log.warning("skipping %s", error)
            continue
        remember_id(example_id, f"row {row}", seen)
        rows.append(row)
        examples.append(Example(
            id=example_id, audio=f"{label} row {row}", instruction=values.get("instruction") or "",
            duration=duration, summary=values.get("summary"), transcript=values.get("transcript"),
            lang=values.get("lang") or "en", chosen=values.get("chosen"), rejected=values.get("rejected"),
            meta={"dataset": name_or_path, "split": split, "row": row},
            origin=Origin(name_or_path, row, split=split, columns=tuple(mapped.items())),
        ))
    if skipped:
        log.warning("%s: skipped %d bad row(s), kept %d", label, len(skipped), len(examples))
    if not examples and not skipped:  # was "no usable examples (0 row(s) skipped)"
        raise HFDatasetError(name_or_path, split, "no usable examples: the split has no rows; map this split "
                             "(data.hf_splits) to one that has, or leave it out")
    if not examples:
        raise HFDatasetError(name_or_path, split, f"no usable examples ({len(skipped)} row(s) skipped, e.g. "
                             f"{skipped[0].reason})")  # it names the row
    return examples, skipped, HFAudio(table, mapped["audio"], rows, label, root, allow_paths_outside_dataset_dir, dtype)
