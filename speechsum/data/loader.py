"""The DataLoader every batch consumer uses: clean errors from workers, skipped examples seen in the
main process, no empty batches.

A :class:`~speechsum.data.dataset.SpeechSumDataset` item whose audio fails when its batch is read
(corrupt past a header that passed at load) is, under ``on_bad_example: skip``, a
:class:`SkippedExample`: the collator leaves it out and lists it in ``SpeechBatch.skipped``, which
travels with the batch from a worker to the main process, where :class:`SpeechLoader` hands it to
``on_skipped`` (the data module records and logs it) and does not yield a batch left empty. An
exception raised while a batch is read or collated travels the same way as a :class:`LoaderError`
and is raised again as itself, so ``num_workers > 0`` ends with the message ``num_workers=0``
gives (torch would raise ``Caught X in DataLoader worker process 0. Original Traceback …``, often
as a ``RuntimeError``).
"""

from __future__ import annotations

import logging
import pickle
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from torch.utils.data import DataLoader, get_worker_info

from speechsum.data.audio_notes import say_once

if TYPE_CHECKING:
    from speechsum.data.batch import SpeechBatch

log = logging.getLogger(__name__)


class SkippedExample(NamedTuple):
    """An example left out of its batch under ``on_bad_example: skip`` (its audio failed when read).
    A NamedTuple: Lightning's device transfer rebuilds it as is."""

    id: str
    line: int  # the manifest line (a Hugging Face dataset's row)
    reason: str  # what ``SkippedLine.reason`` holds for a bad line found at load
    message: str  # the error "error" raises: manifest file, line, field, audio file and cause


class AudioNote(NamedTuple):
    """A warning about an example's clip found when it was read (digital silence, channels that cancel:
    :mod:`speechsum.data.audio_notes`), carried with its batch to the main process, which says it once."""

    message: str


class PaddingMark(NamedTuple):
    """The item that marks a batch a DDP rank runs only to keep step with the others
    (:class:`~speechsum.data.sampler.PaddingBatch`): its ``SpeechBatch.padding`` is True."""


def _rebuild(kind: type[BaseException], args: tuple, state: dict) -> BaseException:
    """An exception of ``kind`` with ``args`` and attributes ``state``, without calling ``__init__``
    (which may take other arguments than ``args``, as ``ManifestError(path, line, reason)`` does)."""
    error = kind.__new__(kind, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class LoaderError:
    """An exception raised while a batch was read or collated, handed on as the batch itself."""

    def __init__(self, error: BaseException):
        self.error = error
        worker = get_worker_info()
        self.worker = None if worker is None else worker.id
        self.trace = None if worker is None else "".join(traceback.format_exception(error))

    def __reduce__(self) -> tuple:
        error = self.error
        try:  # the exception's own pickling, when it comes back (OSError keeps its file name)
            pickle.loads(pickle.dumps(error))
            return _loader_error, (error, self.worker, self.trace)
        except Exception:
            pass
        parts: tuple = (type(error), error.args, dict(vars(error)))
        try:  # a constructor taking other arguments than the message, as ManifestError(path, line, reason)
            pickle.dumps(parts)
        except Exception:  # an attribute that does not pickle: its type and message still say what failed
            parts = (RuntimeError, (f"{type(error).__name__}: {error}",), {})
        return _loader_error, (parts, self.worker, self.trace)

    def reraise(self) -> NoReturn:
        """Raise the exception; from a worker, with the worker's traceback as a note (shown in a
        traceback, not in the message)."""
        if self.trace is not None and hasattr(self.error, "add_note"):  # Python >= 3.11
            self.error.add_note(f"(raised in DataLoader worker process {self.worker}:\n{self.trace.rstrip()})")
        raise self.error


def _loader_error(error: BaseException | tuple, worker: int | None, trace: str | None) -> LoaderError:
    carried = LoaderError.__new__(LoaderError)
    carried.error = _rebuild(*error) if isinstance(error, tuple) else error
    carried.worker, carried.trace = worker, trace
    return carried


class CarryErrors:
    """``collate_fn`` wrapper: an item or an exception that is a :class:`LoaderError` becomes the batch."""

    def __init__(self, collate_fn: Callable[[Sequence[Any]], Any]):
        self.collate_fn = collate_fn

    def __call__(self, items: Sequence[Any]) -> Any:
        failed = next((item for item in items if isinstance(item, LoaderError)), None)
        if failed is not None:
            return failed
        try:
            return self.collate_fn(items)
        except Exception as error:
            return LoaderError(error)


def warn_skipped(batch: SpeechBatch) -> None:
    """The default ``on_skipped``: one warning per example left out."""
    for example in batch.skipped:
        log.warning("skipping %s", example.message)


class SpeechLoader(DataLoader):
    """A ``DataLoader`` of :class:`~speechsum.data.batch.SpeechBatch` es (``collate_fn``: a
    ``SpeechCollator``): in the main process it raises a worker's error as itself, passes every batch
    that left examples out to ``on_skipped`` (default :func:`warn_skipped`) and yields no empty batch.
    ``len()`` still counts every planned batch."""

    def __init__(
        self,
        dataset: Any,
        *args: Any,
        collate_fn: Callable[[Sequence[Any]], Any],
        on_skipped: Callable[[SpeechBatch], None] | None = None,
        **kwargs: Any,
    ):
        super().__init__(dataset, *args, collate_fn=CarryErrors(collate_fn), **kwargs)
        self.on_skipped = on_skipped or warn_skipped

    def __iter__(self) -> Iterator[SpeechBatch]:  # type: ignore[override]
        # the DataLoader's iterator is made here, as DataLoader.__iter__ makes it (drawing its base seed
        # from the global generator now, not at the first batch): the random draws after it stay DataLoader's
        return self._batches(super().__iter__())

    def _batches(self, loaded: Iterator[Any]) -> Iterator[SpeechBatch]:
        for batch in loaded:
            if isinstance(batch, LoaderError):
                batch.reraise()
            if batch.skipped:
                self.on_skipped(batch)
            say_once(batch.notes)  # each once per file, whatever the epochs and workers
            if len(batch):
                yield batch
            else:
                refuse_empty_batch(batch, process_count())


def process_count() -> int:
    """Processes in the default ``torch.distributed`` group (1 when none is initialised)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def refuse_empty_batch(batch: SpeechBatch, processes: int) -> None:
    """A batch whose every example was skipped is dropped in a single process; with ``processes`` > 1
    (DDP / FSDP) dropping it would leave this rank one step short of the others, which then wait in a
    collective until the process group times out, so the run stops here naming the examples."""
    if processes > 1:
        raise RuntimeError(
            f"every example of a batch was skipped (on_bad_example: skip) in a run of {processes} processes, "
            "where a rank cannot drop a step the others take: replace or remove these examples and rerun:\n  "
            + "\n  ".join(example.message for example in batch.skipped))
