"""load_manifest reading a whole file: audio paths against the manifest's folder, durations from the
header, blank lines, skip mode's counts and warnings, and the file's encoding (UTF-8, BOM, CRLF)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from speechsum.data.manifest import ManifestError, SkippedLine, load_manifest
from tests.data.test_manifest import NOT_JSON_ADVICE, record, write_manifest, write_wav


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A manifest folder with ``audio/a.wav`` (1 s, 16 kHz) and ``audio/b.wav`` (0.5 s)."""
    folder = tmp_path / "data"
    write_wav(folder / "audio" / "a.wav", 16_000)
    write_wav(folder / "audio" / "b.wav", 8_000)
    return folder


def test_path_outside_folder_allowed_when_asked(root: Path, tmp_path: Path):
    outside = write_wav(tmp_path / "x.wav", 4_000)
    manifest = write_manifest(root / "m.jsonl", [record("x", "../x.wav")])
    examples, skipped = load_manifest(manifest, allow_paths_outside_manifest_dir=True)
    assert skipped == []
    assert [e.audio for e in examples] == [str(outside.resolve())]
    assert examples[0].duration == 0.25


def test_dotdot_staying_inside_folder_is_fine(root: Path):
    manifest = write_manifest(root / "m.jsonl", [record("a", "audio/../audio/a.wav")])
    examples, _ = load_manifest(manifest)
    assert examples[0].audio == str((root / "audio" / "a.wav").resolve())


def test_relative_audio_resolves_against_manifest_folder(root: Path, tmp_path: Path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    manifest = write_manifest(root / "m.jsonl", [record("a", "audio/a.wav"), record("b", "./audio/b.wav")])
    examples, _ = load_manifest(manifest)
    assert [e.audio for e in examples] == [
        str((root / "audio" / "a.wav").resolve()),
        str((root / "audio" / "b.wav").resolve()),
    ]
    assert all(Path(e.audio).is_absolute() for e in examples)


def test_absolute_audio_path(root: Path, tmp_path: Path):
    outside = write_wav(tmp_path / "elsewhere" / "z.wav", 22_050, rate=22_050)
    manifest = write_manifest(root / "m.jsonl", [record("z", str(outside.resolve()))])
    examples, _ = load_manifest(manifest)
    assert examples[0].audio == str(outside.resolve())
    assert examples[0].duration == 1.0


@pytest.mark.parametrize(
    ("samples", "rate", "channels"), [(12_345, 22_050, 1), (7_000, 8_000, 2), (44_100, 44_100, 2)]
)
def test_duration_from_header(root: Path, samples: int, rate: int, channels: int):
    write_wav(root / "audio" / "c.wav", samples, rate, channels)
    examples, _ = load_manifest(write_manifest(root / "m.jsonl", [record("c", "audio/c.wav")]))
    assert examples[0].duration == samples / rate


def test_blank_lines_ignored(root: Path):
    manifest = write_manifest(
        root / "m.jsonl", ["", record("a"), "   ", "\t", record("b", "audio/b.wav"), ""]
    )
    examples, skipped = load_manifest(manifest)
    assert [e.id for e in examples] == ["a", "b"]
    assert [e.duration for e in examples] == [1.0, 0.5]
    assert skipped == []


def test_skip_mode_keeps_good_lines_and_reports_bad_ones(root: Path, caplog):
    lines = [
        record("a"),  # 1
        "{oops",  # 2
        "",  # 3 (blank, ignored)
        record("b", "audio/b.wav"),  # 4
        record("c", "audio/missing.wav"),  # 5
        record("a", "audio/b.wav"),  # 6 duplicate of line 1
        record("d", "audio/a.wav", instruction=5),  # 7
        record("e", "audio/b.wav"),  # 8
    ]
    manifest = write_manifest(root / "m.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="speechsum.data.manifest"):
        examples, skipped = load_manifest(manifest, on_bad_example="skip")
    assert [e.id for e in examples] == ["a", "b", "e"]
    assert examples[0].audio == str((root / "audio" / "a.wav").resolve())  # the first "a" is kept
    expected = [
        SkippedLine(2, "invalid JSON: Expecting property name enclosed in double quotes (column 2)"),
        SkippedLine(5, f"field 'audio': {(root / 'audio' / 'missing.wav').resolve()}: no such file"),
        SkippedLine(6, "duplicate id 'a' (line 1 has it too): give each example its own id"),
        SkippedLine(7, 'field \'instruction\' must be a string, got int (write it as a JSON string, in quotes: "5")'),
    ]
    assert skipped == expected
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"skipping {manifest}:{s.line}: {s.reason}" for s in expected] + [
        f"{manifest}: skipped 4 bad line(s), kept 3"
    ]


def test_skip_mode_without_bad_lines_logs_nothing(root: Path, caplog):
    manifest = write_manifest(root / "m.jsonl", [record("a"), record("b", "audio/b.wav")])
    with caplog.at_level(logging.WARNING, logger="speechsum.data.manifest"):
        examples, skipped = load_manifest(manifest, on_bad_example="skip")
    assert len(examples) == 2 and skipped == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_skip_mode_with_only_bad_lines_raises(root: Path):
    manifest = write_manifest(root / "m.jsonl", ["nope", record("x", "audio/missing.wav")])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest, on_bad_example="skip")
    assert (info.value.path, info.value.line) == (str(manifest), 0)
    # the first reason too: under skip the warnings naming each may be thousands of lines up
    assert info.value.reason == ("no usable examples (2 line(s) skipped, e.g. line 1: invalid JSON: Expecting value (column "
                                 "1): the line is no JSON (it starts 'nope')" + NOT_JSON_ADVICE + ")")


