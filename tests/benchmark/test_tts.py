"""espeak-ng TTS through ctypes: real synthesis, determinism, voices, errors."""

from __future__ import annotations

import multiprocessing
import threading

import numpy as np
import pytest

from speechsum.benchmark.tts import Voice, native_sample_rate, synthesize, synthesize_many, voice_exists

TEXT = "Maria Lopez approved a budget of 450 dollars for the Berlin office on March 3."


def _synth_hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(synthesize(text, voice="en-us+f3").tobytes()).hexdigest()


def test_synthesize_returns_nonempty_float_audio():
    audio = synthesize(TEXT)
    assert audio.dtype == np.float32 and audio.ndim == 1
    seconds = len(audio) / 16000
    assert 2.0 < seconds < 10.0, seconds  # a 14-word sentence at 150 words/min
    assert np.abs(audio).max() > 0.05 and np.abs(audio).max() <= 1.0
    assert native_sample_rate() == 22050


def test_same_text_gives_identical_samples_even_after_other_utterances():
    first = synthesize(TEXT)
    synthesize("Something else entirely, said by another voice.", voice="en-us+m7", rate=190, pitch=30)
    again = synthesize(TEXT)
    assert first.shape == again.shape and np.array_equal(first, again)


def test_identical_in_a_fresh_process():
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        other = pool.apply(_synth_hash, (TEXT,))
    assert other == _synth_hash(TEXT)


def test_voices_rate_and_pitch_change_the_audio():
    base = synthesize(TEXT)
    for kwargs in ({"voice": "en-us+f3"}, {"voice": "en-us+m7"}, {"voice": "en"}, {"pitch": 80}):
        other = synthesize(TEXT, **kwargs)
        assert other.shape != base.shape or not np.array_equal(other, base), kwargs
    faster = synthesize(TEXT, rate=220)
    assert len(faster) < 0.85 * len(base)
    assert np.array_equal(Voice("en-us+f3", 150, 50).synthesize(TEXT), synthesize(TEXT, voice="en-us+f3"))


def test_other_languages_and_sample_rate():
    assert voice_exists("es") and voice_exists("de") and voice_exists("fr")
    spanish = synthesize("Tenemos 450 euros para el proyecto.", voice="es", sample_rate=22050)
    resampled = synthesize("Tenemos 450 euros para el proyecto.", voice="es", sample_rate=8000)
    assert abs(len(spanish) / 22050 - len(resampled) / 8000) < 0.01


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="no voice 'xx-nope'"):
        synthesize(TEXT, voice="xx-nope")
    assert not voice_exists("en-gb") and not voice_exists("en-us+nonexistent")
    with pytest.raises(ValueError, match="rate"):
        synthesize(TEXT, rate=10)
    with pytest.raises(ValueError, match="pitch"):
        synthesize(TEXT, pitch=120)
    with pytest.raises(ValueError, match="non-empty"):
        synthesize("   ")


def test_thread_safe():
    expected = synthesize(TEXT)
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(synthesize(TEXT))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(np.array_equal(r, expected) for r in results)


def test_synthesize_many_is_deterministic_and_validates_every_item():
    items = [(TEXT, Voice("en-us+f3", 160, 40)), ("Okay, noted.", Voice("en-us+m7", 150, 60))]
    first, second = synthesize_many(items), synthesize_many(items)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert len(first[1]) < len(first[0])
    with pytest.raises(ValueError, match="no voice"):
        synthesize_many([(TEXT, Voice("en-us")), ("Hi.", Voice("zz-bad"))])
