"""Examples longer than the LM's context (``max_position_embeddings``): refused naming the manifest
line and the field that takes most positions, or under ``on_bad_example: skip`` left out of their
batch and counted; before, they trained past the context silently (rotary LMs) or crashed inside
the model (learned positions)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from speechsum.data.batch import SpeechCollator
from speechsum.data.manifest import ManifestError, SkippedLine
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.policy import TrainingPolicy
from tests.conftest import tiny_backbone_args
from tests.data.test_datamodule import copy_manifest, datamodule, read_lines, write_lines


def composed(context: int, projector: str = "mlp") -> ComposedSpeechLLM:
    args = tiny_backbone_args()
    args["llm"] = {**args["llm"], "max_position_embeddings": context}
    return ComposedSpeechLLM(**{**args, "policy": TrainingPolicy(**args["policy"]), "projector": projector})


def with_line(tmp_path: Path, toy: Path, **fields) -> Path:
    """The toy train manifest (24 lines, clips of 0.8-2.5 s) plus line 25 built from the first one."""
    lines = read_lines(copy_manifest(toy, tmp_path / "c.jsonl"))
    lines.append({**lines[0], "id": "long", **fields})
    return write_lines(tmp_path / "train.jsonl", lines)


def positions(model: ComposedSpeechLLM, example: dict) -> tuple[int, int, int]:
    """(audio placeholders, other prompt tokens, summary tokens + end of turn) of one manifest line."""
    from speechsum.data.audio import load_audio

    prompts = model.processor.encode_prompts([load_audio(example["audio"], 16_000)], [example["instruction"]])
    audio = int((prompts.prompt_ids == model.processor.audio_token_id).sum())
    summary = len(model.processor.tokenizer(example["summary"], add_special_tokens=False)["input_ids"]) + 1
    return audio, int(prompts.prompt_mask.sum()) - audio, summary


def test_a_summary_past_the_context_is_named_with_its_positions(tmp_path, toy_data):
    model = composed(context=2048)
    manifest = with_line(tmp_path, toy_data["train"], summary="word " * 500)  # ~2,500 byte tokens
    line = read_lines(manifest)[-1]
    audio, prompt, summary = positions(model, line)
    assert audio + prompt + summary > 2048
    dm = datamodule(model.processor, train_manifest=str(manifest))
    dm.setup("fit")  # the text is fine as text: found when its batch is read
    with pytest.raises(ManifestError) as info:
        list(dm.train_dataloader())
    assert (info.value.path, info.value.line) == (str(manifest), 25)
    assert str(info.value) == (
        f"{manifest}:25: field 'summary': the example takes {audio + prompt + summary} positions (audio {audio}, "
        f"instruction {prompt}, summary {summary}, with the chat template) and the model's LM reads at most 2048 "
        "(max_position_embeddings): shorten the summary or use a model with a longer context, or set on_bad_example: "
        "skip (speechsum evaluate: --on-bad-example skip) to leave such examples out")


def test_skip_leaves_it_out_and_counts_it_and_the_rest_trains_as_before(tmp_path, toy_data):
    model = composed(context=2048)
    manifest = with_line(tmp_path, toy_data["train"], summary="word " * 500)
    dm = datamodule(model.processor, train_manifest=str(manifest), on_bad_example="skip")
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert sorted(i for b in batches for i in b.ids) == sorted(e.id for e in dm.datasets["train"].examples if e.id != "long")
    assert [(s.line, s.reason.split(":")[0]) for s in dm.skipped["train"]] == [(25, "field 'summary'")]
    assert isinstance(dm.skipped["train"][0], SkippedLine)
    shortened = next(b for b in batches if b.skipped)
    assert shortened.response_ids.shape[0] == shortened.prompt_ids.shape[0] == len(shortened.audio["input_features"])


def test_long_audio_names_the_audio_and_the_remedy(tmp_path, toy_data):
    """Frame-stacked audio (every placeholder is an LM position): 20 s are 250 positions."""
    import numpy as np
    import soundfile as sf

    model = composed(context=200)
    sf.write(tmp_path / "long.wav", 0.1 * np.sin(np.arange(320_000) / 10).astype(np.float32), 16_000)
    manifest = with_line(tmp_path, toy_data["train"], audio=str(tmp_path / "long.wav"))
    audio, prompt, summary = positions(model, read_lines(manifest)[-1])
    assert audio == 250 and audio > prompt + summary
    dm = datamodule(model.processor, train_manifest=str(manifest))
    dm.setup("fit")
    with pytest.raises(ManifestError, match=r":25: field 'audio': .* reads at most 200 \(max_position_embeddings\): "
                                            r"lower data.max_audio_seconds or use a model with a longer context"):
        list(dm.train_dataloader())


def test_generation_counts_the_prompt_only(tmp_path, toy_data):
    """`speechsum predict` / `evaluate` read the prompt; a long reference summary is not refused there."""
    model = composed(context=2048)
    manifest = with_line(tmp_path, toy_data["train"], summary="word " * 500)
    dm = datamodule(model.processor, predict_manifest=str(manifest))
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert "long" in {i for b in batches for i in b.ids} and all(b.response_ids is None for b in batches)


def test_a_text_lm_names_the_transcript(tmp_path, toy_data):
    from speechsum.models.text_llm import TextLLM

    model = TextLLM(llm={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 272,
                         "max_position_embeddings": 256})
    manifest = with_line(tmp_path, toy_data["train"], transcript="hello there " * 100)
    items = [(example, torch.zeros(0).numpy()) for example in _examples(manifest, model)]
    with pytest.raises(ManifestError, match=r":25: field 'transcript': the example takes \d+ positions \("
                                            r"transcript \d+, summary \d+, .* reads at most 256"):
        SpeechCollator(model.processor, on_too_long="error")(items[-2:])


def _examples(manifest: Path, model) -> list:
    from speechsum.data.manifest import load_manifest

    lines = read_lines(manifest)
    for line in lines:
        line.setdefault("transcript", "a b c")
    examples, _ = load_manifest(write_lines(manifest, lines), require_transcript=True)
    return examples


def test_ctc_compressed_audio_is_checked_in_the_forward():
    """The collator cannot count the audio positions CTC compression keeps; the forward does."""
    import numpy as np

    from speechsum.data.manifest import Example

    example = Example(id="a", audio="a.wav", duration=20.0, instruction="Summarise.", summary="Words: echo.")
    waveform = (0.1 * np.sin(np.arange(320_000) / 10)).astype(np.float32)  # 20 s: 250 placeholders
    text = composed(context=2048, projector="ctc").processor.prompt_positions_at_least
    model = composed(context=16, projector="ctc")
    batch = SpeechCollator(model.processor)([(example, waveform)])
    text_positions = int(text(batch.prompt_ids, batch.prompt_mask)) + int(batch.response_mask.sum())
    model = composed(context=text_positions + 1, projector="ctc")
    batch = SpeechCollator(model.processor, on_too_long="error")([(example, waveform)])  # the text alone fits
    input_ids = torch.cat([batch.prompt_ids, batch.response_ids], 1)
    mask = torch.cat([batch.prompt_mask, batch.response_mask], 1)
    with pytest.raises(ValueError, match=r"takes \d+ positions \(its audio after CTC compression, prompt and response\) "
                                         rf"and the LM reads at most {text_positions + 1}"):
        model(batch.audio, input_ids, mask, mask.cumsum(1) - 1)


def test_pairs_names_no_skip_option_it_does_not_have(tmp_path, toy_data):
    """`speechsum pairs` refuses a too-long example (it has no on_bad_example): its error must not tell
    the user to set one, as its audio errors do not."""
    from speechsum.data.manifest import load_manifest
    from speechsum.pairs import sample_summaries
    from tests.data.test_text_content import _Args, _NoCache

    model = composed(context=16)  # the audio of any toy clip takes more
    examples, _ = load_manifest(toy_data["train"])
    student = type("Student", (), {"model": model, "max_audio_seconds": None})()
    with pytest.raises(ManifestError, match="reads at most 16") as caught:
        sample_summaries(student, examples[:2], _NoCache(), {e.id: e.id for e in examples}, _Args())
    assert "on_bad_example" not in str(caught.value) and "on-bad-example" not in str(caught.value)


def test_a_hugging_face_row_past_the_context_names_the_datasets_own_column(tmp_path, toy_data):
    """The error names the column the dataset calls the summary (`target`), not speechsum's field name."""
    pytest.importorskip("datasets")
    from speechsum.data.hf_dataset import HFDatasetError
    from tests.data.test_hf_dataset import RENAMED, manifest_rows, save_dataset

    rows = manifest_rows(toy_data["train"], 3)
    rows[1] = {**rows[1], "summary": "word " * 500}
    renamed = [{("key" if k == "id" else k): v for k, v in row.items()} for row in rows]
    folder = save_dataset(tmp_path / "hf", {"train": renamed}, {k: v for k, v in RENAMED.items() if k != "id"})
    dm = datamodule(composed(context=2048).processor, hf_dataset=str(folder), hf_columns=RENAMED)
    dm.setup("fit")
    with pytest.raises(HFDatasetError) as info:
        list(dm.train_dataloader())
    assert (info.value.split, info.value.row, info.value.column) == ("train", 1, "target")
