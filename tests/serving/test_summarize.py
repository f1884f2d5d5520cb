"""``speechsum summarize``: audio files → summaries, batched; bad files get an error row and the
rest still complete; long audio follows the backbone's policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import RAW_REASON, load_audio
from speechsum.models.generation import GenerationSettings, generate_texts
from speechsum.serving.export import load_exported
from speechsum.serving.summarize import DEFAULT_INSTRUCTION, main
from speechsum.utils.io import read_jsonl
from tests.serving.export_fixtures import batch_for, trained_student, waveforms, write_wavs

MAX_NEW_TOKENS = 6


def write_formats(folder: Path) -> list[Path]:
    """One clip each as stereo 22.05 kHz wav, 44.1 kHz flac, mp3 and ogg."""
    paths = write_wavs(folder, rate=22_050, stereo=True)[:1]
    clip = waveforms()[1]
    for name, rate in (("clip.flac", 44_100), ("clip.mp3", 16_000), ("clip.ogg", 16_000)):
        import soxr

        sf.write(folder / name, soxr.resample(clip, 16_000, rate), rate)
        paths.append(folder / name)
    return paths


def test_summaries_of_every_format_and_errors_per_file(composed_export: Path, tmp_path: Path, capsys) -> None:
    good = write_formats(tmp_path / "audio")
    garbage = tmp_path / "audio" / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wav file")
    nan = tmp_path / "audio" / "nan.wav"
    sf.write(nan, np.full(1600, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    missing = tmp_path / "audio" / "missing.wav"
    files = [good[0], garbage, good[1], missing, good[2], nan, good[3]]
    out = tmp_path / "summaries.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main([*map(str, files), "--model", str(composed_export), "--out", str(out), "--batch-size", "2",
              "--max-new-tokens", str(MAX_NEW_TOKENS), "--instruction", "List the action items", "--no-progress"])
    assert exit_info.value.code == 1
    rows = read_jsonl(out)
    assert [row["audio"] for row in rows] == [str(f) for f in files]
    assert all(row["instruction"] == "List the action items" for row in rows)
    errors = {row["audio"]: row["error"] for row in rows if "error" in row}
    assert set(errors) == {str(garbage), str(missing), str(nan)}
    assert all(path in message for path, message in errors.items())
    assert errors[str(nan)] == (f"{nan}: non-finite sample (NaN or Inf) at frame 0 (0.00 s); the audio is corrupt: "
                                "re-export it or leave the file out")  # before: "… or drop it from the manifest"
    assert errors[str(missing)] == f"{missing}: no such file"
    stderr = capsys.readouterr().err
    assert all(f"speechsum summarize: {message}" in stderr for message in errors.values())
    assert "3 of 7 files failed" in stderr
    model = load_exported(composed_export)
    for row in rows:
        if "error" not in row:
            assert set(row) == {"audio", "instruction", "summary", "truncated", "num_tokens", "audio_seconds"}
            assert row["num_tokens"] >= 1
    by_path = {row["audio"]: row for row in rows}
    for path in good:
        clip = load_audio(str(path), 16_000)
        settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS)
        alone = generate_texts(model, batch_for(model, [clip], "List the action items"), settings)
        assert by_path[str(path)]["summary"] == alone.texts[0], path
        assert by_path[str(path)]["audio_seconds"] == pytest.approx(len(clip) / 16_000, abs=1e-3)


def test_a_model_whose_weights_hold_nan_is_refused_before_any_file(composed_export: Path, tmp_path: Path,
                                                                   monkeypatch, capsys) -> None:
    """A diverged model scores every token NaN; greedy decoding then wrote '!!!!!!' (token 0) as each
    file's summary, exit 0, without a word."""
    import torch

    import speechsum.serving.export as export

    load_model = export.load_model

    def diverged(*args, **kwargs):
        model = load_model(*args, **kwargs)
        name, parameter = [(n, p) for n, p in model.named_parameters() if "projector" in n][0]
        with torch.no_grad():
            parameter.view(-1)[3] = float("nan")
        diverged.name = name
        return model

    monkeypatch.setattr(export, "load_model", diverged)
    path = write_wavs(tmp_path / "audio", rate=16_000, stereo=False)[0]
    out = tmp_path / "summaries.jsonl"
    with pytest.raises(SystemExit) as stop:
        main([str(path), "--model", str(composed_export), "--out", str(out), "--no-progress"])
    assert str(stop.value) == (
        f"speechsum summarize: {composed_export}: the model's weights hold NaN or Inf (first in {diverged.name}), so "
        "every summary would be noise: the training that wrote it diverged (or the file is damaged); summarise with a "
        "checkpoint saved before the loss became NaN (RUN/STAGE/checkpoints/, exported with speechsum export), or "
        "train again with a lower learning rate")
    assert not out.exists()


