"""Speech recognition with a Whisper checkpoint (default: the bundled Whisper tiny.en), and WER.

Used by the cascade baseline (Whisper ASR → text LM) and by the conversion check of the bundled
model. Clips longer than Whisper's 30 s window are cut at the quietest 100 ms inside the last
5 s before each window boundary (espeak turns are separated by pauses, so cuts fall between
words), every window is transcribed on its own (batched, greedy, no timestamps) and the texts
are joined.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soxr
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

WINDOW_SECONDS = 30.0
SEARCH_SECONDS = 5.0  # a cut is searched in the last SEARCH_SECONDS before each window end
QUIET_FRAME_SECONDS = 0.1


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


class WhisperTranscriber:
    """Batched greedy English transcription without timestamps.

    Args:
        model_dir: a Whisper checkpoint directory (model + feature extractor + tokenizer);
            None = the bundled Whisper tiny.en (:func:`speechsum.models.whisper_ct2.bundled_whisper_dir`).
        batch_size: 30 s windows decoded together.
        max_new_tokens: longest transcript per window (Whisper's limit is 448 positions).
        device: torch device for the model.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 200,
        device: str = "cpu",
    ):
        if model_dir is None:
            from speechsum.models.whisper_ct2 import bundled_whisper_dir

            model_dir = bundled_whisper_dir()
        self.model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
        self.feature_extractor = WhisperFeatureExtractor.from_pretrained(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device = device

    @torch.no_grad()
    def transcribe(
        self, waveforms: Sequence[np.ndarray], sample_rate: int = 16_000, progress: bool = False
    ) -> list[str]:
        """One transcript per waveform (mono float arrays at ``sample_rate`` Hz)."""
        target_rate = self.feature_extractor.sampling_rate
        pieces: list[np.ndarray] = []
        owners: list[int] = []
        for index, waveform in enumerate(waveforms):
            waveform = np.asarray(waveform, dtype=np.float32)
            if sample_rate != target_rate:
                waveform = soxr.resample(waveform, sample_rate, target_rate).astype(np.float32)
            for piece in split_at_silences(waveform, target_rate):
                pieces.append(piece)
                owners.append(index)
        texts: list[str] = []
        starts = range(0, len(pieces), self.batch_size)
        for start in tqdm(starts, desc="transcribe", disable=not progress):
            batch = pieces[start : start + self.batch_size]
            features = self.feature_extractor(batch, sampling_rate=target_rate, return_tensors="pt")
            ids = self.model.generate(
                features.input_features.to(self.device),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                num_beams=1,
            )
            texts.extend(t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        joined: list[list[str]] = [[] for _ in waveforms]
        for owner, text in zip(owners, texts):
            if text:
                joined[owner].append(text)
        return [" ".join(parts) for parts in joined]


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
