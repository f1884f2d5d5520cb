"""load_manifest on text that is no plain text or shows nothing, ids and paths in another Unicode
normalization, NaN/Infinity inside meta and JSON laid out as an array: each a bad line whose reason
names the field and says what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechsum.data.manifest import load_manifest
from tests.data.test_manifest import check_bad_line, record, write_manifest, write_wav

CAFE_NFC, CAFE_NFD = "caf\u00e9.wav", "cafe\u0301.wav"  # one name, accent composed / decomposed
WINDOWS_PATH = "D:\\calls\\b.wav"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A manifest folder with ``audio/a.wav``, ``audio/b.wav`` and ``audio/café.wav`` named as macOS writes it (NFD)."""
    folder = tmp_path / "data"
    for name, samples in (("a.wav", 16_000), ("b.wav", 8_000), (CAFE_NFD, 8_000)):
        write_wav(folder / "audio" / name, samples)
    return folder


def bad_case(root: Path, name: str) -> tuple[dict | str, dict, str]:
    """(bad line, load_manifest kwargs + the good line's ``first_id``, exact reason) for each case."""
    audio = root / "audio"
    cases = {
        "json_array_on_one_line": (
            json.dumps([record("b", "audio/b.wav"), record("c", "audio/b.wav")]),
            {},
            "expected a JSON object, got list: a JSON array of 2 objects on one line; JSON Lines has one object per "
            "line (convert it, e.g. jq -c '.[]' FILE > FILE.jsonl)",
        ),
        "nul_in_summary": (
            record("b", "audio/b.wav", summary="Ana\u0000 sends it."),
            {},
            "field 'summary' holds the control character U+0000 at character 3 (a binary file's bytes or terminal "
            "colour codes pasted in?): remove it, or replace it with the character meant",
        ),
        "terminal_colour_codes_in_transcript": (
            record("b", "audio/b.wav", transcript="\u001b[31mAna:\u001b[0m hi"),
            {},
            "field 'transcript' holds the control character U+001B at character 0 (a binary file's bytes or terminal "
            "colour codes pasted in?): remove it, or replace it with the character meant",
        ),
        "c1_control_in_instruction": (
            record("b", "audio/b.wav", instruction="What\u0092s decided?"),
            {},
            "field 'instruction' holds the control character U+0092 at character 4 (text decoded with the wrong "
            "encoding? Windows-1252 read as Latin-1 gives these): remove it, or replace it with the character meant",
        ),
        "right_to_left_override_in_summary": (
            record("b", "audio/b.wav", summary="Pay \u202e0001\u202c dollars."),
            {},
            "field 'summary' holds the bidirectional control character U+202E (RIGHT-TO-LEFT OVERRIDE) at character 4: "
            "it reorders how the text is shown, so what is seen is not what the model reads; remove it (right-to-left "
            "text needs none)",
        ),
        "isolate_in_id": (
            record("call\u20667", "audio/b.wav"),
            {},
            "field 'id' holds the bidirectional control character U+2066 (LEFT-TO-RIGHT ISOLATE) at character 4: it "
            "reorders how the text is shown, so what is seen is not what the model reads; remove it (right-to-left "
            "text needs none)",
        ),
        "zero_width_summary": (
            record("b", "audio/b.wav", summary="\u200b\u200b "),
            {"require_summary": True},
            "missing field 'summary' (only invisible characters, e.g. zero-width spaces)",
        ),
        "nfd_duplicate_of_nfc_id": (
            record("cafe\u0301", "audio/b.wav"),
            {"first_id": "caf\u00e9"},
            "duplicate id 'cafe\u0301': line 1 has 'caf\u00e9', the same text in another Unicode normalization (NFC/NFD: "
            "composed or decomposed accents); give each example its own id",
        ),
        "long_duplicate_id": (
            record("i" * 5000, "audio/b.wav"),
            {"first_id": "i" * 5000},
            f"duplicate id {'i' * 60!r}… (5000 characters) (line 1 has it too): give each example its own id",
        ),
        "audio_name_in_another_unicode_normalization": (
            record("b", f"audio/{CAFE_NFC}"),
            {},
            f"field 'audio': {audio.resolve() / CAFE_NFC}: no such file (the name on disk is in Unicode NFD "
            f"(accents decomposed), the path is not: write it as on disk; {audio.resolve() / CAFE_NFD} is there)",
        ),
        "tilde_path": (
            record("b", "~/calls/b.wav"),
            {},
            f"field 'audio': {root.resolve() / '~/calls/b.wav'}: no such file ('~' is not expanded: data paths are read "
            "as written; give the full path)",
        ),
        "windows_drive_path": (
            record("b", WINDOWS_PATH),
            {},
            f"field 'audio': {root.resolve() / WINDOWS_PATH}: no such file (D: is a Windows drive: on this machine "
            "write the path the file has here, e.g. /mnt/d/... under WSL, or relative to the manifest's folder)",
        ),
        "chosen_as_chat_messages": (
            record("b", "audio/b.wav", chosen=[{"role": "assistant", "content": "Ana sends it."}], rejected="No."),
            {"require_preference": True},
            "field 'chosen' must be a string, got list (chat messages, as in TRL's conversational format: give the "
            "text, the assistant message's 'content', as the string)",
        ),
        "nan_in_meta": (
            '{"id": "b", "audio": "audio/b.wav", "instruction": "x", "meta": {"judge": {"scores": [6, NaN]}}}',
            {},
            "field 'meta.judge.scores[1]' is nan, which JSON has no number for (NaN, Infinity, or one beyond a "
            "float's range): write null, or a number",
        ),
        "huge_number_in_meta": (
            '{"id": "b", "audio": "audio/b.wav", "instruction": "x", "meta": {"speed": -1e400}}',
            {},
            "field 'meta.speed' is -inf, which JSON has no number for (NaN, Infinity, or one beyond a float's range): "
            "write null, or a number",
        ),
        "first_item_of_a_json_array": (
            "[" + json.dumps(record("b", "audio/b.wav")) + ",",
            {},
            "invalid JSON: Expecting value (column 67): an object inside a JSON array's brackets; JSON Lines has one "
            "object per line, without brackets or commas (convert it, e.g. jq -c '.[]' FILE > FILE.jsonl)",
        ),
        "last_item_of_a_json_array": (
            json.dumps(record("b", "audio/b.wav")) + "]",
            {},
            "invalid JSON: Extra data (column 65): an object inside a JSON array's brackets; JSON Lines has one "
            "object per line, without brackets or commas (convert it, e.g. jq -c '.[]' FILE > FILE.jsonl)",
        ),
    }
    return cases[name]