def test_a_checkpoint_works_too_and_prints_rows(tmp_path: Path, capsys) -> None:
    model, ckpt = trained_student("composed_tiny", tmp_path / "run")
    path = write_wavs(tmp_path / "audio", rate=16_000, stereo=False)[0]
    main([str(path), "--model", str(ckpt), "--max-new-tokens", str(MAX_NEW_TOKENS), "--no-progress"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and "error" not in rows[0]
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS)
    batch = batch_for(model, [waveforms()[0]], DEFAULT_INSTRUCTION)
    assert rows[0]["summary"] == generate_texts(model, batch, settings).texts[0]


def test_audio_longer_than_a_fixed_input_is_refused_or_truncated(tmp_path: Path) -> None:
    """The tiny Qwen2-Audio takes at most 1 s: a 1.5-s file is refused (naming --truncate) unless
    --truncate, while the short file of the same call completes."""
    _, ckpt = trained_student("qwen2_audio_tiny", tmp_path / "run")
    short = write_wavs(tmp_path / "audio", rate=16_000, stereo=False)[0]
    long = tmp_path / "audio" / "long.wav"
    sf.write(long, (0.1 * np.random.default_rng(1).standard_normal(24_000)).astype(np.float32), 16_000)
    out = tmp_path / "out.jsonl"
    args = [str(long), str(short), "--model", str(ckpt), "--out", str(out), "--max-new-tokens", "4", "--no-progress"]
    with pytest.raises(SystemExit):
        main(args)
    rows = read_jsonl(out)
    assert rows[0]["error"] == f"{long}: longer than this model's maximum of 1 s; pass --truncate to summarise its first 1 s"
    assert "summary" in rows[1]
    main([*args, "--truncate"])
    rows = read_jsonl(out)
    assert [row["audio_seconds"] for row in rows] == [1.0, 0.6]


def test_a_text_lm_is_refused(tmp_path: Path) -> None:
    _, ckpt = trained_student("text_llm", tmp_path / "run")
    with pytest.raises(SystemExit, match="a text LM .*reads transcripts, not audio"):
        main(["x.wav", "--model", str(ckpt)])


@pytest.mark.parametrize("out", ["folder", "missing/rows.jsonl"])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(tmp_path: Path, out: str) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(SystemExit, match="--out .*: give a file path in an existing folder"):
        main(["x.wav", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / out)])


def test_a_folder_an_input_as_out_and_a_bad_device_are_refused(composed_export: Path, tmp_path: Path, capsys) -> None:
    clip = write_wavs(tmp_path, rate=16_000)[0]
    before = clip.read_bytes()
    with pytest.raises(SystemExit, match="is the audio file: the output would replace that input"):
        main([str(clip), "--model", str(composed_export), "--out", str(clip)])
    assert clip.read_bytes() == before
    with pytest.raises(SystemExit, match="--device cuda:999: "):
        main([str(clip), "--model", str(composed_export), "--device", "cuda:999"])
    with pytest.raises(SystemExit) as exit_info:  # was "[Errno 2] No such file or directory: '…'", naming no option
        main([str(clip), "--model", str(tmp_path / "student")])
    assert exit_info.value.code == (f"speechsum summarize: --model {tmp_path / 'student'}: no such file or folder; give "
                                    "a folder written by `speechsum export` or the .ckpt a stage wrote, e.g. "
                                    "RUN/dpo/checkpoints/last.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main([str(clip), "--model", str(clip), "--config", str(tmp_path / "stage.yaml")])
    assert exit_info.value.code == f"speechsum summarize: --config {tmp_path / 'stage.yaml'}: no such file"
    out = tmp_path / "rows.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), str(clip), "--model", str(composed_export), "--out", str(out), "--instruction", "  ",
              "--max-new-tokens", str(MAX_NEW_TOKENS), "--no-progress"])
    assert exit_info.value.code == 1
    folder_row, clip_row = read_jsonl(out)
    assert folder_row["error"] == f"{tmp_path}: a folder, not an audio file; pass the audio files in it (e.g. {tmp_path}/*.wav)"
    assert clip_row["instruction"] == DEFAULT_INSTRUCTION and "summary" in clip_row  # as serve: blank = the default


