"""Offline text-to-speech with espeak-ng, driven through ctypes on the ``espeakng-loader`` wheel.

The wheel ships a self-contained ``libespeak-ng`` and its voice data but no Python synthesis API,
so this module calls the C API directly (design.md §6):

    espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, DONT_EXIT)  -> native rate (22 050 Hz)
    espeak_SetSynthCallback(cb)      cb(short* wav, int n, espeak_EVENT*) collects int16 samples
    espeak_SetVoiceByName("en-us+f3"); espeak_SetParameter(RATE | PITCH, value, 0)
    espeak_ng_SetRandSeed(1)         espeak's noise generator, reseeded per utterance (determinism)
    espeak_Synth(utf8_text, ...); espeak_Synchronize()

espeak-ng is a process-global singleton with hidden state (e.g. a static pitch-flutter phase
that keeps running across utterances, so the same text came out slightly different each time):
every call goes through one lock and runs on a freshly loaded library (``dlclose`` + ``dlopen`` +
``espeak_Initialize``, about 0.5 ms), with espeak's and libc's random seeds fixed. Output is float32 mono in [-1, 1], resampled
with soxr from 22 050 Hz to ``sample_rate``. Same text + voice + rate + pitch -> identical samples.
"""

from __future__ import annotations

import _ctypes
import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Voice", "native_sample_rate", "synthesize", "synthesize_many", "voice_exists"]

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_EE_OK = 0
_RAND_SEED = 1
_MIN_RATE, _MAX_RATE = 80, 450  # words per minute accepted by espeak-ng

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an espeak-ng voice name (``"en-us+f3"``), rate (words/min), pitch (0–100)."""

    name: str = "en-us"
    rate: int = 150
    pitch: int = 50

    def synthesize(self, text: str, sample_rate: int = 16000) -> np.ndarray:
        return synthesize(text, voice=self.name, rate=self.rate, pitch=self.pitch, sample_rate=sample_rate)


class _Engine:
    """The process's espeak-ng instance (lazily initialised, re-initialised after fork)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.lib: ctypes.CDLL | None = None
        self.rate = 0
        self.chunks: list[np.ndarray] = []
        self.callback = _SYNTH_CALLBACK(self._collect)  # kept referenced: C holds the pointer

    def _collect(self, wav, num_samples, _events) -> int:
        if num_samples > 0 and wav:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = continue synthesis

    def unload(self) -> None:
        """Terminate and unload the library so the next :meth:`ensure` starts from clean static state."""
        if self.lib is not None:  # also in a forked child: its inherited copy is dropped the same way
            self.lib.espeak_Terminate()
            _ctypes.dlclose(self.lib._handle)
        self.lib = None

    def fresh(self) -> ctypes.CDLL:
        """A freshly initialised library (no state carried over from earlier utterances)."""
        self.unload()
        return self.ensure()

    def ensure(self) -> ctypes.CDLL:
        if self.lib is not None and self.pid == os.getpid():
            return self.lib
        try:
            import espeakng_loader
        except ImportError as err:  # pragma: no cover - declared dependency
            raise RuntimeError("espeak-ng TTS needs the 'espeakng-loader' wheel: pip install espeakng-loader") from err
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Terminate.argtypes = []
        lib.espeak_Terminate.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        data_path = str(Path(espeakng_loader.get_data_path()).parent).encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (returned {rate}) with data path {data_path.decode()}")
        lib.espeak_SetSynthCallback(self.callback)
        self.lib, self.rate, self.pid = lib, rate, os.getpid()
        return lib


_ENGINE = _Engine()
_LIBC = ctypes.CDLL(None)
_VOICE_CACHE: dict[str, bool] = {}


def native_sample_rate() -> int:
    """espeak-ng's output rate in Hz (22 050 for the bundled voices)."""
    with _ENGINE.lock:
        _ENGINE.ensure()
        return _ENGINE.rate


def _set_voice(lib: ctypes.CDLL, name: str) -> bool:
    if "+" in name:  # espeak silently ignores an unknown variant; we do not
        import espeakng_loader

        variant = name.split("+", 1)[1]
        if not variant or not (Path(espeakng_loader.get_data_path()) / "voices" / "!v" / variant).is_file():
            return False
    return lib.espeak_SetVoiceByName(name.encode()) == _EE_OK


