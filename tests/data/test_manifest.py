"""load_manifest: validation errors name file, line and reason; skip mode; path and duration handling."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.manifest import Example, ManifestError, SkippedLine, load_manifest


def write_wav(path: Path, samples: int, rate: int = 16_000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(samples) / rate
    mono = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(path, mono if channels == 1 else np.stack([mono] * channels, axis=1), rate)
    return path


def write_manifest(path: Path, lines: list[dict | str]) -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


def record(id: str = "a", audio: str = "audio/a.wav", **fields) -> dict:
    return {"id": id, "audio": audio, "instruction": "Summarise.", **fields}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A manifest folder with ``audio/a.wav`` (1 s, 16 kHz) and ``audio/b.wav``."""
    folder = tmp_path / "data"
    write_wav(folder / "audio" / "a.wav", 16_000)
    write_wav(folder / "audio" / "b.wav", 8_000)
    (folder / "audio" / "empty.wav").write_bytes(b"")
    return folder


OBJECT_ADVICE = ('; each line is one JSON object, e.g. {"id": "call-1", "audio": "call-1.wav", "instruction": '
                 '"Summarise the call"}: write this line as one, or delete it')


NOT_JSON_ADVICE = ('; a manifest line is one JSON object, e.g. {"id": "call-1", "audio": "call-1.wav", "instruction": '
                   '"Summarise the call"} (a CSV, TSV or YAML file: convert it to JSON Lines)')


