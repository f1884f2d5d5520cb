"""load_manifest on files that are not JSON Lines as speechsum reads them (compressed, UTF-16, a pipe),
and lines whose keys or paths were written for another tool or another folder: refused saying what
the file or line shows and what to do."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
from pathlib import Path

import pytest

from speechsum.data.manifest import ManifestError, load_manifest
from tests.data.test_manifest import record, write_manifest, write_wav


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A manifest folder with ``audio/a.wav`` (1 s, 16 kHz)."""
    write_wav(tmp_path / "data" / "audio" / "a.wav", 16_000)
    return tmp_path / "data"


@pytest.mark.parametrize(("line", "requirement", "field", "key"), [
    ({"id": "b", "audio_filepath": "audio/b.wav", "instruction": "x"}, {}, "audio", "audio_filepath"),  # NeMo's name
    (record("b", "audio/b.wav", Summary="s"), {"require_summary": True}, "summary", "Summary"),
    (record("b", "audio/b.wav", transcription="t"), {"require_transcript": True}, "transcript", "transcription"),
])
def test_a_missing_field_names_the_lines_key_meant_for_it(root: Path, line, requirement, field, key):
    manifest = write_manifest(root / "m.jsonl", [line])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest, **requirement)
    assert info.value.reason == f"missing field '{field}' (the line has '{key}': rename it to '{field}')"


def test_a_path_written_relative_to_the_working_folder_is_refused_saying_the_rule(root: Path, monkeypatch):
    """Before: only 'no such file' for a path nobody wrote (the manifest folder joined to the working folder's path)."""
    monkeypatch.chdir(root.parent)
    lists = root / "lists"
    lists.mkdir()
    manifest = write_manifest(lists / "m.jsonl", [record("a", "data/audio/a.wav")])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason == (
        f"field 'audio': {lists / 'data' / 'audio' / 'a.wav'}: no such file (relative audio paths resolve against the "
        f"manifest's folder {lists}, not the working folder, where data/audio/a.wav is: write them relative to the "
        "manifest's folder, or absolute)")
    monkeypatch.chdir(lists)  # missing from both: the plain reason
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason == f"field 'audio': {lists / 'data' / 'audio' / 'a.wav'}: no such file"


def test_a_manifest_that_is_a_pipe_is_named_so(root: Path):
    """bash's --data.train_manifest <(jq -c ...) is a FIFO: it was 'manifest not found'."""
    fifo = root / "m.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(ManifestError) as info:
        load_manifest(fifo)
    assert str(info.value) == (f"{fifo}:0: not a regular file (a pipe such as bash's <(...), or a device): write the "
                               "manifest to a file (its relative audio paths resolve against that file's folder)")


@pytest.mark.parametrize(("name", "compress", "command"), [
    ("gzip", gzip.compress, "gunzip -k"),
    ("bzip2", bz2.compress, "bunzip2 -k"),
    ("xz", lzma.compress, "unxz -k"),
], ids=["gzip", "bzip2", "xz"])
def test_a_compressed_manifest_is_named_with_the_command_that_decompresses_it(root: Path, name, compress, command):
    """Before: line 1 'not valid UTF-8: byte(s) 8b at byte offset 1', and under skip every line a bad line."""
    manifest = root / f"m.jsonl.{name}"
    manifest.write_bytes(compress((json.dumps(record("a")) + "\n").encode()))
    for mode in ("error", "skip"):
        with pytest.raises(ManifestError) as info:
            load_manifest(manifest, on_bad_example=mode)
        assert str(info.value) == (f"{manifest}:1: a {name}-compressed file, not JSON Lines text: decompress it "
                                   f"({command} {manifest}) and give the file that comes out")


