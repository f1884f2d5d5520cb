"""Speech recognition with a Whisper checkpoint (default: the bundled Whisper tiny.en), and WER.

Used by the cascade baseline (Whisper ASR → text LM) and by the conversion check of the bundled
model. Clips longer than Whisper's 30 s window are cut at the quietest 100 ms inside the last
5 s before each window boundary (espeak turns are separated by pauses, so cuts fall between
words), every window is transcribed on its own (batched, greedy, no timestamps) and the texts
are joined. Windows are batched in order of length, so a batch's windows end their transcripts at
about the same step.

Decoding runs :class:`speechsum.models.whisper_decode.WhisperGreedyDecoder` (``decoder="loop"``,
the default): the same tokens as HF ``generate`` in float32, with cross-attention K/V computed once
per batch, a preallocated self-attention cache and finished rows dropped. On this project's 2-core
CPU (one thread, shared) it is 1.1–1.2× faster than ``generate`` in float32: both are bound by the
encoder (≈0.5 s per 30-s window) and, per decoded token, by reading the 80 MB LM head and the
cross-attention K/V. ``dtype="bfloat16"`` (bf16 encoder via
:class:`~speechsum.models.whisper_fast.FastWhisperEncoder`, bf16 decoder) is 1.5–1.9× faster than
float32 ``generate`` with WER equal or lower, but other transcripts for about half the clips, so it
is opt-in. Windows stay padded to 30 s: unpadded encoding made tiny.en repeat itself (WER 0.165 →
0.437) and 5 s of silence instead of the padding saved only ~10 % (benchmarks/RESULTS.md, 2026-12-04).

Transcripts can be cached on disk (``cache=``: an append-only JSONL,
:class:`speechsum.utils.remote.JsonlCache`), keyed by
``sha256(json([ASR_CACHE_VERSION, model identity, decoding settings, audio hash]))`` where the
model identity hashes the checkpoint's weight and config files, the decoding settings are
:attr:`WhisperTranscriber.settings`, and the audio hash is the SHA-256 of the float32 samples at
16 kHz. A rerun, or another split with the same audio, transcribes nothing again. Equal waveforms within one call are transcribed once.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import soxr
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from speechsum.models.model_folder import check_feature_extractor_file, check_model_folder
from speechsum.models.whisper_decode import UnsupportedDecoding, WhisperGreedyDecoder
from speechsum.models.whisper_fast import FastWhisperEncoder
from speechsum.utils.cpu_bf16 import cpu_dtype_name
from speechsum.utils.remote import JsonlCache, cache_key

WINDOW_SECONDS = 30.0
SEARCH_SECONDS = 5.0  # a cut is searched in the last SEARCH_SECONDS before each window end
QUIET_FRAME_SECONDS = 0.1
ASR_CACHE_VERSION = 1  # bump when the transcription procedure changes what it returns
_IDENTITY_FILES = ("config.json", "generation_config.json", "tokenizer.json", "preprocessor_config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def split_at_silences(waveform: np.ndarray, sample_rate: int, window_seconds: float = WINDOW_SECONDS) -> list[np.ndarray]:
    """Pieces of at most ``window_seconds``; each cut is at the start of the lowest-energy
    ``QUIET_FRAME_SECONDS`` frame within the last ``SEARCH_SECONDS`` of the window."""
    window = int(window_seconds * sample_rate)
    frame = max(1, int(QUIET_FRAME_SECONDS * sample_rate))
    search = int(min(SEARCH_SECONDS, window_seconds / 2) * sample_rate)
    pieces, start = [], 0
    while len(waveform) - start > window:
        region = waveform[start + window - search : start + window]
        frames = len(region) // frame
        energy = np.square(region[: frames * frame].reshape(frames, frame)).mean(axis=1)
        cut = start + window - search + int(np.argmin(energy)) * frame
        cut = cut if cut > start else start + window
        pieces.append(waveform[start:cut])
        start = cut
    pieces.append(waveform[start:])
    return pieces


@lru_cache(maxsize=8)
def _files_sha256(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(Path(name).name.encode() + b"\0")
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def model_identity(model_dir: str | Path) -> str:
    """SHA-256 (hex, 16 characters) over the names and bytes of the checkpoint's weight files
    (``*.safetensors``, ``*.bin``) and config/tokenizer files: equal for equal models, wherever they
    lie. Memoised per file size and modification time."""
    folder = Path(model_dir)
    files = sorted(p for p in folder.iterdir() if p.is_file()
                   and (p.suffix in _WEIGHT_SUFFIXES or p.name in _IDENTITY_FILES))
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in files):
        raise FileNotFoundError(f"{folder}: no weight files (*.safetensors, *.bin) to identify the ASR model by")
    return _files_sha256(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))[:16]


def audio_sha256(waveform: np.ndarray) -> str:
    """SHA-256 (hex) of the waveform as little-endian float32 samples."""
    return hashlib.sha256(np.ascontiguousarray(waveform, dtype="<f4").tobytes()).hexdigest()


class WhisperTranscriber:
    """Batched greedy English transcription without timestamps, with an optional on-disk cache.

    Args:
        model_dir: a Whisper checkpoint directory (model + feature extractor + tokenizer);
            None = the bundled Whisper tiny.en (:func:`speechsum.models.whisper_ct2.bundled_whisper_dir`).
        batch_size: 30 s windows decoded together.
        max_new_tokens: longest transcript per window (Whisper's limit is 448 positions).
        device: torch device for the model.
        cache: a JSONL file of cached transcripts (created if absent; see the module docstring), or None.
        dtype: ``float32`` or ``bfloat16`` (weights and activations; part of the cache key).
        decoder: ``"loop"`` (:class:`speechsum.models.whisper_decode.WhisperGreedyDecoder`, the same
            tokens as ``generate`` in float32) or ``"generate"`` (HF ``generate``); a checkpoint whose
            generation config the loop does not reproduce falls back to ``"generate"`` with a warning.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 200,
        device: str = "cpu",
        cache: str | Path | None = None,
        dtype: str = "float32",
        decoder: str = "loop",
    ):
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}")
        if decoder not in ("loop", "generate"):
            raise ValueError(f"decoder must be loop or generate, got {decoder!r}")
        if model_dir is None:
            from speechsum.models.whisper_ct2 import bundled_whisper_dir

            model_dir = bundled_whisper_dir()
        if torch.device(device).type == "cpu":
            dtype = cpu_dtype_name(dtype, "the cascade's Whisper in bfloat16 (--asr-dtype)")
        self.dtype = dtype
        check_model_folder(model_dir)
        check_feature_extractor_file(model_dir)
        self.model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device).eval()
        positions = self.model.config.max_target_positions
        if not 0 < max_new_tokens <= positions - 2:  # the decoder prompt takes two positions
            raise ValueError(f"max_new_tokens must be 1 to {positions - 2} for {model_dir} (Whisper's decoder has "
                             f"{positions} positions), got {max_new_tokens}")
        self.feature_extractor = WhisperFeatureExtractor.from_pretrained(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.identity = model_identity(model_dir)
        self.cache = JsonlCache(cache) if cache is not None else None
        self.cache_hits = 0
        self.decoder = decoder
        self.greedy: WhisperGreedyDecoder | None = None
        self.fast_encoder: FastWhisperEncoder | None = None
        if decoder == "loop":
            try:
                self.greedy = WhisperGreedyDecoder(self.model)
            except UnsupportedDecoding as error:
                warnings.warn(f"{model_dir}: decoding with HF generate ({error})", stacklevel=2)
                self.decoder = "generate"
        if self.greedy is not None and dtype == "bfloat16":
            self.fast_encoder = FastWhisperEncoder(self.model.model.encoder, getattr(torch, dtype))

    @property
    def settings(self) -> dict:
        """What decides the transcript besides model and audio (part of the cache key). The float32
        loop gives ``generate``'s tokens, so it shares ``generate``'s keys; the bfloat16 loop (another
        encoder and attention kernel) is keyed apart."""
        settings = {"decoding": "greedy", "num_beams": 1, "timestamps": False, "max_new_tokens": self.max_new_tokens,
                    "dtype": self.dtype, "window_seconds": WINDOW_SECONDS, "search_seconds": SEARCH_SECONDS,
                    "quiet_frame_seconds": QUIET_FRAME_SECONDS, "sample_rate": self.feature_extractor.sampling_rate}
        if self.greedy is not None and self.dtype != "float32":
            settings["implementation"] = "speechsum-greedy-loop"
        return settings

    def cache_key(self, waveform: np.ndarray) -> str:
        """The cache key of a waveform already at the model's sampling rate."""
        return cache_key("whisper-asr", ASR_CACHE_VERSION, self.identity, self.settings, audio_sha256(waveform))

    @torch.no_grad()
    def _decode(self, pieces: list[np.ndarray], progress: bool) -> list[str]:
        """Transcripts of ≤30 s pieces, decoded in batches of similar length (returned in input order)."""
        order = sorted(range(len(pieces)), key=lambda i: len(pieces[i]), reverse=True)
        texts = [""] * len(pieces)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="transcribe", disable=not progress):
            chunk = order[start : start + self.batch_size]
            batch = [pieces[i] for i in chunk]
            if self.greedy is None:
                decoded = self.tokenizer.batch_decode(self._generate(batch), skip_special_tokens=True)
            else:
                decoded = self._decode_loop(batch)
            for i, text in zip(chunk, decoded):
                texts[i] = text.strip()
        return texts

    def _generate(self, batch: list[np.ndarray]) -> torch.Tensor:
        """HF ``generate`` on windows padded to 30 s: token ids ``(N, L)``."""
        features = self.feature_extractor(batch, sampling_rate=self.feature_extractor.sampling_rate, return_tensors="pt")
        return self.model.generate(features.input_features.to(self.device, getattr(torch, self.dtype)),
                                   max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)

    def _decode_loop(self, batch: list[np.ndarray]) -> list[str]:
        """Texts of one batch with the greedy loop; rows that emit a timestamp token are redone by ``generate``."""
        assert self.greedy is not None
        features = self.feature_extractor(batch, sampling_rate=self.feature_extractor.sampling_rate,
                                          return_tensors="pt").input_features
        features = features.to(self.device, getattr(torch, self.dtype))
        if self.fast_encoder is None:  # float32: transformers' own encoder, as generate runs it
            frames = self.model.model.encoder(features).last_hidden_state
        else:
            frames = self.fast_encoder(features, torch.full((len(batch),), features.shape[-1], device=self.device))
        result = self.greedy(frames, self.max_new_tokens)
        texts = self.tokenizer.batch_decode(result.tokens, skip_special_tokens=True)
        if result.needs_generate:
            redone = self.tokenizer.batch_decode(self._generate([batch[i] for i in result.needs_generate]),
                                                 skip_special_tokens=True)
            for i, text in zip(result.needs_generate, redone):
                texts[i] = text
        return texts

    def transcribe(
        self, waveforms: Sequence[np.ndarray], sample_rate: int = 16_000, progress: bool = False
    ) -> list[str]:
        """One transcript per waveform (mono float arrays at ``sample_rate`` Hz). Equal waveforms are
        transcribed once (several instructions often share one recording); with a cache, cached ones
        are read and new ones added. ``cache_hits`` counts waveforms read from the cache."""
        target_rate = self.feature_extractor.sampling_rate
        keys: list[str] = []
        texts: dict[str, str] = {}
        pieces: list[np.ndarray] = []
        owners: list[str] = []
        seconds: dict[str, float] = {}
        for waveform in waveforms:
            waveform = np.asarray(waveform, dtype=np.float32)
            if sample_rate != target_rate:
                waveform = soxr.resample(waveform, sample_rate, target_rate).astype(np.float32)
            key = self.cache_key(waveform)
            keys.append(key)
            if key in texts or key in seconds:
                continue
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:
                texts[key] = hit["text"]
                self.cache_hits += 1
                continue
            seconds[key] = len(waveform) / target_rate
            for piece in split_at_silences(waveform, target_rate):
                pieces.append(piece)
                owners.append(key)
        joined: dict[str, list[str]] = {key: [] for key in seconds}
        for owner, text in zip(owners, self._decode(pieces, progress)):
            if text:
                joined[owner].append(text)
        for key, parts in joined.items():
            texts[key] = " ".join(parts)
            if self.cache is not None:
                self.cache.put(key, {"text": texts[key], "model": self.identity, "seconds": round(seconds[key], 3)})
        return [texts[key] for key in keys]


_NORMALIZER = EnglishTextNormalizer({})  # Whisper's English normaliser, without the British→American spelling map


def normalize_english(text: str) -> list[str]:
    """Words after Whisper's English normalisation (lowercase, punctuation removed, contractions
    expanded, numbers written as digits, "mr" → "mister", …)."""
    return _NORMALIZER(text).split()


def word_edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance over words (substitutions + deletions + insertions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_word in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
        previous = current
    return previous[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER = Σ word edit distance / Σ reference words, after :func:`normalize_english`."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors = words = 0
    for reference, hypothesis in zip(references, hypotheses):
        ref_words = normalize_english(reference)
        errors += word_edit_distance(ref_words, normalize_english(hypothesis))
        words += len(ref_words)
    if words == 0:
        raise ValueError("word_error_rate: the references contain no words")
    return errors / words