def test_empty_manifest_raises(root: Path):
    manifest = write_manifest(root / "m.jsonl", ["", "  "])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert str(info.value) == (f"{manifest}:0: no usable examples: the file holds no JSON line (it is empty or blank); "
                               "write one JSON object per line")


def test_missing_manifest_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        load_manifest(tmp_path / "nope.jsonl")


def test_error_mode_stops_at_first_bad_line(root: Path):
    manifest = write_manifest(root / "m.jsonl", [record("a"), record("x", "audio/missing.wav"), "bad json"])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.line == 2


def test_invalid_utf8_line_names_file_and_line(root: Path):
    good = json.dumps(record("a")).encode()
    bad = b'{"id": "b", "audio": "audio/b.wav", "instruction": "Caf\xe9"}'  # Latin-1, not UTF-8
    manifest = root / "m.jsonl"
    manifest.write_bytes(good + b"\n\n" + bad + b"\n")  # the bad line is line 3
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    error = info.value
    reason = (f"not valid UTF-8: byte(s) e9 at byte offset {bad.index(0xE9)} (invalid continuation byte); in "
              "Windows-1252 (Latin-1) it reads 'é': if the file was saved so, convert it to UTF-8 (e.g. iconv -f "
              "WINDOWS-1252 -t UTF-8 FILE > FILE.utf8)")  # before: no word on what to do
    assert (error.path, error.line, error.reason) == (str(manifest), 3, reason)
    assert str(error) == f"{manifest}:3: {reason}"


LEGACY = ("; in Windows-1252 (Latin-1) it reads '{}': if the file was saved so, convert it to UTF-8 (e.g. iconv -f "
          "WINDOWS-1252 -t UTF-8 FILE > FILE.utf8)")


def test_a_line_of_utf8_then_a_bad_byte_gets_no_windows_1252_advice(root: Path):
    """Valid UTF-8 before the bad byte: a file mixing encodings (or damaged), not one saved as Windows-1252."""
    manifest = root / "m.jsonl"
    manifest.write_bytes('{"id": "b", "audio": "audio/b.wav", "instruction": "Grüße \xff"}\n'.encode("latin-1")
                         .replace("Grüße".encode("latin-1"), "Grüße".encode()))
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason.endswith("(invalid start byte)")


