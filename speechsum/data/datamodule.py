"""SpeechSumDataModule: one LightningDataModule for every stage (SFT, KD, DPO, predict)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Mapping
from functools import partial
from typing import Any, get_args

import lightning as L

from speechsum.data.audio import TooLong
from speechsum.data.batch import SpeechBatch, SpeechCollator
from speechsum.data.dataset import SpeechSumDataset
from speechsum.data.hf_dataset import DEFAULT_SPLITS, HFDatasetError, load_hf_split, load_splits
from speechsum.data.hf_dataset import say_default_split_missing as say_no_default_split
from speechsum.data.loader import SpeechLoader
from speechsum.data.long_clips import warn_long_clips
from speechsum.data.manifest import Example, ManifestError, OnBadExample, SkippedLine, load_manifest
from speechsum.data.manifest_hints import unexpanded_hint
from speechsum.data.processor import SpeechProcessor
from speechsum.data.sampler import DurationBucketBatchSampler
from speechsum.data.split_files import manifest_paths, warn_shared_audio
from speechsum.utils.arguments import ConfigError, check_choice, check_count, check_number

log = logging.getLogger(__name__)

# Lightning warns that a plain DataLoader cannot resume mid-epoch; ours does (the batch sampler
# skips the batches the restored fit loop has already trained on), so the warning is wrong here.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")

SPLITS = ("train", "val", "test", "predict")


def check_data_sizes(settings: Mapping[str, Any]) -> None:
    """A ``ConfigError`` naming ``data.NAME`` for the first batch/clip size or count in ``settings`` outside
    its range (also ``speechsum pipeline``'s check when a run starts); ``max_batch_size`` and
    ``max_audio_seconds`` may be null; names missing from ``settings`` are not checked."""
    if "max_batch_seconds" in settings:
        check_number("data.max_batch_seconds", settings["max_batch_seconds"], 0.0, low_open=True)
    if settings.get("max_batch_size") is not None:
        check_count("data.max_batch_size", settings["max_batch_size"], 1, " (or null: no cap)")
    if "num_buckets" in settings:
        check_count("data.num_buckets", settings["num_buckets"], 1)
    if settings.get("max_audio_seconds") is not None:
        check_number("data.max_audio_seconds", settings["max_audio_seconds"], 0.0, low_open=True,
                     note=" (or null: the backbone's limit)")
    if "num_workers" in settings:
        check_count("data.num_workers", settings["num_workers"], 0)


class SpeechSumDataModule(L.LightningDataModule):
    """Audio-instruction data from JSONL manifests or a Hugging Face dataset, batched by total audio duration.

    Args:
        train_manifest: JSONL manifest of the training split (schema in docs/data.md).
        val_manifest: JSONL manifest of the validation split.
        test_manifest: JSONL manifest of ``speechsum test``.
        predict_manifest: JSONL manifest of ``speechsum predict`` (no ``summary`` needed, see
            ``require_summary``).
        hf_dataset: a Hugging Face dataset for the splits without a manifest: a folder written by
            ``save_to_disk`` or of the dataset's data files (parquet …; offline), else a hub name given to ``datasets.load_dataset`` as is
            (needs the network or the HF cache). Needs ``pip install 'speechsum[hf]'``.
        hf_config: the hub dataset's configuration name (``load_dataset(name, hf_config)``).
        hf_splits: our split → the dataset's split; default ``{"train": "train", "val":
            "validation", "test": "test"}`` (a default split the dataset lacks is left out; one
            named here that it lacks is an error listing its splits).
        hf_columns: our field → the dataset's column for ``audio`` (any libsndfile format, read as
            bytes/path via ``datasets.Audio(decode=False)``: no FFmpeg), ``instruction``,
            ``summary``, ``transcript``, ``id``, ``lang``, ``chosen``, ``rejected``; each defaults
            to the column of the same name. Rows are validated as manifest lines are.
        max_batch_seconds: budget of summed audio seconds per batch.
        max_batch_size: cap on examples per batch (None: duration budget only).
        num_buckets: duration buckets; more buckets → less padding, less randomness.
        max_audio_seconds: longest clip fed to the model; None uses the backbone's limit
            (30 s for Whisper-family encoders).
        too_long_audio: "truncate" keeps the first ``max_audio_seconds`` (only those frames are
            read, so hours-long files cost what is kept); "error" makes a longer clip a bad example
            at setup (its length is known then), stopping or skipped per ``on_bad_example``.
        on_bad_example: "error" stops at a bad manifest line (bad JSON or fields, missing, empty or
            unreadable audio, NaN/Inf samples), also one whose audio fails only when its batch is
            read (corrupt past a header that passed at load); "skip" logs it and records it in
            ``skipped`` (such an example is left out of its batch; a batch left empty is not run).
        require_summary: demand ``summary`` on every train/val/test line (SFT's target). Set False
            for data with no reference summary: on-policy KD (the student samples its own) or DPO
            (``chosen``/``rejected`` instead); a batch with any summary missing has
            ``response_ids=None``. Predict never requires it.
        require_transcript: demand ``transcript`` on every line (a text LLM backbone,
            ``speechsum.models.text_llm.TextLLM``, needs it and then no audio is decoded). The
            fields the trainer's stage reads (its ``required_fields``: KD's transcript, SFT's summary,
            DPO's pair) are demanded on every train/val/test line whatever ``require_*`` and
            ``preference`` say.
        preference: demand ``chosen``/``rejected`` and put them in the batch (DPO).
        allow_paths_outside_manifest_dir: let relative audio paths leave the manifest folder (or a local
            ``hf_dataset``'s folder).
        num_workers: DataLoader worker processes (audio decoding and features run there).
        seed: seeds batch shuffling (the epoch is added each epoch).
    """

    def __init__(
        self,
        train_manifest: str | None = None,
        val_manifest: str | None = None,
        test_manifest: str | None = None,
        predict_manifest: str | None = None,
        hf_dataset: str | None = None,
        hf_config: str | None = None,
        hf_splits: dict[str, str] | None = None,
        hf_columns: dict[str, str] | None = None,
        max_batch_seconds: float = 120.0,
        max_batch_size: int | None = 16,
        num_buckets: int = 8,
        max_audio_seconds: float | None = None,
        too_long_audio: TooLong = "truncate",
        on_bad_example: OnBadExample = "error",
        require_summary: bool = True,
        require_transcript: bool = False,
        preference: bool = False,
        allow_paths_outside_manifest_dir: bool = False,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.manifests = manifest_paths({"train": train_manifest, "val": val_manifest, "test": test_manifest,
                                         "predict": predict_manifest})
        self.hf_dataset = hf_dataset
        self.hf_config = hf_config
        self.hf_splits = dict(DEFAULT_SPLITS if hf_splits is None else hf_splits)
        unknown = sorted(set(self.hf_splits) - set(SPLITS))
        if unknown:
            raise ConfigError(f"data.hf_splits: unknown split(s) {unknown}; the splits are {list(SPLITS)}")
        check_data_sizes({"max_batch_seconds": max_batch_seconds, "max_batch_size": max_batch_size,
                          "num_buckets": num_buckets, "max_audio_seconds": max_audio_seconds, "num_workers": num_workers})
        check_choice("data.too_long_audio", too_long_audio, get_args(TooLong))
        check_choice("data.on_bad_example", on_bad_example, get_args(OnBadExample))
        self._explicit_hf_splits = set(hf_splits or ())
        self.hf_columns = hf_columns
        self._hf_tables: dict[str, Any] | None = None
        self.max_batch_seconds = max_batch_seconds
        self.max_batch_size = max_batch_size
        self.num_buckets = num_buckets
        self.max_audio_seconds = max_audio_seconds
        self.too_long_audio = too_long_audio
        self.on_bad_example = on_bad_example
        self.require_summary = require_summary
        self.require_transcript = require_transcript
        self.preference = preference
        self.allow_paths_outside_manifest_dir = allow_paths_outside_manifest_dir
        self.num_workers = num_workers
        self.seed = seed
        self.processor: SpeechProcessor | None = None
        self.datasets: dict[str, SpeechSumDataset] = {}
        self.checked_examples: dict[str, list[Example]] = {}  # split -> examples validated already (not reloaded)
        self.skipped: dict[str, list[SkippedLine]] = {}  # bad lines/rows: at load, then as batches are read
        self.truncated: dict[str, int] = {}  # clips cut to max_audio_seconds when read (too_long_audio: truncate)
        self._emptied = (0, 0)  # (epoch, training batches of it whose every example was skipped)
        self._saved_train_plan: str | None = None  # train_plan() of the checkpoint training resumes from
        self._unusable: dict[str, dict[str, str]] = {}  # split -> id -> message: examples skipped when read
        self._leaks_checked: set[str] = set()  # held-out splits compared with train for shared audio files

    def _stage_splits(self, stage: str | None) -> list[str]:
        return {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["predict"]}.get(
            stage or "", list(SPLITS))

    def _resolve_processor(self) -> SpeechProcessor:
        if self.processor is None and self.trainer is not None:
            self.processor = getattr(self.trainer.lightning_module, "processor", None)
        if self.processor is None:
            raise RuntimeError(
                "SpeechSumDataModule has no processor: attach one with `datamodule.processor = "
                "speech_llm.processor`, or use it with a Trainer and a speechsum stage module"
            )
        return self.processor

    def setup(self, stage: str | None = None) -> None:
        processor = self._resolve_processor()
        limit = self.max_audio_seconds or processor.max_audio_seconds
        read_audio = getattr(processor, "reads_audio", True)
        if getattr(processor, "reads_transcripts", False) and not self.require_transcript:
            raise ValueError(
                "this model reads transcripts, not audio (a text LLM): set `data.require_transcript: true` "
                "so that every manifest line is checked to have a `transcript`"
            )
        for split in self._stage_splits(stage):
            path = self.manifests[split]
            if split in self.datasets:
                continue
            if split in self.checked_examples:
                examples, skipped = self.checked_examples[split], []
            elif path is None:
                self._setup_hf_split(split, processor.sample_rate, limit, read_audio)
                continue
            else:
                try:
                    examples, skipped = load_manifest(
                        path, allow_paths_outside_manifest_dir=self.allow_paths_outside_manifest_dir,
                        **self._requirements(split, limit, read_audio),
                    )
                except (FileNotFoundError, IsADirectoryError) as err:  # which of the four settings?
                    relative = isinstance(err, FileNotFoundError) and not os.path.isabs(path)
                    raise type(err)(f"data.{split}_manifest: {err}" + (unexpanded_hint(path) or (
                        f" (relative to the working folder {os.getcwd()})" if relative else ""))) from None
            self.skipped[split] = skipped
            log.info("%s: %d examples from %s (%s)", split, len(examples), path, f"{len(skipped)} skipped"
                     if split not in self.checked_examples else "checked when first loaded: what it skipped is logged there")
            self.datasets[split] = SpeechSumDataset(
                examples, processor.sample_rate, limit, self.too_long_audio, read_audio=read_audio,
                on_bad_example=self.on_bad_example,
            )
            self._warn_over_budget(split)
        warn_shared_audio({split: data.examples for split, data in self.datasets.items()}, self.manifests,
                          self._leaks_checked)

    def _requirements(self, split: str, limit: float | None, read_audio: bool) -> dict[str, Any]:
        """What a manifest line or dataset row of ``split`` must hold (``load_manifest`` /
        ``load_hf_split`` keywords): a prediction split needs no reference or preference pair; a clip
        longer than ``limit`` is a bad example at load under ``too_long_audio: error``, and is cut to
        it when read under ``truncate`` (then a file libsndfile reads only a part of is fine if that
        part is as long)."""
        needs = self._stage_fields(split)
        return {"on_bad_example": self.on_bad_example,
                "require_summary": (self.require_summary or "summary" in needs) and split != "predict",
                "require_transcript": self.require_transcript or "transcript" in needs,
                "require_preference": self._preference(split),
                "max_audio_seconds": limit if self.too_long_audio == "error" and read_audio else None,
                "truncate_audio_seconds": limit if self.too_long_audio == "truncate" and read_audio else None,
                "reserved_text": self._resolve_processor().reserved_text}

    def _stage_fields(self, split: str) -> tuple[str, ...]:
        """The fields the trainer's stage module reads from every example of ``split`` (its
        ``required_fields``: SFT's summary, KD's transcript, DPO's pair; none to predict), required at
        load whatever ``require_*`` say: a line without one is a bad line there, not a crash when its
        batch is reached, mid-training."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        required_fields = getattr(module, "required_fields", None)
        return tuple(required_fields(split)) if callable(required_fields) and split != "predict" else ()

    def _preference(self, split: str) -> bool:
        """Whether ``split``'s lines must hold, and its batches carry, a ``chosen``/``rejected`` pair."""
        return split != "predict" and (self.preference or "chosen" in self._stage_fields(split))

    def _setup_hf_split(
        self, split: str, sample_rate: int, limit: float | None, read_audio: bool
    ) -> None:
        """Load ``split`` from ``hf_dataset`` when it maps the split to one the dataset has."""
        if self.hf_dataset is None or split not in self.hf_splits:
            return
        if self._hf_tables is None:
            self._hf_tables = load_splits(self.hf_dataset, self.hf_config)
        name = self.hf_splits[split]
        if name not in self._hf_tables:
            if name == DEFAULT_SPLITS.get(split) and split not in self._explicit_hf_splits:
                return say_no_default_split(self.hf_dataset, split, self._hf_tables)  # no such split
            raise ValueError(
                f"dataset {self.hf_dataset} has no split {name!r} (data.hf_splits.{split}); "
                f"its splits are {sorted(self._hf_tables)}"
            )
        examples, skipped, open_audio = load_hf_split(
            self.hf_dataset,
            name,
            self._hf_tables[name],
            columns=self.hf_columns,
            allow_paths_outside_dataset_dir=self.allow_paths_outside_manifest_dir,
            **self._requirements(split, limit, read_audio),
        )
        self.skipped[split] = skipped
        log.info("%s: %d examples from %s[%s] (%d skipped)", split, len(examples), self.hf_dataset, name, len(skipped))
        self.datasets[split] = SpeechSumDataset(
            examples, sample_rate, limit, self.too_long_audio, read_audio=read_audio, open_audio=open_audio,
            on_bad_example=self.on_bad_example,
        )
        self._warn_over_budget(split)

    def _warn_over_budget(self, split: str) -> None:
        """Log the clips over the batch budget or cut when read (:func:`warn_long_clips`), counting the cut."""
        self.truncated[split] = warn_long_clips(split, self.datasets[split], self.max_batch_seconds)

    def _loader(self, split: str, shuffle: bool) -> SpeechLoader:
        if split not in self.datasets:
            raise ConfigError(f"data.{split}_manifest: no {split} data: set it to a manifest (or set `data.hf_dataset` "
                              "with that split) in the data config")
        dataset = self.datasets[split]
        batch_sampler = DurationBucketBatchSampler(
            None,
            dataset.durations,
            max_batch_seconds=self.max_batch_seconds,
            num_buckets=self.num_buckets,
            max_batch_size=self.max_batch_size,
            shuffle=shuffle,
            seed=self.seed,
            resume_offset=self._batches_done_this_epoch if split == "train" else None,
            lengths=dataset.lengths if split == "train" else None,  # evaluation order as before
        )
        return SpeechLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=SpeechCollator(self._resolve_processor(), preference=self._preference(split),
                                      responses=split != "predict", on_too_long=self.on_bad_example),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0 and split == "train",
            on_skipped=partial(self._record_skipped, split),
        )

    def _record_skipped(self, split: str, batch: SpeechBatch) -> None:
        """In the main process: the examples ``batch`` left out join ``skipped[split]`` (each once,
        not once per epoch) with a warning; an emptied training batch is counted for resuming."""
        recorded = self.skipped.setdefault(split, [])
        for example in batch.skipped:
            entry = SkippedLine(example.line, example.reason)
            if entry not in recorded:
                recorded.append(entry)
                log.warning("skipping %s", example.message)
            self._unusable.setdefault(split, {}).setdefault(example.id, example.message)
        if split == "train" and not len(batch):
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            self._emptied = (epoch, self._emptied[1] + 1 if self._emptied[0] == epoch else 1)
        self._refuse_when_none_is_usable(split)

    def _refuse_when_none_is_usable(self, split: str) -> None:
        """Once every example of ``split`` has been skipped when read, stop as a split whose every line is
        bad at load stops: its loop would run no step at all (a fit ran its epochs without training and
        exited 0, saving the untrained model)."""
        dataset, unusable = self.datasets.get(split), self._unusable.get(split, {})
        if dataset is None or len(unusable) < len(dataset):
            return
        reason = (f"no usable examples: all {len(dataset)} were skipped (on_bad_example: skip) when their batches "
                  f"were read, e.g. {next(iter(unusable.values()))}")
        origin = dataset.examples[0].origin
        if origin is not None and origin.split is not None:
            raise HFDatasetError(origin.file, origin.split, reason)
        raise ManifestError(origin.file if origin is not None else split, 0, reason)

    def _batches_done_this_epoch(self) -> int:
        """Planned training batches of the current epoch already passed: 0, except when resuming
        mid-epoch: the batches run, and those left empty (never run) before them."""
        trainer = self.trainer
        if trainer is None:
            return 0
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        if done:
            self._refuse_another_train_plan(done)
        epoch, emptied = self._emptied
        return done + emptied if done and epoch == trainer.current_epoch else done

    def train_plan(self) -> str | None:
        """A digest of what this epoch's training batches are planned from: the examples (id, audio,
        duration, length), the batching settings, the seed and the world size."""
        dataset = self.datasets.get("train")
        if dataset is None:
            return None
        world = self.trainer.world_size if self.trainer is not None else 1
        settings = [self.max_batch_seconds, self.num_buckets, self.max_batch_size, self.seed, world]
        examples = [[e.id, str(e.audio), e.duration] for e in dataset.examples]
        text = json.dumps([settings, examples, list(dataset.lengths)], default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _refuse_another_train_plan(self, done: int) -> None:
        """Resuming mid-epoch skips the ``done`` batches already trained: of another plan (a changed
        train manifest or batching setting) that skips other examples, silently. Refused."""
        if self._saved_train_plan is None or self._saved_train_plan == self.train_plan():
            return
        raise ConfigError(
            f"ckpt_path {self.trainer.ckpt_path}: resumes epoch {self.trainer.current_epoch} after its batch {done}, "
            f"but the training data or batching changed since it was saved (data.train_manifest "
            f"{self.manifests['train']}: {len(self.datasets['train'])} examples now; data.max_batch_seconds, "
            "max_batch_size, num_buckets, seed, devices): the rest of the epoch would skip examples it never "
            "trained on. Resume with the data and settings it was trained with, or start from its weights "
            "with --model.init_args.init_from CKPT (no --ckpt_path)")

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the (epoch, count) of training batches left empty, and the
        :meth:`train_plan`, for resuming."""
        return {"emptied_train_batches": list(self._emptied), "train_plan": self.train_plan()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        epoch, emptied = state_dict.get("emptied_train_batches", (0, 0))
        self._emptied = (int(epoch), int(emptied))
        self._saved_train_plan = state_dict.get("train_plan")  # None in checkpoints from before 2026-12-06

    def train_dataloader(self) -> SpeechLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> SpeechLoader | list:
        """In ``fit`` without val data (no manifest, no hf_dataset split), none: no validation loop; in
        ``validate`` a ConfigError naming data.val_manifest (it validated nothing and exited 0 before)."""
        fitting = self.trainer is None or self.trainer.state.fn == "fit"
        if fitting and self.manifests["val"] is None and "val" not in self.datasets:
            return []
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> SpeechLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> SpeechLoader:
        return self._loader("predict", shuffle=False)
