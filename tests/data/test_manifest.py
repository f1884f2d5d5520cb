"""load_manifest: each bad line is refused naming file, line and reason; required and optional fields."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.manifest import Example, ManifestError, load_manifest


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
        "two_objects_on_one_line": (  # before: "invalid JSON: Extra data (column N)" alone
            json.dumps(record("b", "audio/b.wav")) + " " + json.dumps(record("c", "audio/b.wav")),
            {},
            f"invalid JSON: Extra data (column {len(json.dumps(record('b', 'audio/b.wav'))) + 2}): 2 JSON objects on "
            "one line (a line break lost between them?); JSON Lines has one object per line: put each on its own line",
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
        "empty_instruction": (record("b", "audio/b.wav", instruction=""), {}, 'field \'instruction\' is empty (""): write '
                              'what the model is to do (e.g. "Summarise the call"), or delete the line'),
        "null_instruction": (record("b", "audio/b.wav", instruction=None), {}, "field 'instruction' is null: write what "
                             'the model is to do (e.g. "Summarise the call"), or delete the line'),
        "empty_summary": (record("b", "audio/b.wav", summary=""), {"require_summary": True}, 'field \'summary\' is empty '
                          '(""): write the reference summary (for data without references, on-policy KD or DPO, set '
                          "require_summary: false in the data config), or delete the line"),
        "null_summary": (record("b", "audio/b.wav", summary=None), {"require_summary": True}, "field 'summary' is null: "
                         "write the reference summary (for data without references, on-policy KD or DPO, set "
                         "require_summary: false in the data config), or delete the line"),
        "null_id": (record(None, "audio/b.wav"), {}, "field 'id' is null: give the example a unique id, or delete the line"),
        "empty_audio_path": (record("b", ""), {}, 'field \'audio\' is empty (""): give the path of its audio file, or '
                             "delete the line"),
        "null_transcript": (record("b", "audio/b.wav", summary="s", transcript=None), {"require_transcript": True},
                            "field 'transcript' is null: write what was said in the audio, or delete the line"),
        "empty_rejected": (record("b", "audio/b.wav", chosen="c", rejected=""), {"require_preference": True},
                           'field \'rejected\' is empty (""): write the judge\'s worse summary, or delete the line'),
        "blank_id": (record(" ", "audio/b.wav"), {}, "missing field 'id' (only whitespace)"),
        "blank_lang": (record("b", "audio/b.wav", lang=" \t"), {}, "field 'lang' is only whitespace or invisible "
                       "characters (' \\t'): give the speech's language code (e.g. en), or leave it out (null) for en"),
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
        "same_pair_but_whitespace": (  # DPO's only gradient: the line end of the rejected one
            record("b", "audio/b.wav", chosen="Ana sends the budget.", rejected="Ana sends the budget.\n"),
            {"require_preference": True},
            "field 'rejected': 'chosen' and 'rejected' are the same text but for whitespace around it: the pair would "
            "teach DPO only that whitespace, not the better summary; give the worse summary as 'rejected' or drop the "
            "example",
        ),
        "audio_not_found": (
            record("b", "audio/nope.wav"),
            {},
            f"field 'audio': {(audio / 'nope.wav').resolve()}: no such file",
        ),
        "audio_hf_object": (record("b", {"path": "audio/b.wav", "bytes": None}), {}, "field 'audio' must be a string, got "
                            "dict (an object with 'path', as Hugging Face datasets store audio: give the path itself, "
                            "'audio/b.wav')"),  # before: no word on what to write
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
        "audio_is_empty": (record("b", "audio/empty.wav"), {}, f"field 'audio': {(audio / 'empty.wav').resolve()}: an empty file (0 bytes: a download "
                           "or copy that failed?): replace it with the recording, or drop it"),
        "escapes_folder": (
            record("b", "../x.wav"),
            {},
            f"field 'audio': relative path '../x.wav' escapes the manifest folder {root}; "
            "use an absolute path or set allow_paths_outside_manifest_dir=True",
        ),
        "duplicate_id": (record("a", "audio/b.wav"), {}, "duplicate id 'a' (line 1 has it too): give each example its "
                         "own id"),  # before: named neither the first line nor what to do
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
    "two_objects_on_one_line",
    "array_spread_over_lines",
    "object_spread_over_lines",
    "json_too_deep",
    "blank_id",
    "blank_lang",
    "blank_summary",
    "json_string",
    "missing_id",
    "missing_audio",
    "missing_instruction",
    "empty_instruction",
    "null_instruction",
    "empty_summary",
    "null_summary",
    "null_id",
    "empty_audio_path",
    "null_transcript",
    "empty_rejected",
    "missing_summary",
    "missing_transcript",
    "missing_chosen",
    "missing_rejected",
    "same_pair",
    "same_pair_but_whitespace",
    "audio_not_found",
    "audio_hf_object",
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


def test_a_nul_character_in_the_audio_path_names_the_field(root: Path):
    manifest = write_manifest(root / "m.jsonl", [record("a"), record("b", "audio/a\u0000.wav")])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.line == 2
    assert info.value.reason == "field 'audio': 'audio/a\\x00.wav' holds a NUL character (at character 7): no file name can"