def voice_exists(name: str) -> bool:
    """True when espeak-ng accepts ``name`` (e.g. ``"en-us"``, ``"en-us+f3"``, ``"es"``)."""
    with _ENGINE.lock:
        return _set_voice(_ENGINE.ensure(), name)


def _check(text: str, voice: Voice, sample_rate: int) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("synthesize: text must be a non-empty string")
    if not _MIN_RATE <= voice.rate <= _MAX_RATE:
        raise ValueError(f"synthesize: rate must be {_MIN_RATE}–{_MAX_RATE} words/min, got {voice.rate}")
    if not 0 <= voice.pitch <= 100:
        raise ValueError(f"synthesize: pitch must be 0–100, got {voice.pitch}")
    if sample_rate <= 0:
        raise ValueError(f"synthesize: sample_rate must be positive, got {sample_rate}")


def _speak(lib: ctypes.CDLL, text: str, voice: Voice) -> list[np.ndarray]:
    if not _set_voice(lib, voice.name):
        raise ValueError(
            f"synthesize: espeak-ng has no voice {voice.name!r}; use a language code such as 'en-us', 'en', "
            "'es', 'de', 'fr', optionally with a variant ('en-us+f3', 'en-us+m7')"
        )
    lib.espeak_SetParameter(_PARAM_RATE, int(voice.rate), 0)
    lib.espeak_SetParameter(_PARAM_PITCH, int(voice.pitch), 0)
    lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
    data = text.encode("utf-8") + b"\0"
    buffer = ctypes.create_string_buffer(data, len(data))
    _ENGINE.chunks = []
    lib.espeak_ng_SetRandSeed(_RAND_SEED)  # espeak adds pseudo-random noise: reseed per utterance
    _LIBC.srand(_RAND_SEED)  # ... and also calls libc rand()
    status = lib.espeak_Synth(buffer, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    lib.espeak_Synchronize()
    chunks, _ENGINE.chunks = _ENGINE.chunks, []
    if status != _EE_OK:
        raise RuntimeError(f"espeak_Synth failed with status {status} for voice {voice.name!r}")
    if not chunks:
        raise ValueError(f"synthesize: espeak-ng produced no audio for {text[:60]!r}")
    return chunks


def _to_float(chunks: list[np.ndarray], native: int, sample_rate: int) -> np.ndarray:
    samples = np.concatenate(chunks).astype(np.float32) / 32768.0
    if sample_rate != native:
        import soxr

        samples = soxr.resample(samples, native, sample_rate, quality="HQ").astype(np.float32)
    return np.clip(samples, -1.0, 1.0)


def synthesize_many(items: list[tuple[str, Voice]], sample_rate: int = 16000) -> list[np.ndarray]:
    """Speak several ``(text, voice)`` utterances on one freshly loaded engine (one document's turns).

    Cheaper than one :func:`synthesize` per utterance (the language dictionary loads once); the
    result is a pure function of the whole list (same list -> identical samples), but an item may
    differ slightly from the same utterance spoken alone, since espeak's pitch flutter runs on.
    """
    for text, voice in items:
        _check(text, voice, sample_rate)
    with _ENGINE.lock:
        lib = _ENGINE.fresh()
        raw = [_speak(lib, text, voice) for text, voice in items]
        native = _ENGINE.rate
    return [_to_float(chunks, native, sample_rate) for chunks in raw]


def synthesize(
    text: str, voice: str = "en-us", rate: int = 150, pitch: int = 50, sample_rate: int = 16000
) -> np.ndarray:
    """Speak ``text``; returns float32 mono samples in [-1, 1] at ``sample_rate`` Hz, shape ``(n,)``.

    ``voice`` is an espeak-ng voice name with an optional ``+variant`` (``"en-us+m7"``); ``rate`` in
    words per minute (80–450); ``pitch`` 0–100. Raises ``ValueError`` for an unknown voice, an
    out-of-range parameter or text that produces no audio. Same arguments -> identical samples.
    """
    return synthesize_many([(text, Voice(voice, rate, pitch))], sample_rate)[0]