def bad_case(root: Path, name: str) -> tuple[dict | str, dict, str]:
    """(bad line, load_manifest kwargs, exact reason) for each bad-line case."""
    audio = root / "audio"
    cases = {
        "invalid_json": ("not json", {}, "invalid JSON: Expecting value (column 1): the line is no JSON (it starts "
                         "'not json')" + NOT_JSON_ADVICE),
        "csv_header": ("id,audio,instruction", {}, "invalid JSON: Expecting value (column 1): the line is no JSON (it "
                       "starts 'id,audio,instruction')" + NOT_JSON_ADVICE),
        "yaml_item": ("- id: b", {}, "invalid JSON: Expecting value (column 1): the line is no JSON (it starts '- id: b')"
                      + NOT_JSON_ADVICE),
        "comment": ("# the test set", {}, "invalid JSON: Expecting value (column 1): a comment line; JSON Lines has no "
                    "comments: delete it"),
        "joined_bom": ("\ufeff" + json.dumps(record("b", "audio/b.wav")), {}, "invalid JSON: Unexpected UTF-8 BOM (decode "
                       "using utf-8-sig) (column 1): the line starts with a UTF-8 byte-order mark (U+FEFF), as where files "
                       "saved with one are joined (cat a.jsonl b.jsonl): remove it (e.g. sed -i 's/^\\xEF\\xBB\\xBF//' FILE)"),
        "truncated_json": (
            '{"id": "b",',
            {},
            "invalid JSON: Expecting property name enclosed in double quotes (column 12)",
        ),
        "json_list": ("[1, 2]", {}, "expected a JSON object, got list" + OBJECT_ADVICE),
        "nul_bytes": ("\0\0\0", {}, "invalid JSON: Expecting value (column 1): it holds NUL bytes (the first at "
                      "character 1), which no JSON text has: the file holds binary data there (e.g. zeros a crash or a "
                      "full disk left); rewrite the line, or delete it"),
        "trailing_comma": (
            json.dumps(record("b", "audio/b.wav")) + ",",
            {},
            f"invalid JSON: Extra data (column {len(json.dumps(record('b', 'audio/b.wav'))) + 1}): a ',' after the "
            "object; JSON Lines has one object per line and no commas between them: remove it",
        ),
        "array_spread_over_lines": (
            "[",
            {},
            "invalid JSON: Expecting value (column 2): a line holding only '[', as in a JSON array spread over several "
            "lines; JSON Lines has one whole object per line (convert it, e.g. jq -c '.[]' FILE > FILE.jsonl)",
        ),
        "object_spread_over_lines": (
            "{",
            {},
            "invalid JSON: Expecting property name enclosed in double quotes (column 2): a line holding only '{', as "
            "in a JSON object spread over several lines; JSON Lines has one whole object per line (convert it, e.g. "
            "jq -c '.' FILE > FILE.jsonl)",
        ),
        "json_too_deep": ("[" * 100_000 + "]" * 100_000, {}, "invalid JSON (nested deeper than Python's recursion limit)"),
        "json_string": ('"just text"', {}, "expected a JSON object, got str" + OBJECT_ADVICE),
        "missing_id": ({"audio": "audio/b.wav", "instruction": "x"}, {}, "missing field 'id'"),
        "missing_audio": ({"id": "b", "instruction": "x"}, {}, "missing field 'audio'"),
        "missing_instruction": ({"id": "b", "audio": "audio/b.wav"}, {}, "missing field 'instruction'"),
        "empty_instruction": (record("b", "audio/b.wav", instruction=""), {}, "missing field 'instruction'"),
        "blank_id": (record(" ", "audio/b.wav"), {}, "missing field 'id' (only whitespace)"),
        "blank_summary": (record("b", "audio/b.wav", summary=" \t"), {"require_summary": True},
                          "missing field 'summary' (only whitespace)"),
        "missing_summary": (record("b", "audio/b.wav"), {"require_summary": True}, "missing field 'summary'"),
        "missing_transcript": (
            record("b", "audio/b.wav", summary="s"),
            {"require_transcript": True},
            "missing field 'transcript'",
        ),
        "missing_chosen": (
            record("b", "audio/b.wav", rejected="r"),
            {"require_preference": True},
            "missing field 'chosen'",
        ),
        "missing_rejected": (
            record("b", "audio/b.wav", chosen="c"),
            {"require_preference": True},
            "missing field 'rejected'",
        ),
        "same_pair": (
            record("b", "audio/b.wav", chosen="Ana sends the budget.", rejected="Ana sends the budget."),
            {"require_preference": True},
            "field 'rejected': 'chosen' and 'rejected' are the same text: the pair teaches DPO nothing (its loss is "
            "constant, its gradient 0); give the worse summary as 'rejected' or drop the example",
        ),
        "audio_not_found": (
            record("b", "audio/nope.wav"),
            {},
            f"field 'audio': {(audio / 'nope.wav').resolve()}: no such file",
        ),
        "instruction_number": (
            record("b", "audio/b.wav", instruction=3),
            {},
            'field \'instruction\' must be a string, got int (write it as a JSON string, in quotes: "3")',
        ),
        "id_number": (record(7, "audio/b.wav"), {}, 'field \'id\' must be a string, got int (write it as a JSON string, in '
                      'quotes: "7")'),
        "summary_list": (
            record("b", "audio/b.wav", summary=["s"]),
            {},
            "field 'summary' must be a string, got list (a list: join its items into one string)",
        ),
        "duration_string": (
            record("b", "audio/b.wav", duration="1.5"),
            {},
            "field 'duration' must be a number of seconds, got str (write 1.5 without the quotes)",
        ),
        "duration_bool": (
            record("b", "audio/b.wav", duration=True),
            {},
            "field 'duration' must be a number of seconds, got bool",
        ),
        "duration_nan": (
            '{"id": "b", "audio": "audio/b.wav", "instruction": "x", "duration": NaN}',
            {},
            "field 'duration' must be a finite number of seconds",
        ),
        "duration_negative": (
            record("b", "audio/b.wav", duration=-1.5),
            {},
            "field 'duration' must be a finite number of seconds, not negative (got -1.5)",
        ),
        "duration_too_large_for_a_float": (
            '{"id": "b", "audio": "audio/b.wav", "instruction": "x", "duration": 1' + "0" * 400 + "}",
            {},
            "field 'duration' must be a finite number of seconds",
        ),
        "number_too_long": (
            '{"id": "b", "audio": "audio/b.wav", "instruction": "x", "meta": {"n": 1' + "0" * 5000 + "}}",
            {},
            f"invalid JSON: a number with more than {sys.get_int_max_str_digits()} digits",
        ),
        "audio_name_too_long": (
            record("b", "audio/" + "x" * 300 + ".wav"),
            {},
            f"field 'audio': {(audio / ('x' * 300 + '.wav')).resolve()}: unusable path "
            f"([Errno 36] File name too long: {str((audio / ('x' * 300 + '.wav')).resolve())!r})",
        ),
        "audio_is_a_folder": (record("b", "audio"), {}, f"field 'audio': {audio.resolve()}: a folder, not an audio file"),
        "audio_is_empty": (record("b", "audio/empty.wav"), {}, f"field 'audio': {(audio / 'empty.wav').resolve()}: an empty file (0 bytes)"),
        "escapes_folder": (
            record("b", "../x.wav"),
            {},
            f"field 'audio': relative path '../x.wav' escapes the manifest folder {root}; "
            "use an absolute path or set allow_paths_outside_manifest_dir=True",
        ),
        "duplicate_id": (record("a", "audio/b.wav"), {}, "duplicate id 'a'"),
        "lone_surrogate": (
            '{"id": "b", "audio": "audio/b.wav", "instruction": "Sum up \\ud83d please."}',
            {},
            "field 'instruction': a lone UTF-16 surrogate '\\ud83d' at character 7 (an unpaired "
            "\\uD800-\\uDFFF escape): not valid Unicode text",
        ),
    }
    return cases[name]


