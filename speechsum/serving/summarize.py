"""``speechsum summarize AUDIO... --model DIR|CKPT``: summaries of audio files by a trained student.

    speechsum summarize meeting.wav call.mp3 --model student/ --out summaries.jsonl

Files (wav/flac/mp3/ogg, any rate, stereo averaged to mono) are read with
:func:`speechsum.data.audio.load_audio`, batched, and summarised greedily. One JSONL row per file,
in input order: ``{"audio", "instruction", "summary", "truncated", "num_tokens", "audio_seconds"}``,
or ``{"audio", "instruction", "error"}`` for a file that could not be read or summarised (also on
stderr); the other files still complete and the exit code is 1 if any failed.

Long audio (see :func:`audio_limit`): the composed student encodes any length in 30-s windows;
Phi-4-MM takes any length; a backbone with a fixed maximum (Qwen2-Audio: 30 s) or a model built
with ``max_audio_seconds`` refuses longer files, unless ``--truncate`` keeps their first part.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from speechsum.data.audio import (
    AUDIO_ERRORS,
    AudioTooLongError,
    BadSampleError,
    SampleRateError,
    check_waveform,
    load_audio,
    path_problem,
)
from speechsum.data.audio_paths import listed_files
from speechsum.data.batch import SpeechBatch, SpeechCollator
from speechsum.data.clip_advice import without_manifest
from speechsum.data.manifest import Example
from speechsum.data.text_checks import blank, control_character, reserved_in, shown
from speechsum.models.base import SpeechLLM
from speechsum.models.generation import GeneratedTexts, GenerationSettings, generate_texts
from speechsum.training.finite_steps import first_non_finite
from speechsum.utils.arguments import ConfigError, at_least, check_count, user_path
from speechsum.utils.devices import check_device
from speechsum.utils.io import (
    check_can_write,
    check_input_file,
    check_not_an_input,
    json_line,
    linked_out,
    write_jsonl,
)
from speechsum.utils.project_configs import project_config
from speechsum.utils.repeated_options import OnceParser

DEFAULT_INSTRUCTION = "Summarize the recording."


@dataclass
class Settings:
    """How ``summarize`` runs: the instruction, decoding, batch size, long-audio policy."""

    instruction: str = DEFAULT_INSTRUCTION
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=256))
    batch_size: int = 4
    truncate: bool = False


def audio_limit(model: SpeechLLM) -> float | None:
    """The longest clip ``model`` reads, in seconds (None: any length). Qwen2-Audio's fixed
    encoder input; for other backbones the ``max_audio_seconds`` they were built with, if any."""
    limit = getattr(model.processor, "max_audio_seconds", None)
    return float(limit) if limit else None


def instruction_problem(model: SpeechLLM, instruction: object) -> str | None:
    """Why ``instruction`` cannot be the model's prompt text, or None: no text, a lone surrogate (no
    tokenizer reads it), a control or bidirectional control character (refused in a manifest's
    instruction too) or a special token of its tokenizer (:mod:`speechsum.data.text_checks`)."""
    if not isinstance(instruction, str):
        return f"must be text, got {shown(instruction)}"
    try:
        instruction.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    return control_character(instruction) or reserved_in(instruction, model.processor.reserved_text)


def or_default(instruction: str) -> str:
    """``instruction`` stripped; :data:`DEFAULT_INSTRUCTION` when it shows nothing (whitespace, or
    only invisible characters such as zero-width spaces, which ``str.strip`` keeps)."""
    return DEFAULT_INSTRUCTION if blank(instruction) else instruction.strip()


API_NAMES = {"instruction": "settings.instruction", "max_new_tokens": "settings.generation.max_new_tokens"}
CLI_NAMES = {"instruction": "--instruction", "max_new_tokens": "--max-new-tokens"}


def checked_settings(model: SpeechLLM, settings: Settings, names: dict[str, str] = API_NAMES) -> Settings:
    """``settings`` with the instruction stripped (blank: :data:`DEFAULT_INSTRUCTION`, as ``serve``);
    a ``ValueError`` naming the setting (as ``names`` spell them) for one no file could be summarised
    with: an instruction that is no valid text or holds a special token (:func:`instruction_problem`),
    a batch size below 1, decoding settings :meth:`GenerationSettings.check` refuses, a summary
    length that leaves the prompt no room in the LM's context (every file's row said to split it)."""
    instruction = or_default(settings.instruction) if isinstance(settings.instruction, str) else settings.instruction
    problem = instruction_problem(model, instruction)
    if problem:
        raise ConfigError(f"{names['instruction']} {problem}")
    check_count("settings.batch_size", settings.batch_size, 1)
    settings.generation.check("settings.generation")
    context = model.context_length()
    if context is not None and settings.generation.max_new_tokens >= context:
        raise ConfigError(f"{names['max_new_tokens']} {settings.generation.max_new_tokens} leaves no room for the "
                          f"prompt in the LM's context of {context} positions (the audio, the instruction and the "
                          "summary share it); lower it")
    return replace(settings, instruction=instruction)


def require_speech(model: SpeechLLM, source: str) -> None:
    """Refuse a text LM: it reads transcripts, not audio."""
    if not getattr(model.processor, "reads_audio", True):
        raise ValueError(f"{source}: a text LM (it reads transcripts, not audio); use a speech student")


def check_finite_weights(model: SpeechLLM, source: str) -> None:
    """A ``ValueError`` naming ``source`` and its first parameter that holds a NaN or Inf: such a model
    scores every token NaN, and greedy decoding then emits token 0 again and again ('!!!!'), which
    was written as each file's summary without a word."""
    name = first_non_finite(model.named_parameters())
    if name is not None:
        raise ValueError(f"{source}: the model's weights hold NaN or Inf (first in {name}), so every summary "
                         "would be noise: the training that wrote it diverged (or the file is damaged); summarise "
                         "with a checkpoint saved before the loss became NaN (RUN/STAGE/checkpoints/, exported with "
                         "speechsum export), or train again with a lower learning rate")