def test_skip_mode_counts_invalid_utf8_lines(root: Path, caplog):
    lines = [
        json.dumps(record("a")).encode(),  # 1
        b"\xff\xfe{}",  # 2: not UTF-8 at all
        json.dumps(record("b", "audio/b.wav", summary="Grüße, 東京")).encode(),  # 3: real UTF-8 is fine
        b'{"id": "c", "audio": "audio/b.wav", "instruction": "\xc3"}',  # 4: truncated sequence
    ]
    manifest = root / "m.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    with caplog.at_level(logging.WARNING, logger="speechsum.data.manifest"):
        examples, skipped = load_manifest(manifest, on_bad_example="skip")
    assert [e.id for e in examples] == ["a", "b"]
    assert examples[1].summary == "Grüße, 東京"
    expected = [
        SkippedLine(2, "not valid UTF-8: byte(s) ff at byte offset 0 (invalid start byte)" + LEGACY.format("ÿ")),
        SkippedLine(
            4,
            f"not valid UTF-8: byte(s) c3 at byte offset {lines[3].index(0xC3)} (invalid continuation byte)"
            + LEGACY.format("Ã"),
        ),
    ]
    assert skipped == expected
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"skipping {manifest}:{s.line}: {s.reason}" for s in expected] + [
        f"{manifest}: skipped 2 bad line(s), kept 2"
    ]


def test_utf8_bom_and_crlf_are_accepted(root: Path):
    lines = [json.dumps(record("a")), json.dumps(record("b", "audio/b.wav", summary="naïve"))]
    manifest = root / "m.jsonl"
    manifest.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    examples, skipped = load_manifest(manifest)
    assert [e.id for e in examples] == ["a", "b"]
    assert examples[1].summary == "naïve"
    assert skipped == []


def test_bom_after_the_first_line_is_a_bad_line(root: Path):
    lines = [
        json.dumps(record("a")).encode(),
        b"\xef\xbb\xbf" + json.dumps(record("b", "audio/b.wav")).encode(),
    ]
    manifest = root / "m.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.line == 2 and info.value.reason.startswith("invalid JSON: Unexpected UTF-8 BOM")


def test_a_symlinked_folder_inside_the_manifest_folder_is_followed(root: Path, tmp_path: Path, monkeypatch):
    """Containment is lexical: ``audio -> /elsewhere/audio`` is fine, ``..`` out of the folder is not,
    and the refusal names the folder absolute (a relative manifest path printed it as ``.``)."""
    write_wav(tmp_path / "elsewhere" / "audio" / "x.wav", 8_000)
    data = tmp_path / "linked"
    data.mkdir()
    (data / "audio").symlink_to(tmp_path / "elsewhere" / "audio", target_is_directory=True)
    monkeypatch.chdir(data)
    examples, _ = load_manifest(write_manifest(Path("m.jsonl"), [record("x", "audio/x.wav")]))
    assert examples[0].audio == str(data / "audio" / "x.wav") and examples[0].duration == 0.5
    with pytest.raises(ManifestError, match=re.escape(f"'audio/../../elsewhere/audio/x.wav' escapes the manifest "
                                                      f"folder {data}; use an absolute path")):
        load_manifest(write_manifest(Path("m.jsonl"), [record("x", "audio/../../elsewhere/audio/x.wav")]))


def test_a_key_that_looks_meant_for_an_absent_field_is_named_in_one_warning_per_key(root: Path, caplog):
    """'transcipt', 'Lang': values speechsum does not read, dropped without a word (the transcript a
    text teacher or the evaluation's hallucination check reads was then missing)."""
    manifest = write_manifest(root / "m.jsonl", [
        record("a", transcipt="bravo"), record("b", transcipt="echo"), record("c", Lang="de"),
        record("d", transcript="golf", speaker="s1", summary_en="x"),  # other keys: nothing to say
    ])
    with caplog.at_level(logging.WARNING, logger="speechsum.data.manifest"):
        examples, _ = load_manifest(manifest)
    assert [(e.id, e.transcript, e.lang) for e in examples] == [("a", None, "en"), ("b", None, "en"), ("c", None, "en"),
                                                                ("d", "golf", "en")]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{manifest}: 2 line(s) have the key 'transcipt' (e.g. line 1), which speechsum does not read (did you mean "
        "'transcript'?): its value is not used; rename it to 'transcript'",
        f"{manifest}: 1 line(s) have the key 'Lang' (e.g. line 3), which speechsum does not read (did you mean "
        "'lang'?): its value is not used; rename it to 'lang'",
    ]