BAD_CASES = [
    "invalid_json",
    "csv_header",
    "yaml_item",
    "comment",
    "joined_bom",
    "nul_bytes",
    "truncated_json",
    "json_list",
    "trailing_comma",
    "array_spread_over_lines",
    "object_spread_over_lines",
    "json_too_deep",
    "blank_id",
    "blank_summary",
    "json_string",
    "missing_id",
    "missing_audio",
    "missing_instruction",
    "empty_instruction",
    "missing_summary",
    "missing_transcript",
    "missing_chosen",
    "missing_rejected",
    "same_pair",
    "audio_not_found",
    "instruction_number",
    "id_number",
    "summary_list",
    "duration_string",
    "duration_bool",
    "duration_nan",
    "duration_negative",
    "duration_too_large_for_a_float",
    "number_too_long",
    "audio_name_too_long",
    "audio_is_a_folder",
    "audio_is_empty",
    "escapes_folder",
    "duplicate_id",
    "lone_surrogate",
]


def check_bad_line(root: Path, bad: dict | str, kwargs: dict, reason: str, first_id: str = "a") -> Path:
    """A manifest of a good line (id ``first_id``), a blank one and ``bad``: loading it raises naming line 3 and
    ``reason``; returns the manifest."""
    good = record(first_id, "audio/a.wav", summary="s", transcript="t", chosen="c", rejected="r")
    manifest = write_manifest(root / "m.jsonl", [good, "", bad])  # the bad line is line 3
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest, **kwargs)
    error = info.value
    assert (error.path, error.line, error.reason) == (str(manifest), 3, reason)
    assert str(error) == f"{manifest}:3: {reason}"
    assert isinstance(error, ValueError)
    return manifest


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_line_raises_with_path_line_and_reason(root: Path, name: str):
    check_bad_line(root, *bad_case(root, name))


def test_unreadable_audio(root: Path):
    (root / "audio" / "text.wav").write_text("this is text, not audio\n")
    manifest = write_manifest(root / "m.jsonl", [record("t", "audio/text.wav")])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    path = (root / "audio" / "text.wav").resolve()
    assert (info.value.path, info.value.line) == (str(manifest), 1)
    assert info.value.reason.startswith(f"field 'audio': unreadable audio file {path}: ")
    assert str(info.value).startswith(f"{manifest}:1: field 'audio': unreadable audio file {path}")


def test_empty_audio(root: Path):
    sf.write(root / "audio" / "empty.wav", np.zeros(0, dtype=np.float32), 16_000)
    manifest = write_manifest(root / "m.jsonl", [record("a"), record("e", "audio/empty.wav")])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    path = (root / "audio" / "empty.wav").resolve()
    assert (info.value.path, info.value.line) == (str(manifest), 2)
    assert info.value.reason == f"field 'audio': empty audio file {path} (0 samples): no recording in it; replace it or drop it"


def test_required_fields_present_pass(root: Path):
    line = record("a", summary="s", transcript="t", chosen="c", rejected="r", lang="de")
    manifest = write_manifest(root / "m.jsonl", [line])
    examples, skipped = load_manifest(
        manifest, require_summary=True, require_transcript=True, require_preference=True
    )
    assert skipped == []
    assert examples == [
        Example(
            id="a",
            audio=str((root / "audio" / "a.wav").resolve()),
            instruction="Summarise.",
            duration=1.0,
            summary="s",
            transcript="t",
            lang="de",
            chosen="c",
            rejected="r",
        )
    ]


def test_optional_fields_default(root: Path):
    examples, _ = load_manifest(write_manifest(root / "m.jsonl", [record("a")]))
    (example,) = examples
    assert (example.summary, example.transcript, example.chosen, example.rejected) == (None,) * 4
    assert example.lang == "en"


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
        SkippedLine(6, "duplicate id 'a'"),
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
    reason = f"not valid UTF-8: byte(s) e9 at byte offset {bad.index(0xE9)} (invalid continuation byte)"
    assert (error.path, error.line, error.reason) == (str(manifest), 3, reason)
    assert str(error) == f"{manifest}:3: {reason}"


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
        SkippedLine(2, "not valid UTF-8: byte(s) ff at byte offset 0 (invalid start byte)"),
        SkippedLine(
            4,
            f"not valid UTF-8: byte(s) c3 at byte offset {lines[3].index(0xC3)} (invalid continuation byte)",
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


def test_a_nul_character_in_the_audio_path_names_the_field(root: Path):
    manifest = write_manifest(root / "m.jsonl", [record("a"), record("b", "audio/a\u0000.wav")])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.line == 2
    assert info.value.reason == "field 'audio': 'audio/a\\x00.wav' holds a NUL character (at character 7): no file name can"