def input_problem(path: str) -> str | None:
    """Why ``path`` is no audio file to summarise (:func:`~speechsum.data.audio_paths.path_problem`), with
    what to do for what a user passes by mistake: a folder, a pattern the shell left unexpanded (no
    file matches it), a manifest (libsndfile's "Format not recognised" and its ffmpeg advice misled)."""
    problem = path_problem(path)
    if problem and os.path.isdir(path):
        return f"{problem}; pass the audio files in it (e.g. {Path(path) / '*.wav'})"
    if problem and not os.path.lexists(path) and any(char in Path(path).name for char in "*?["):
        return f"{problem}: no file matches this pattern (the shell passes a pattern that matches nothing as it is)"
    if problem is None and (count := listed_files(path)):  # before 2026-12-07 "a text file, not audio; replace it"
        return (f"a list of files ({count} named in it), not audio; speechsum summarize takes the audio files "
                f"themselves: pass them as arguments, e.g. xargs -d '\\n' -a {path} speechsum summarize --model MODEL")
    if problem is None and Path(path).suffix.lower() in (".jsonl", ".json"):
        return ("a JSON(L) file, not audio; speechsum summarize takes audio files: pass the recordings a manifest "
                "names, or run a model over a manifest with speechsum evaluate --manifest")
    return problem


def read_clip(path: str, model: SpeechLLM, truncate: bool) -> np.ndarray:
    """``path`` as mono float32 at the model's rate; longer than :func:`audio_limit` is an error
    (or cut to it when ``truncate``); an empty one is an error (:class:`~speechsum.data.audio.EmptyAudioError`)."""
    limit = audio_limit(model)
    problem = input_problem(path)
    if problem:
        raise ValueError(f"{path}: {problem}")
    try:
        waveform = load_audio(path, model.processor.sample_rate, limit, too_long="truncate" if truncate else "error",
                              warn_cut_short=True)
    except AudioTooLongError:
        raise AudioTooLongError(
            f"{path}: longer than this model's maximum of {limit:g} s; pass --truncate to summarise its first {limit:g} s"
        ) from None
    except (BadSampleError, SampleRateError) as err:  # no manifest names the file
        raise without_manifest(err, "leave the file out") from None
    return waveform


def batch_of(model: SpeechLLM, waveforms: Sequence[np.ndarray], instructions: Sequence[str], names: Sequence[str]) -> SpeechBatch:
    """A prompt-only :class:`SpeechBatch` of the waveforms (no references); a waveform that is not
    mono float samples, empty or not finite is a ``ValueError`` naming it (:func:`check_waveform`)."""
    rate = model.processor.sample_rate
    waveforms = [check_waveform(name, w, rate) for name, w in zip(names, waveforms)]
    items = [(Example(id=name, audio=name, instruction=instruction, duration=len(w) / rate), w)
             for name, instruction, w in zip(names, instructions, waveforms)]
    return SpeechCollator(model.processor)(items)


def to_device(batch: SpeechBatch, device: torch.device | str) -> SpeechBatch:
    """``batch`` with its prompt and audio tensors on ``device``."""

    def move(value):
        return value.to(device) if isinstance(value, Tensor) else value

    audio = {key: move(value) for key, value in batch.audio.items()}
    return replace(batch, audio=audio, prompt_ids=move(batch.prompt_ids), prompt_mask=move(batch.prompt_mask))


