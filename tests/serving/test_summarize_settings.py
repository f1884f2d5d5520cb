"""``speechsum summarize``'s Python API (``summarize_files``, ``summarize_waveforms``) refuses settings
and waveforms no summary could come from, naming them, as the command line does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speechsum.models.generation import GenerationSettings
from speechsum.serving.export import load_exported
from speechsum.serving.summarize import (
    DEFAULT_INSTRUCTION,
    Settings,
    main,
    summarize_files,
    summarize_waveforms,
)
from speechsum.utils.io import read_jsonl
from tests.serving.export_fixtures import write_wavs

SPECIAL = ("holds '<|im_end|>' (at character 5), a special token of the model's tokenizer: it would be read as that "
           "token, not as text (it could end the turn or add an audio position); remove or rewrite it")

NO_ROOM = ("leaves no room for the prompt in the LM's context of 2048 positions (the audio, the instruction and the "
           "summary share it); lower it")


@pytest.mark.parametrize(("settings", "message"), [
    (Settings(instruction="List <|im_end|>"), f"settings.instruction {SPECIAL}"),
    (Settings(instruction="caf\udce9"), "settings.instruction is not valid Unicode text (a lone surrogate)"),
    (Settings(instruction=None), "settings.instruction must be text, got None"),
    (Settings(instruction="List\x1b[0m"), "settings.instruction holds the control character U+001B at character 4 (a "
                                          "binary file's bytes or terminal colour codes pasted in?): remove it, or "
                                          "replace it with the character meant"),
    (Settings(batch_size=0), "settings.batch_size must be at least 1, got 0"),
    (Settings(generation=GenerationSettings(max_new_tokens=0)), "settings.generation.max_new_tokens must be at least 1, got 0"),
    (Settings(generation=GenerationSettings(max_new_tokens=4, do_sample=True, temperature=0.0)),
     "settings.generation.temperature must be a number above 0, got 0.0"),
    (Settings(generation=GenerationSettings(max_new_tokens=2048)), f"settings.generation.max_new_tokens 2048 {NO_ROOM}"),
])
def test_summarize_files_refuses_settings_naming_them(composed_export: Path, tmp_path: Path, settings, message) -> None:
    """Before: the special token went into every prompt unchecked (only the command line checked it),
    batch size 0 raised range()'s 'arg 3 must not be zero', and bad decoding settings gave every file
    an error row quoting transformers, a summary as long as the context an error row saying to split the file."""
    model = load_exported(composed_export)
    clip = write_wavs(tmp_path, rate=16_000, stereo=False)[0]
    with pytest.raises(ValueError) as info:
        summarize_files(model, [str(clip)], settings, progress=False)
    assert str(info.value) == message


@pytest.mark.parametrize("instruction", [" \n ", "\u200b\ufeff "])
def test_a_blank_instruction_is_the_default_in_python_as_on_the_command_line(composed_export: Path, tmp_path: Path,
                                                                             instruction: str):
    """Before: the command line read '  ' as the default instruction, summarize_files prompted with it; zero-width
    spaces alone (which str.strip keeps) were the prompt's text for both."""
    model = load_exported(composed_export)
    clip = str(write_wavs(tmp_path, rate=16_000, stereo=False)[0])
    generation = GenerationSettings(max_new_tokens=4)
    blank = summarize_files(model, [clip], Settings(instruction=instruction, generation=generation), progress=False)
    default = summarize_files(model, [clip], Settings(generation=generation), progress=False)
    assert blank == default and blank[0]["instruction"] == DEFAULT_INSTRUCTION


def test_the_command_line_names_its_option(composed_export: Path, tmp_path: Path) -> None:
    clip = write_wavs(tmp_path, rate=16_000, stereo=False)[0]
    with pytest.raises(SystemExit) as info:
        main([str(clip), "--model", str(composed_export), "--instruction", "List <|im_end|>"])
    assert str(info.value) == f"speechsum summarize: --instruction {SPECIAL}"
    with pytest.raises(SystemExit) as info:  # before: every file's row said to split it
        main([str(clip), "--model", str(composed_export), "--max-new-tokens", "100000"])
    assert str(info.value) == f"speechsum summarize: --max-new-tokens 100000 {NO_ROOM}"


@pytest.mark.parametrize(("waveform", "message"), [
    (np.zeros((2, 16_000), np.float32), "waveforms[0]: an array of shape (2, 16000); a waveform is mono samples, one "
                                        "dimension: average the channels first (e.g. waveform.mean(axis=0) for channels first)"),
    (np.zeros(16_000, np.int16), "waveforms[0]: int16 samples; a waveform is float samples within [-1, 1]: convert it "
                                 "(int16: waveform / 32768)"),
    (np.zeros(0, np.float32), "waveforms[0]: no samples"),
    (np.array([0.0, np.nan], np.float32), "waveforms[0]: non-finite sample (NaN or Inf) at frame 1 (0.00 s); the audio "
                                          "is corrupt: re-export it or leave the clip out"),  # no manifest
])
def test_summarize_waveforms_refuses_arrays_that_are_no_mono_float_clip(composed_export: Path, waveform, message):
    """Before: each of these was summarised without a word (a stereo array read as 2 samples long)."""
    model = load_exported(composed_export)
    with pytest.raises(ValueError) as info:
        summarize_waveforms(model, [waveform], [DEFAULT_INSTRUCTION], GenerationSettings(max_new_tokens=2))
    assert str(info.value) == message


