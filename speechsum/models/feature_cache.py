"""On-disk cache of a frozen audio encoder's outputs, one fp16 file per clip.

Layout: ``<root>/<encoder_id>/<content_key>.npy`` holding the clip's real encoder frames
``(T, d_enc)`` (post final layer-norm, before the projector) in float16, where

- ``content_key`` = SHA-256 of the clip's float32 waveform bytes and its sample rate
  (:func:`audio_content_key`, computed by the processor into ``audio["content_keys"]``);
- ``encoder_id`` = SHA-256 of the encoder's weights (every tensor, in full), its architecture
  fields and the feature extractor's settings (:func:`encoder_identity`). Changed weights, a
  different checkpoint or different mel settings give a different id, hence misses: that is the
  invalidation rule; stale folders can simply be deleted.

Files are written to a temporary name in the same folder and moved into place with
``os.replace``, so a reader sees a complete file or none; concurrent writers (DDP ranks,
dataloader workers) write identical bytes; a cache that cannot be written (read-only) is read, and
what it lacks is encoded and not stored, with a warning. The temporary files of a writer that was killed
(SIGKILL, out of memory: no cleanup) are removed when an encoder's folder is first used, those of this
machine's writers that no longer run (a live writer's, another machine's stay). An unreadable file (empty, cut short, not ``.npy``),
one whose array is not ``(T, d_enc)`` float16 (``T``: the clip's frame count, where the caller gives it), or one holding a NaN/Inf (damaged) counts as a miss and is rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from speechsum.utils.io import atomic_path
from speechsum.utils.temp_owner import is_special_file, remove_dead_writers_temporaries
from speechsum.utils.write_errors import UNWRITABLE

log = logging.getLogger(__name__)

FRAMES_FORMAT = "whisper-post-layernorm-v1"  # what a cached file holds; bump if that changes


def audio_content_key(waveform: np.ndarray, sample_rate: int) -> str:
    """SHA-256 hex of ``float32(waveform).tobytes()`` followed by the sample rate (8-byte LE)."""
    digest = hashlib.sha256(np.ascontiguousarray(waveform, dtype=np.float32).tobytes())
    digest.update(int(sample_rate).to_bytes(8, "little"))
    return digest.hexdigest()


def encoder_identity(encoder: nn.Module, settings: dict) -> str:
    """SHA-256 (first 24 hex digits) of every encoder tensor (name, shape, dtype, bytes) and of
    ``settings`` (architecture + feature-extractor fields that change the frames)."""
    digest = hashlib.sha256(json.dumps({"format": FRAMES_FORMAT, **settings}, sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        values = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(values.shape)}|{values.dtype}|".encode())
        digest.update(values.view(torch.uint8).numpy().tobytes() if values.numel() else b"")
    return digest.hexdigest()[:24]


def weights_version(module: nn.Module) -> tuple:
    """Cheap token that changes whenever a weight of ``module`` is modified in place or replaced
    (storage pointer + autograd version counter per tensor); used to reuse :func:`encoder_identity`."""
    return tuple((t.data_ptr(), t._version, t.dtype) for t in module.state_dict().values())


class EncoderFeatureCache:
    """Per-clip encoder frames on disk (see module docstring). Counts ``hits``, ``misses``, ``writes``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if dangling := next((path for path in (self.root, *self.root.parents) if path.is_symlink() and not path.exists()),
                            None):  # an unmounted disk's link: was a bare FileExistsError at the first batch
            raise NotADirectoryError(f"feature_cache {root}: {dangling} is a broken symbolic link (to "
                                     f"{os.readlink(dangling)}): mount or create its target, or give another folder")
        blocking = next((path for path in (self.root, *self.root.parents) if path.exists()), None)
        if blocking is not None and not blocking.is_dir():  # was "[Errno 20] Not a directory" at the first batch
            raise NotADirectoryError(f"feature_cache {root}: {blocking} is a file, not a folder: give a folder for "
                                     "the cache (or null for none)")
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.unwritable: str | None = None  # why a write failed (the cache is read only from then on)
        self.swept: set[str] = set()  # encoder ids whose folder's dead writers' temporaries were removed

    def path(self, encoder_id: str, content_key: str) -> Path:
        return self.root / encoder_id / f"{content_key}.npy"

    def get(self, encoder_id: str, content_key: str, width: int | None = None,
            length: int | None = None) -> np.ndarray | None:
        """The clip's frames ``(T, d)`` float16 (``d == width``, ``T == length`` when given), or None when absent,
        unreadable or of another shape or type."""
        path = self.path(encoder_id, content_key)
        if not path.is_file():
            return None
        # .npy only (np.load also opens zip files); memory-mapped, so a header promising more than
        # the file holds raises ValueError instead of allocating that much
        try:
            frames = np.array(np.lib.format.open_memmap(path, mode="r"))
        except (OSError, ValueError) as err:  # EOF, bad magic or header, cut-short data, object dtype
            log.warning("feature cache: unreadable %s (%s); recomputing it", path, err)
            return None
        if frames.ndim != 2 or frames.dtype != np.float16 or width not in (None, frames.shape[1]) \
                or length not in (None, frames.shape[0]):  # another T: the step failed on its placeholders
            want = f"({'T' if length is None else length}, {'d' if width is None else width})"
            log.warning("feature cache: %s holds %s %s, not %s float16; recomputing it", path, frames.dtype,
                        frames.shape, want)
            return None
        # NaN/Inf (an encoder's frames of checked audio never are: bytes damaged on disk) read from the float16
        # exponent bits, all ones: np.isfinite on float16 took 8x the file's read, on every hit of every step
        non_finite = (frames.view(np.uint16) & 0x7C00) == 0x7C00
        if non_finite.any():
            log.warning("feature cache: %s holds NaN/Inf at frame %d (damaged on disk: an encoder's frames are "
                        "finite); recomputing it", path, int(np.argmax(non_finite.any(axis=1))))
            return None
        return frames

    def sweep(self, encoder_id: str) -> None:
        """Remove the temporary files that killed writers of this machine left in ``encoder_id``'s folder
        (:func:`~speechsum.utils.temp_owner.remove_dead_writers_temporaries`; a standalone fit has no
        pipeline to clean its run folder), once per folder and process; a debug line counts them."""
        self.swept.add(encoder_id)
        folder = self.root / encoder_id
        if folder.exists() and not folder.is_dir():  # was a bare FileExistsError at the first miss
            raise NotADirectoryError(f"feature cache {self.root}: {folder} is a file where the folder of this encoder's "
                                     "frames goes: move or remove it (the cache holds one folder per encoder)")
        try:
            removed = remove_dead_writers_temporaries(self.root / encoder_id)
        except OSError as err:  # a cache this process cannot write (read-only): its leftovers stay, harmless
            log.debug("feature cache %s: temporary files of killed writers not removed (%s)", self.root, err)
            return
        if removed:
            log.debug("feature cache %s: removed %d temporary file(s) of killed writers", self.root, len(removed))

    def put(self, encoder_id: str, content_key: str, frames: Tensor) -> None:
        """Write ``frames`` ``(T, d)`` as float16, atomically. A cache on a path this process cannot write
        (a read-only mount, another user's folder) is read only from then on, with one warning naming it."""
        if self.unwritable:
            return
        path = self.path(encoder_id, content_key)
        if path.is_dir() or is_special_file(path):  # a FIFO: writing would wait for a reader, the step forever
            kind = "a folder" if path.is_dir() else "a FIFO, socket or device"
            raise FileExistsError(f"feature cache {self.root}: {path} is {kind}, not a cached clip's frames: remove it")
        try:
            with atomic_path(path) as temporary, open(temporary, "wb") as file:
                np.save(file, frames.detach().to("cpu", torch.float16).numpy(), allow_pickle=False)
        except OSError as err:
            if err.errno not in UNWRITABLE:
                raise  # a full disk, an I/O error: not a setting to work around
            self.unwritable = f"{err.strerror}: {err.filename or path}"
            log.warning("feature cache %s: cannot write to it (%s): clips it holds are read from it, the others are "
                        "encoded and not stored; make it writable or set feature_cache to a folder that is (or null)",
                        self.root, self.unwritable)
            return
        self.writes += 1

    def frames(
        self,
        encoder_id: str,
        content_keys: Sequence[str],
        compute: Callable[[list[int]], list[Tensor]],
        device: torch.device,
        width: int | None = None,
        lengths: Sequence[int] | None = None,
    ) -> list[Tensor]:
        """Frames of every clip: hits read from disk, misses computed in ONE call
        ``compute(miss_rows) -> [frames (T_i, d)]`` and written. Counts are per distinct clip. All returned frames are the
        float16-rounded values (so a clip's frames are the same whether it hit or missed), cast to
        float32 on ``device``. ``width``: the encoder's ``d``; ``lengths``: each clip's frame count (its mel frames
        halved, rounded up); a cached file of another is a miss (a file of another clip's, or written otherwise)."""
        if encoder_id not in self.swept:
            self.sweep(encoder_id)
        found: dict[str, Tensor] = {}
        missing: dict[str, int] = {}  # key -> first row of each missing clip (a repeat is computed once)
        for row, key in enumerate(content_keys):
            if key in found or key in missing:
                continue
            frames = self.get(encoder_id, key, width, None if lengths is None else lengths[row])
            if frames is None:
                missing[key] = row
            else:
                found[key] = torch.from_numpy(frames)
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            for key, frames in zip(missing, compute(list(missing.values()))):
                frames = frames.detach().to("cpu", torch.float16)
                found[key] = frames
                self.put(encoder_id, key, frames)
        return [found[key].to(device=device, dtype=torch.float32) for key in content_keys]