def prompt_positions(model: SpeechLLM, waveform: np.ndarray, instruction: str, fits: int | None = None) -> int:
    """Positions the LM reads for one clip's prompt: CTC-compressed audio counts only the frames it
    keeps, which takes an encoder pass; the placeholder count (an upper bound, free) is returned
    instead when it is at most ``fits``, or when it is exact (audio not compressed: before 2026-12-08 an
    hour's clip too long for the LM's context was encoded whole only to count what its placeholders said)."""
    device = next(model.parameters()).device
    batch = to_device(batch_of(model, [waveform], [instruction], ["clip"]), device)
    placeholders = int(batch.prompt_mask.sum())
    at_least = int(model.processor.prompt_positions_at_least(batch.prompt_ids, batch.prompt_mask).sum())
    if at_least == placeholders or (fits is not None and placeholders <= fits):
        return placeholders
    try:
        prompt = model.decode_prompt(batch.audio, batch.prompt_ids, batch.prompt_mask)
    except NotImplementedError:  # a backbone that decodes through its own generate: every placeholder
        return int(batch.prompt_mask.sum())
    return int(prompt.mask.sum())


def summarize_waveforms(
    model: SpeechLLM, waveforms: Sequence[np.ndarray], instructions: Sequence[str], generation: GenerationSettings,
    names: Sequence[str] | None = None, num_return_sequences: int = 1, step_check: Callable[[Tensor], Tensor | None] | None = None,
) -> GeneratedTexts:
    """Generate for one batch of waveforms (at the model's sample rate) on the model's device: one
    instruction (and name, if given) per waveform; ``step_check`` is called before each new token."""
    if isinstance(waveforms, np.ndarray) or isinstance(instructions, str):
        raise TypeError("summarize_waveforms: give lists, one entry per clip: [waveform], [instruction] (a single "
                        "array or string was read as one clip per sample or character)")
    names = list(names) if names is not None else [f"waveforms[{i}]" for i in range(len(waveforms))]
    if not len(waveforms) == len(instructions) == len(names):  # zip would drop the extra ones silently
        raise ValueError(f"summarize_waveforms: {len(waveforms)} waveforms, {len(instructions)} instructions and "
                         f"{len(names)} names; give one instruction (and name) per waveform")
    for index, instruction in enumerate(instructions):  # before: a special token went into the prompt unchecked
        if problem := instruction_problem(model, instruction):
            raise (ValueError if isinstance(instruction, str) else TypeError)(f"instructions[{index}] {problem}")
    device = next(model.parameters()).device
    batch = to_device(batch_of(model, waveforms, instructions, names), device)
    return generate_texts(model, batch, generation, num_return_sequences=num_return_sequences, step_check=step_check)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def summarize_files(model: SpeechLLM, paths: Sequence[str], settings: Settings, progress: bool = True) -> list[dict]:
    """One row per file, in input order (see the module docstring); errors go to stderr and into
    the file's row. Files are read one batch at a time. Settings no file could be summarised with
    are a ``ValueError`` first (:func:`checked_settings`)."""
    from tqdm.auto import tqdm

    if isinstance(paths, str | os.PathLike):
        raise TypeError(f"summarize_files: give a list of paths, e.g. [{str(paths)!r}] (a single path was read as "
                        "one file per character)")
    settings = checked_settings(model, settings)
    rows: list[dict] = [{"audio": str(path), "instruction": settings.instruction} for path in paths]
    bar = tqdm(total=len(rows), desc="summarize", unit="file", disable=not progress)

    def fail(row: dict, message: str) -> None:
        row["error"] = message
        print(f"speechsum summarize: {message}", file=sys.stderr)

    context = model.context_length()
    for chunk in _chunks(rows, settings.batch_size):
        loaded = []
        for row in chunk:
            try:
                clip = read_clip(row["audio"], model, settings.truncate)
            except AUDIO_ERRORS as err:
                message = str(err)
                fail(row, message if row["audio"] in message else f"{row['audio']}: {message}")
                continue
            if context is not None:
                try:
                    with torch.no_grad():
                        positions = prompt_positions(model, clip, settings.instruction,
                                                     fits=context - settings.generation.max_new_tokens)
                except (RuntimeError, ValueError) as err:  # e.g. out of memory on a long clip
                    fail(row, f"{row['audio']}: encoding failed: {err}")
                    continue
                if positions + settings.generation.max_new_tokens > context:
                    fail(row, f"{row['audio']}: too long for this model: its {len(clip) / model.processor.sample_rate:.0f} s "
                              f"and the instruction take {positions} of the LM's {context} positions, and the summary "
                              f"may take {settings.generation.max_new_tokens} more; split the file (or shorten the "
                              "instruction, or lower --max-new-tokens)")
                    continue
            loaded.append((row, clip))
        if loaded:
            clips = [clip for _, clip in loaded]
            try:
                with torch.no_grad():
                    out = summarize_waveforms(model, clips, [settings.instruction] * len(clips), settings.generation,
                                              names=[row["audio"] for row, _ in loaded])
            except (RuntimeError, ValueError) as err:
                for row, _ in loaded:
                    fail(row, f"{row['audio']}: generation failed: {err}")
            else:
                for i, (row, clip) in enumerate(loaded):
                    row.update(summary=out.texts[i], truncated=bool(out.truncated[i]), num_tokens=int(out.num_tokens[i]),
                               audio_seconds=round(len(clip) / model.processor.sample_rate, 3))
        bar.update(len(chunk))
    bar.close()
    return rows


