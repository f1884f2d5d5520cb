"""Audio a manifest line names that speechsum does not read: a segment of its file (NeMo's ``offset``;
speechsum reads whole files, so it is refused naming the field, not trained on the whole file with the
segment's text), a URL (refused saying to download it), and a 'duration' that is not the audio's
(the audio's is used, with a warning counting such lines)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.manifest import ManifestError, load_manifest


def test_an_offset_is_refused_and_skip_mode_counts_it(tmp_path: Path):
    sf.write(tmp_path / "long.wav", np.zeros(16_000 * 3, dtype=np.float32), 16_000)
    lines = [{"id": "whole", "audio": "long.wav", "instruction": "Sum up.", "duration": 3.0},
             {"id": "part", "audio": "long.wav", "instruction": "Sum up.", "offset": 1.5, "duration": 0.5},
             {"id": "zero", "audio": "long.wav", "instruction": "Sum up.", "offset": None}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    reason = ("field 'offset' (1.5): speechsum reads whole audio files, not segments; cut the segment into its own "
              "file (e.g. `ffmpeg -ss OFFSET -t DURATION -i in.wav part.wav`) and drop 'offset'")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert (info.value.line, info.value.reason) == (2, reason)
    examples, skipped = load_manifest(manifest, on_bad_example="skip")
    assert [e.id for e in examples] == ["whole", "zero"] and [(s.line, s.reason) for s in skipped] == [(2, reason)]


@pytest.mark.parametrize("url", ["https://example.com/call.wav", "s3://bucket/call.flac", "file://server/data/call.wav"])
def test_a_url_as_audio_says_to_download_it(tmp_path: Path, url: str):
    """It was joined to the manifest folder and reported as "no such file" of a path nobody wrote."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": url, "instruction": "Sum up."}) + "\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason == f"field 'audio': {url!r} is a URL; speechsum reads local files: download it and give its path"


def test_a_file_url_as_audio_names_the_path_to_give(tmp_path: Path):
    """It was told to download a file that is on this machine."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "file:///data/my%20call.wav", "instruction": "Sum up."}) + "\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason == ("field 'audio': 'file:///data/my%20call.wav' is a file:// URL; speechsum reads paths, "
                                 "not URLs: give the path it names, /data/my call.wav")


def test_durations_that_disagree_with_the_audio_are_counted_in_one_warning(tmp_path: Path, caplog):
    """Before: the header's length was used without a word, whatever the line said (another file than the line was
    written for, or milliseconds); rounding (3.04 for 3.0) is no disagreement."""
    sf.write(tmp_path / "a.wav", np.zeros(16_000 * 3, dtype=np.float32), 16_000)
    lines = [{"id": str(number), "audio": "a.wav", "instruction": "Sum up.", "duration": stated}
             for number, stated in enumerate((3.04, 60.0, 3000, None, 2.5))]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with caplog.at_level(logging.WARNING, logger="speechsum.data.manifest"):
        examples, skipped = load_manifest(manifest)
    assert ([e.duration for e in examples], [e.stated_duration for e in examples], skipped) == (
        [3.0] * 5, [None, 60.0, 3000, None, None], [])
    assert [r.getMessage() for r in caplog.records] == [
        f"{manifest}: 2 line(s) give a 'duration' more than 1 s and 10% off their audio's length (e.g. line 2: 60 s, "
        f"its audio {tmp_path / 'a.wav'} 3.00 s); the audio's length is used: check that those lines name the right "
        "files (and that 'duration' is in seconds)"]