CASES = [
    "json_array_on_one_line",
    "nul_in_summary",
    "terminal_colour_codes_in_transcript",
    "c1_control_in_instruction",
    "right_to_left_override_in_summary",
    "isolate_in_id",
    "zero_width_summary",
    "nfd_duplicate_of_nfc_id",
    "long_duplicate_id",
    "audio_name_in_another_unicode_normalization",
    "tilde_path",
    "windows_drive_path",
    "chosen_as_chat_messages",
    "nan_in_meta",
    "huge_number_in_meta",
    "first_item_of_a_json_array",
    "last_item_of_a_json_array",
]


@pytest.mark.parametrize("name", CASES)
def test_bad_line_raises_with_path_line_and_reason(root: Path, name: str):
    """Before: control characters, zero-width text, an NFD twin of an id and NaN in meta loaded silently; the array
    and path cases said only "invalid JSON" / "no such file"; a long repeated id filled the message."""
    bad, kwargs, reason = bad_case(root, name)
    first_id = kwargs.pop("first_id", "a")  # the good line's id, for the cases of a repeated one
    manifest = check_bad_line(root, bad, kwargs, reason, first_id)
    examples, skipped = load_manifest(manifest, on_bad_example="skip", **kwargs)
    assert ([e.id for e in examples], [(s.line, s.reason) for s in skipped]) == ([first_id], [(3, reason)])


def test_control_characters_are_refused_only_where_people_write_text(root: Path):
    """chosen / rejected are a policy's own samples (a byte-level tokenizer writes any byte: `speechsum pairs` output
    must load for DPO); U+0085 (NEL) is a line end, U+2028/U+2029 separators, tab and CR/LF are text."""
    line = record("a", chosen="Ana sends \x03it.", rejected="\x1b[0m", transcript="one\x85two\u2028three\tfour\r\nfive")
    examples, skipped = load_manifest(write_manifest(root / "m.jsonl", [line]), require_preference=True)
    assert (examples[0].chosen, examples[0].rejected, examples[0].transcript, skipped) == (
        "Ana sends \x03it.", "\x1b[0m", "one\x85two\u2028three\tfour\r\nfive", [])


@pytest.mark.parametrize("char", [chr(code) for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))])
@pytest.mark.parametrize("field", ["id", "instruction", "summary", "transcript", "lang"])
def test_every_bidirectional_override_and_isolate_is_refused_in_every_written_field(root: Path, char: str, field: str):
    """Before: U+202A-U+202E and U+2066-U+2069 loaded, so a summary shown as "Pay 1000" could be read as "Pay 0001"."""
    line = {**record("a", "audio/a.wav", transcript="t"), field: f"ab{char}"}
    examples, skipped = load_manifest(write_manifest(root / "m.jsonl", [line, record("b", "audio/b.wav")]),
                                      on_bad_example="skip")
    assert [e.id for e in examples] == ["b"]
    assert skipped[0].reason.startswith(f"field '{field}' holds the bidirectional control character U+{ord(char):04X} (")
    assert skipped[0].reason.endswith(" at character 2: it reorders how the text is shown, so what is seen is not "
                                      "what the model reads; remove it (right-to-left text needs none)")


def test_right_to_left_text_and_its_marks_load_and_policy_samples_are_not_checked(root: Path):
    """Arabic and Hebrew with LRM / RLM / ALM (U+200E, U+200F, U+061C) are text; chosen / rejected are a policy's own."""
    text = "\u05e9\u05dc\u05d5\u05dd \u200f123\u200e \u0645\u0631\u062d\u0628\u0627\u061c"
    line = record("a", "audio/a.wav", summary=text, chosen="x\u202ey", rejected="z")
    examples, skipped = load_manifest(write_manifest(root / "m.jsonl", [line]), require_preference=True)
    assert (examples[0].summary, examples[0].chosen, skipped) == (text, "x\u202ey", [])