def test_a_clip_too_long_for_the_lms_context_is_an_error_row(composed_export: Path, tmp_path: Path) -> None:
    from speechsum.serving.summarize import Settings, prompt_positions, summarize_files

    model = load_exported(composed_export)
    short, long = write_wavs(tmp_path, rate=16_000)[:2]
    positions = prompt_positions(model, load_audio(str(long), 16_000), DEFAULT_INSTRUCTION)
    model.causal_lm().config.max_position_embeddings = positions + MAX_NEW_TOKENS - 1
    settings = Settings(instruction=DEFAULT_INSTRUCTION, generation=GenerationSettings(max_new_tokens=MAX_NEW_TOKENS))
    rows = summarize_files(model, [str(short), str(long)], settings, progress=False)
    assert "summary" in rows[0]  # 0.6 s fits
    assert rows[1]["error"] == (f"{long}: too long for this model: its 1 s and the instruction take {positions} of "
                                f"the LM's {positions + MAX_NEW_TOKENS - 1} positions, and the summary may take "
                                f"{MAX_NEW_TOKENS} more; split the file (or shorten the instruction, or lower "
                                "--max-new-tokens)")


def test_a_clip_too_long_for_the_context_is_counted_without_an_encoder_pass_when_audio_is_not_compressed(
        composed_export: Path, tmp_path: Path, monkeypatch) -> None:
    """Its placeholders are its positions: an hour's clip was encoded whole (minutes on a CPU) to count them."""
    from speechsum.serving.summarize import prompt_positions

    model = load_exported(composed_export)
    clip = load_audio(str(write_wavs(tmp_path, rate=16_000)[1]), 16_000)
    passes = []
    real = model.decode_prompt
    monkeypatch.setattr(model, "decode_prompt", lambda *args: passes.append(1) or real(*args))
    positions = prompt_positions(model, clip, DEFAULT_INSTRUCTION, fits=1)
    assert passes == [] and positions == prompt_positions(model, clip, DEFAULT_INSTRUCTION)
    monkeypatch.setattr(model.processor, "compresses_audio", True)  # CTC-compressed: only an encoder pass tells
    prompt_positions(model, clip, DEFAULT_INSTRUCTION, fits=1)
    assert passes == [1]


def test_an_encoder_failure_while_counting_positions_is_that_files_row(composed_export, tmp_path, monkeypatch):
    import speechsum.serving.summarize as summarize
    from speechsum.serving.summarize import Settings, summarize_files

    model = load_exported(composed_export)
    clips = write_wavs(tmp_path, rate=16_000)[:2]
    real = summarize.prompt_positions

    def flaky(model, waveform, instruction, fits=None):
        if len(waveform) > 12_000:  # the 1.0-s clip
            raise RuntimeError("out of memory")
        return real(model, waveform, instruction, fits)

    monkeypatch.setattr(summarize, "prompt_positions", flaky)
    rows = summarize_files(model, [str(c) for c in clips], Settings(), progress=False)
    assert "summary" in rows[0] and rows[1]["error"] == f"{clips[1]}: encoding failed: out of memory"


def test_files_that_are_not_audio_get_a_row_saying_what_they_are(composed_export: Path, tmp_path: Path) -> None:
    """A FIFO (opening it waited forever), an empty file, text named .wav, and a file name that is not
    UTF-8 (its row could not be written, and every other row was lost with it); a loop of symbolic
    links and a headerless .raw file (tracebacks that lost every row), one frame at 44.1 kHz (none at 16 kHz); a
    list of audio files (told "a text file, not audio; replace it with the recording", not to pass what it lists)."""
    import os

    good = write_wavs(tmp_path / "audio")[0]
    fifo = tmp_path / "audio" / "fifo.wav"
    os.mkfifo(fifo)
    empty = tmp_path / "audio" / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "audio" / "notes.wav"
    text.write_text("meeting notes\n")
    odd = os.fsdecode(os.fsencode(str(tmp_path / "audio")) + b"/bad\xffname.wav")
    sf.write(os.fsencode(odd), sf.read(good)[0], 16_000)
    loop = tmp_path / "audio" / "loop.wav"
    os.symlink(tmp_path / "audio" / "back.wav", loop)
    os.symlink(loop, tmp_path / "audio" / "back.wav")
    raw = tmp_path / "audio" / "pcm.raw"
    sf.write(raw, sf.read(good)[0], 16_000, format="RAW", subtype="PCM_16")
    blip = tmp_path / "audio" / "blip.wav"
    sf.write(blip, [0.5], 44_100)
    listing = tmp_path / "audio" / "files.txt"
    listing.write_text(f"{good}\nclip1.wav\n\n")  # a path, then a name in the list's folder
    out = tmp_path / "summaries.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main([str(good), str(fifo), str(empty), str(text), odd, str(loop), str(raw), str(blip), str(listing), "--model",
              str(composed_export), "--out", str(out), "--max-new-tokens", "3", "--no-progress"])
    assert exit_info.value.code == 1
    rows = read_jsonl(out)
    assert [row["audio"] for row in rows] == [str(good), str(fifo), str(empty), str(text), odd, str(loop), str(raw),
                                              str(blip), str(listing)]
    assert rows[5]["error"] == (f"{loop}: a broken symbolic link (to {tmp_path / 'audio' / 'back.wav'}): its target "
                                "is missing, or the links loop")
    assert rows[6]["error"] == f"unreadable audio file {raw}: {RAW_REASON}"
    assert rows[8]["error"] == (f"{listing}: a list of files (2 named in it), not audio; speechsum summarize takes "
                                "the audio files themselves: pass them as arguments, e.g. xargs -d '\\n' -a "
                                f"{listing} speechsum summarize --model MODEL")
    assert rows[7]["error"] == f"{blip}: no samples at 16000 Hz (it holds 1 frame(s) at 44100 Hz); replace the file or drop it"
    assert "summary" in rows[0] and "summary" in rows[4]  # the odd name is read and written back
    assert rows[1]["error"] == f"{fifo}: not a regular file (a FIFO, socket or device); save the audio to a file first"
    assert rows[2]["error"] == (f"{empty}: an empty file (0 bytes: a download or copy that failed?): replace it with "
                                "the recording, or drop it")
    assert rows[3]["error"] == (f"unreadable audio file {text}: a text file, not audio (it starts 'meeting notes\\n'); "
                                "replace it with the recording, or drop it")


