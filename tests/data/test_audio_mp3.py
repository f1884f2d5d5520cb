"""MP3s whose first frame gives libsndfile a length shorter than their frames hold (files joined
together; a variable-bitrate file without a Xing header): libsndfile reads only that first part, so
they are refused naming the file and what to do, where they were read in part without a word;
tagged MP3s whose length libsndfile gets right still read whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import UnreadableAudioError, audio_seconds, load_audio
from speechsum.data.hf_dataset import NamedAudio
from speechsum.data.manifest import ManifestError, load_manifest

RATE = 16_000


def mp3_bytes(path: Path, seconds: float) -> bytes:
    """A tone (loudness varying, so the bitrate does) written as a VBR MP3 with a Xing header."""
    time = np.arange(int(seconds * RATE)) / RATE
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * time) * (1 + np.sin(3 * time)) / 2, RATE, format="MP3")
    return path.read_bytes()


def test_mp3s_joined_together_are_refused_naming_the_file_and_both_lengths(tmp_path: Path):
    part = mp3_bytes(tmp_path / "part.mp3", 2.0)
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(part + part)
    assert sf.info(str(joined)).frames == 2 * RATE  # libsndfile reads the first part only
    for read in (lambda: load_audio(str(joined), RATE), lambda: audio_seconds(str(joined)),
                 lambda: audio_seconds(NamedAudio(joined.read_bytes(), "train[3].audio"))):
        with pytest.raises(UnreadableAudioError) as info:
            read()
        message = str(info.value)
        assert "reads only the first 2.00 s" in message and "ffmpeg -i in.mp3 out.flac" in message
        assert str(joined) in message or "train[3].audio" in message
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "joined.mp3", "instruction": "Sum up.", "summary": "ok"}) + "\n")
    with pytest.raises(ManifestError, match=r"train\.jsonl:1: field 'audio': .*joined\.mp3.*MP3 frames hold 4\.\d\d s"):
        load_manifest(manifest)


def test_an_mp3_with_id3_tags_at_both_ends_reads_whole(tmp_path: Path):
    size = 50_000  # an ID3v2 tag (cover art, say) before the frames, an ID3v1 tag after them
    id3v2 = b"ID3\x03\x00\x00" + bytes([(size >> 21) & 127, (size >> 14) & 127, (size >> 7) & 127, size & 127])
    path = tmp_path / "tagged.mp3"
    path.write_bytes(id3v2 + bytes(size) + mp3_bytes(tmp_path / "plain.mp3", 2.0) + b"TAG" + bytes(125))
    assert audio_seconds(str(path)) == 2.0
    assert len(load_audio(str(path), RATE)) == 2 * RATE