def long_audio_help() -> str:
    return ("Long audio: the composed student (Whisper encoder) encodes any length in 30-s windows; Phi-4-MM "
            "takes any length; Qwen2-Audio's encoder has a fixed 30-s input (and a model built with "
            "max_audio_seconds has that limit): longer files are refused with an error for that file, "
            "unless --truncate, which summarises their first part only.")


def build_parser() -> argparse.ArgumentParser:
    parser = OnceParser(
        prog="speechsum summarize",
        description="Summaries of audio files (wav/flac/mp3/ogg, any sample rate, stereo averaged to mono) by a "
        "trained student: an exported directory (speechsum export) or a stage checkpoint. Writes one JSONL row "
        "per file, in input order; a file that fails gets an `error` field (and a line on stderr), the others "
        "still complete, and the exit code is 1. " + long_audio_help(),
    )
    parser.add_argument("audio", nargs="+", help="audio files")
    parser.add_argument("--model", required=True, type=user_path, help="exported directory (speechsum export) or stage checkpoint (.ckpt)")
    parser.add_argument("--config", default=None, type=project_config, metavar="YAML", help="stage config for a checkpoint without saved hyperparameters")
    parser.add_argument("--instruction", default=DEFAULT_INSTRUCTION,
                        help=f"what to write (default, and when empty or only spaces: {DEFAULT_INSTRUCTION!r}, as serve)")
    parser.add_argument("--out", default=None, type=user_path, metavar="FILE.jsonl", help="output file (default: print the rows)")
    parser.add_argument("--batch-size", type=at_least(1), default=4, metavar="N", help="files per generate call (default 4)")
    parser.add_argument("--max-new-tokens", type=at_least(1), default=256, metavar="N", help="longest summary in tokens (default 256)")
    parser.add_argument("--truncate", action="store_true",
                        help="summarise the first part of a file longer than the model's maximum instead of refusing it")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 … (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:  # a symbolic link: the file it points to gets the rows (before 2026-12-07 the link was replaced by them)
        args.out = str(linked_out(args.out, "--out")) if args.out else None
    except ValueError as err:
        raise SystemExit(f"speechsum summarize: {err}") from None
    # os.path.realpath, not Path.resolve: a loop of symbolic links is that file's error row, not a traceback here
    if args.out and (Path(args.out).is_dir() or not Path(os.path.realpath(args.out)).parent.is_dir()):
        raise SystemExit(f"speechsum summarize: --out {args.out}: give a file path in an existing folder "
                         "(checked before any audio is summarised)")
    try:
        if args.out:
            check_not_an_input(args.out, "--out", [("audio", audio) for audio in args.audio])
            check_can_write(args.out, "--out")
    except (PermissionError, ValueError) as err:
        raise SystemExit(f"speechsum summarize: {err}") from None
    try:
        check_device(args.device)
    except ValueError as err:
        raise SystemExit(f"speechsum summarize: {err}") from None
    from speechsum.serving.export import load_model

    settings = Settings(instruction=args.instruction, generation=GenerationSettings(max_new_tokens=args.max_new_tokens),
                        batch_size=args.batch_size, truncate=args.truncate)
    if not Path(args.model).exists():  # torch's "[Errno 2] No such file or directory: 'x'" named no option
        raise SystemExit(f"speechsum summarize: --model {args.model}: no such file or folder; give a folder written by "
                         "`speechsum export` or the .ckpt a stage wrote, e.g. RUN/dpo/checkpoints/last.ckpt")
    try:
        if args.config:
            check_input_file(args.config, "--config")
        model = load_model(args.model, args.config)
        require_speech(model, args.model)
        check_finite_weights(model, args.model)
        settings = checked_settings(model, settings, CLI_NAMES)
    except (OSError, ValueError) as err:
        raise SystemExit(f"speechsum summarize: {err}") from None
    model.to(args.device)
    rows = summarize_files(model, args.audio, settings, progress=not args.no_progress)
    if args.out:
        write_jsonl(args.out, rows)
    else:
        for row in rows:
            print(json_line(row, sys.stdout.encoding))
    failed = sum("error" in row for row in rows)
    if failed:
        print(f"speechsum summarize: {failed} of {len(rows)} files failed", file=sys.stderr)
        raise SystemExit(1)
    if args.out:
        print(f"{len(rows)} summaries -> {Path(args.out)}", file=sys.stderr)