@pytest.mark.parametrize("option", ["--batch-size", "--max-new-tokens"])
def test_counts_below_one_are_argparse_errors_naming_the_option(option, capsys):
    with pytest.raises(SystemExit) as info:
        main(["clip.wav", "--model", "student/", option, "0"])
    assert info.value.code == 2 and f"argument {option}: must be at least 1, got 0" in capsys.readouterr().err


def test_rows_on_a_strict_utf8_stdout_survive_a_file_name_that_is_not_utf8(composed_export, tmp_path, monkeypatch):
    """A surrogate-escaped name raised UnicodeEncodeError on print and the rows after it were lost."""
    import io
    import os
    import sys

    good = write_wavs(tmp_path / "audio", rate=16_000, stereo=False)[0]
    odd = Path(os.fsdecode(bytes(tmp_path / "audio") + b"/caf\xe9.wav"))
    odd.write_bytes(good.read_bytes())
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", stdout)
    main([str(odd), str(good), "--model", str(composed_export), "--max-new-tokens", "2", "--no-progress"])
    stdout.flush()
    rows = [json.loads(line) for line in stdout.buffer.getvalue().decode("utf-8").splitlines()]
    assert [row["audio"] for row in rows] == [str(odd), str(good)]
    assert all("error" not in row for row in rows)


def test_a_wav_cut_short_is_summarised_with_a_warning_naming_it(composed_export: Path, tmp_path: Path, caplog) -> None:
    """A manifest load warned about it; summarize read what was there without a word."""
    whole = write_wavs(tmp_path / "audio", rate=16_000, stereo=False)[1]  # 1 s
    data = whole.read_bytes()
    cut = tmp_path / "audio" / "cut.wav"
    cut.write_bytes(data[: 44 + 16_000])  # the header and 0.5 s of 16-bit samples
    out = tmp_path / "summaries.jsonl"
    main([str(cut), "--model", str(composed_export), "--out", str(out), "--max-new-tokens", "3", "--no-progress"])
    assert read_jsonl(out)[0]["audio_seconds"] == 0.5
    assert [record.getMessage() for record in caplog.records if record.name == "speechsum.data.cut_short"] == [
        f"{cut}: its header's data chunk is larger than the file (libsndfile: 'data : 32000 (should be 16000)'): cut "
        "short (a download or copy that stopped?); its 0.50 s are read: re-fetch it or drop it"]


def test_float_audio_far_over_full_scale_is_summarised_with_a_warning_naming_it(composed_export: Path, tmp_path: Path,
                                                                              caplog) -> None:
    """A manifest load warned about a float clip peaking at 4 (12 dB over full scale); summarize read it without a
    word. A clip within full scale says nothing."""
    loud, quiet = tmp_path / "loud.wav", tmp_path / "quiet.wav"
    tone = np.sin(2 * np.pi * 440 * np.arange(8_000) / 16_000).astype(np.float32)
    sf.write(loud, 4 * tone, 16_000, subtype="FLOAT")
    sf.write(quiet, tone / 4, 16_000, subtype="FLOAT")
    out = tmp_path / "summaries.jsonl"
    main([str(loud), str(quiet), "--model", str(composed_export), "--out", str(out), "--max-new-tokens", "2",
          "--no-progress"])
    assert [row["audio_seconds"] for row in read_jsonl(out)] == [0.5, 0.5]
    assert [record.getMessage() for record in caplog.records if record.name == "speechsum.data.audio"] == [
        f"{loud}: float samples up to 4, 12 dB over full scale (1.0): read as they are, louder than any recording; "
        "normalise it (e.g. `sox --norm in.wav out.wav`) if that was not meant"]