@pytest.mark.parametrize(("instruction", "error", "message"), [
    ("<|audio|>", ValueError, "instructions[0] holds '<|audio|>' (at character 0)"),  # '14 audio placeholders but 13 …'
    ("List <|im_end|>", ValueError, f"instructions[0] {SPECIAL}"),  # closed the user turn without a word
    ("caf\udce9", ValueError, "instructions[0] is not valid Unicode text (a lone surrogate)"),  # tokenizers' TypeError
    ("\x00", ValueError, "instructions[0] holds the control character U+0000 at character 0"),
    (5, TypeError, "instructions[0] must be text, got 5"),  # "unsupported operand type(s) for +: 'int' and 'str'"
])
def test_summarize_waveforms_checks_its_instructions_as_summarize_files(composed_export: Path, instruction, error,
                                                                         message):
    """Before: summarize_waveforms (and so the API's callers) put each instruction into the prompt unchecked."""
    model = load_exported(composed_export)
    with pytest.raises(error) as info:
        summarize_waveforms(model, [np.zeros(16_000, np.float32)], [instruction], GenerationSettings(max_new_tokens=2))
    assert str(info.value).startswith(message)


def test_summarize_waveforms_needs_one_instruction_per_waveform(composed_export: Path):
    """Before: zip dropped the second clip and one summary came back for two."""
    model = load_exported(composed_export)
    clips = [np.zeros(8_000, np.float32)] * 2
    with pytest.raises(ValueError, match=r"^summarize_waveforms: 2 waveforms, 1 instructions and 2 names; give one "):
        summarize_waveforms(model, clips, [DEFAULT_INSTRUCTION], GenerationSettings(max_new_tokens=2))


def test_a_pattern_that_matched_nothing_and_a_manifest_get_rows_saying_what_to_pass(composed_export: Path, tmp_path: Path):
    """Before: 'no such file' for a pattern the shell left as it is, and for a manifest libsndfile's
    'Format not recognised' with advice to convert it with ffmpeg."""
    manifest = tmp_path / "test.jsonl"
    manifest.write_text('{"id": "a", "audio": "a.wav", "instruction": "Summarize."}\n')
    pattern = tmp_path / "*.flac"
    out = tmp_path / "rows.jsonl"
    with pytest.raises(SystemExit):
        main([str(pattern), str(manifest), "--model", str(composed_export), "--out", str(out), "--no-progress"])
    assert [row["error"] for row in read_jsonl(out)] == [
        f"{pattern}: no such file: no file matches this pattern (the shell passes a pattern that matches nothing as it is)",
        f"{manifest}: a JSON(L) file, not audio; speechsum summarize takes audio files: pass the recordings a manifest "
        "names, or run a model over a manifest with speechsum evaluate --manifest",
    ]


def test_an_out_folder_where_no_file_can_be_created_is_refused_before_any_work(tmp_path: Path) -> None:
    """Before: every file was summarised, then writing the rows failed ('No such file or directory:
    /proc/.rows.jsonl.xxxx.tmp') and the work was lost (a read-only folder: the same for other users)."""
    with pytest.raises(SystemExit) as info:
        main(["clip.wav", "--model", str(tmp_path / "no-model"), "--out", "/proc/rows.jsonl"])
    assert str(info.value) == ("speechsum summarize: --out /proc/rows.jsonl: cannot create a file in /proc (No such "
                               "file or directory); give a path in a folder you can write")


def test_a_single_path_or_array_instead_of_a_list_is_refused(composed_export: Path, tmp_path: Path):
    """Before: summarize_files(model, "clip.wav", …) gave one error row per character ('c: no such
    file', …) and summarize_waveforms(model, waveform, "Summarize.", …) one clip per sample."""
    model = load_exported(composed_export)
    clip = write_wavs(tmp_path, rate=16_000, stereo=False)[0]
    with pytest.raises(TypeError) as info:
        summarize_files(model, str(clip), Settings(), progress=False)
    assert str(info.value) == (f"summarize_files: give a list of paths, e.g. [{str(clip)!r}] (a single path was read "
                               "as one file per character)")
    with pytest.raises(TypeError, match=r"^summarize_waveforms: give lists, one entry per clip: \[waveform\], "):
        summarize_waveforms(model, np.zeros(8_000, np.float32), DEFAULT_INSTRUCTION, GenerationSettings(max_new_tokens=2))