@pytest.mark.parametrize(("encoding", "head", "name"), [
    ("utf-16-le", b"\xff\xfe", "UTF-16LE"),  # Windows PowerShell 5: python make_manifest.py > train.jsonl
    ("utf-16-le", b"", "UTF-16LE"),
    ("utf-16-be", b"\xfe\xff", "UTF-16BE"),
    ("utf-32-le", b"\xff\xfe\x00\x00", "UTF-32LE"),
])
@pytest.mark.parametrize("start", ["", "\r\n", " "])  # before: only a file starting with "{" was known without a BOM
def test_a_utf16_manifest_is_named_with_how_to_save_it_as_utf8(root: Path, encoding, head, name, start):
    """Before: line 1 'not valid UTF-8: byte(s) ff at byte offset 0', and under skip every line a bad line;
    without a BOM and after a blank line, line 2 'holds NUL bytes … binary data'."""
    manifest = root / "m.jsonl"
    manifest.write_bytes(head + (start + json.dumps(record("a")) + "\r\n").encode(encoding))
    for mode in ("error", "skip"):
        with pytest.raises(ManifestError) as info:
            load_manifest(manifest, on_bad_example=mode)
        assert str(info.value) == (f"{manifest}:1: {name} text, not UTF-8: save it as UTF-8 (e.g. iconv -f {name} -t "
                                   f"UTF-8 {manifest} > m.utf8.jsonl; Windows PowerShell's > writes UTF-16, Out-File "
                                   "-Encoding utf8 does not)")


@pytest.mark.parametrize("on_bad_example", ["error", "skip"])
def test_a_key_given_twice_in_a_line_is_a_bad_line_not_the_last_value(root: Path, on_bad_example: str):
    """JSON keeps the last of two equal keys: ``{"id": "a", …, "id": "b"}`` was silently example ``b``."""
    manifest = root / "m.jsonl"
    good = json.dumps(record("a", "audio/a.wav"))
    manifest.write_text(f"{good}\n" + good[:-1] + ', "meta": {"k": 1, "k": 2}}\n' + good[:-1] + ', "id": "b"}\n')
    reason = "field 'k' is given twice in one object (1, then 2): JSON would keep the last silently; keep the one meant"
    if on_bad_example == "error":
        with pytest.raises(ManifestError) as info:
            load_manifest(manifest)
        assert str(info.value) == f"{manifest}:2: {reason}"
        return
    examples, skipped = load_manifest(manifest, on_bad_example="skip")
    assert [example.id for example in examples] == ["a"]
    assert [(line.line, line.reason) for line in skipped] == [
        (2, reason),
        (3, "field 'id' is given twice in one object ('a', then 'b'): JSON would keep the last silently; keep the one "
            "meant")]


@pytest.mark.parametrize(("written", "hint"), [
    ("audio\\a.wav", "written with Windows' '\\' separators: write '/'"),
    (" audio/a.wav", "spaces around the path: remove them"),
    ("audio/A.WAV", "names are case-sensitive"),
])
def test_an_audio_path_that_misses_a_file_by_a_slip_names_the_file_there(root: Path, written: str, hint: str):
    """It said only 'no such file' for a path written on Windows, padded with a space or in other case."""
    manifest = write_manifest(root / "m.jsonl", [record("b", written)])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason == (f"field 'audio': {os.path.normpath(root / written)}: no such file ({hint}; "
                                 f"{root / 'audio' / 'a.wav'} is there)")


def test_a_path_starting_with_a_tilde_names_the_expanded_file(root: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(root / "audio"))
    manifest = write_manifest(root / "m.jsonl", [record("b", "~/a.wav")])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason == (f"field 'audio': {root / '~' / 'a.wav'}: no such file ('~' is not expanded: give the "
                                 f"full path; {root / 'audio' / 'a.wav'} is there)")


@pytest.mark.parametrize("written", ["$SPEECH_DATA/a.wav", "${SPEECH_DATA}/a.wav", "%SPEECH_DATA%/a.wav"])
def test_a_path_naming_an_environment_variable_names_the_expanded_file(root: Path, monkeypatch, written: str):
    """Before: only "no such file" for the manifest folder joined to '$SPEECH_DATA/a.wav' (nothing expands it)."""
    variable = written.split("/")[0]
    monkeypatch.setenv("SPEECH_DATA", str(root / "audio"))
    manifest = write_manifest(root / "m.jsonl", [record("b", written)])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason == (f"field 'audio': {root / written}: no such file ({variable} is not expanded: give the "
                                 f"full path; {root / 'audio' / 'a.wav'} is there)")
    monkeypatch.delenv("SPEECH_DATA")  # unset: the rule, without a file to name
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason == (f"field 'audio': {root / written}: no such file ({variable} is not expanded: data "
                                 "paths are read as written; give the full path)")


@pytest.mark.parametrize("on_bad_example", ["error", "skip"])
def test_a_file_cut_short_mid_write_names_its_partial_last_line(root: Path, on_bad_example: str, caplog):
    """Before: only "invalid JSON: Unterminated string", which did not say the file was cut off."""
    whole = json.dumps(record("a", "audio/a.wav"))
    manifest = root / "m.jsonl"
    manifest.write_text(whole + "\n" + json.dumps(record("b", "audio/a.wav"))[:20], encoding="utf-8")
    reason = ("invalid JSON: Expecting value (column 21); it is the file's last line and has no line "
              "end: the file looks cut short while being written (write it again, or delete this partial line)")
    if on_bad_example == "error":
        with pytest.raises(ManifestError) as info:
            load_manifest(manifest)
        assert (info.value.line, info.value.reason) == (2, reason)
        return
    examples, skipped = load_manifest(manifest, on_bad_example="skip")
    assert ([e.id for e in examples], [(s.line, s.reason) for s in skipped]) == (["a"], [(2, reason)])
    assert f"{manifest}: skipped 1 bad line(s), kept 1" in caplog.text


def test_a_bad_line_that_ends_with_a_newline_gets_no_cut_short_hint(root: Path):
    manifest = write_manifest(root / "m.jsonl", [record("a", "audio/a.wav"), '{"id": "b",'])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason == "invalid JSON: Expecting property name enclosed in double quotes (column 12)"


@pytest.mark.parametrize(("head", "name"), [(b"RIFF\x24\x00\x00\x00WAVEfmt ", "WAV audio"), (b"fLaC\x00\x00", "FLAC audio"),
                                            (b"PAR1\x15\x04", "Parquet table")])
def test_an_audio_file_or_table_given_as_the_manifest_is_named_so(root: Path, head: bytes, name: str):
    """Before: "not valid UTF-8: byte(s) 80 at byte offset 24" for a WAV file given in the manifest's place."""
    manifest = root / "m.jsonl"
    manifest.write_bytes(head + bytes(range(256)) * 4)
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert (info.value.line, info.value.reason) == (1, (
        f"a {name} file, not JSON Lines text: give the JSONL file here (one JSON object per line; an audio file is "
        "named in a line's 'audio' field, a Parquet or Arrow dataset goes to data.hf_dataset)"))


@pytest.mark.parametrize(("delimiter", "kind", "name"), [(",", "CSV", "m.csv"), ("\t", "TSV", "my data.jsonl")])
@pytest.mark.parametrize("on_bad_example", ["error", "skip"])
def test_a_csv_or_tsv_manifest_is_refused_once_with_a_conversion_that_works(root: Path, caplog, delimiter, kind, name,
                                                                            on_bad_example):
    """Before: each of its lines was a bad line (under skip: one warning per line, then "no usable examples")."""
    import shlex
    import subprocess
    import sys

    manifest = root / name
    rows = [("id", "audio", "instruction"), ("a", "audio/a.wav", "Summarise the call"), ("b", "audio/a.wav", "Sum up")]
    manifest.write_text("".join(delimiter.join(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest, on_bad_example=on_bad_example)
    assert (info.value.path, info.value.line) == (str(manifest), 1)
    assert info.value.reason.startswith(f"the file is a {kind} table (its first line is the header id, audio, "
                                        "instruction), not JSON Lines: a manifest holds one JSON object per line")
    assert "skipping" not in caplog.text
    command = info.value.reason[info.value.reason.index("python -c"):].replace("python", shlex.quote(sys.executable), 1)
    subprocess.run(command, shell=True, check=True)
    converted = root / ("m.jsonl" if name == "m.csv" else "my data_converted.jsonl")  # not over the file read
    examples, skipped = load_manifest(converted)
    assert [e.id for e in examples] == ["a", "b"] and not skipped


def test_a_jsonl_manifest_whose_first_line_is_bad_keeps_it_a_bad_line(root: Path):
    """Only a header-like first line makes the file a table: a bad first line of a JSONL file is skipped as before."""
    manifest = root / "m.jsonl"
    good = json.dumps({"id": "a", "audio": "audio/a.wav", "instruction": "x"})
    for first in ("not json, really", "x,y", "audio/a.wav,hello world"):
        manifest.write_text(f"{first}\n{good}\n", encoding="utf-8")
        examples, skipped = load_manifest(manifest, on_bad_example="skip")
        assert [e.id for e in examples] == ["a"] and [s.line for s in skipped] == [1], first
