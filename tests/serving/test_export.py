"""``speechsum export``: every backbone round-trips (same log-probs and greedy output as the
checkpoint), merged or with a PEFT adapter; native backbones load with their own from_pretrained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    Phi4MultimodalFeatureExtractor,
    Phi4MultimodalForCausalLM,
    Phi4MultimodalProcessor,
    Qwen2AudioForConditionalGeneration,
)
from transformers.image_processing_utils import ImageProcessingMixin
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from speechsum.models.base import sequence_positions
from speechsum.models.checkpoint import instantiate_speech_llm
from speechsum.models.generation import GenerationSettings, generate_texts
from speechsum.models.phi4mm import Phi4MultimodalSpeechProcessor
from speechsum.models.qwen2_audio import Qwen2AudioSpeechProcessor
from speechsum.serving.export import EXPORT_FILE, export_checkpoint, load_exported, main
from speechsum.serving.hf_layout import save_phi4_processor
from tests.serving.export_fixtures import BACKBONES, batch_for, model_config, trained_student, waveforms

GREEDY = GenerationSettings(max_new_tokens=6)


def logprobs_and_greedy(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logprobs = model.response_logprobs(batch, batch.response_ids, batch.response_mask)
    return logprobs, generate_texts(model, batch, GREEDY).ids


@pytest.mark.parametrize("merge", [False, True], ids=["adapter", "merged"])
@pytest.mark.parametrize("name", BACKBONES)
def test_round_trip_gives_the_checkpoints_model(name: str, merge: bool, tmp_path: Path) -> None:
    model, ckpt = trained_student(name, tmp_path / "run")
    out = export_checkpoint(ckpt, tmp_path / "export", merge_lora=merge)
    reloaded = load_exported(out)
    batch = batch_for(model)
    expected_logprobs, expected_ids = logprobs_and_greedy(model, batch)
    logprobs, ids = logprobs_and_greedy(reloaded, batch)
    assert expected_logprobs.abs().sum() > 0
    torch.testing.assert_close(logprobs, expected_logprobs, atol=1e-5 if merge else 0.0, rtol=1e-5 if merge else 0.0)
    assert torch.equal(ids, expected_ids)
    assert reloaded.processor.stop_token_ids == model.processor.stop_token_ids
    manifest = json.loads((out / EXPORT_FILE).read_text())
    assert manifest["lora_merged"] is merge
    assert (manifest["adapter"] is None) is merge
    assert "# speechsum student" in (out / "README.md").read_text()


def native_reload(name: str, out: Path):
    """The exported directory through the model's own classes: HF model and processor."""
    if name == "qwen2_audio_tiny":
        processor = Qwen2AudioSpeechProcessor(AutoProcessor.from_pretrained(out), max_source_positions=50)
        return Qwen2AudioForConditionalGeneration.from_pretrained(out).eval(), processor
    hf_processor = Phi4MultimodalProcessor(ImageProcessingMixin(), Phi4MultimodalFeatureExtractor.from_pretrained(out),
                                           AutoTokenizer.from_pretrained(out))
    return Phi4MultimodalForCausalLM.from_pretrained(out).eval(), Phi4MultimodalSpeechProcessor(hf_processor)


@pytest.mark.parametrize("name", ["qwen2_audio_tiny", "phi4mm_tiny"])
def test_native_backbones_load_with_their_own_from_pretrained(name: str, tmp_path: Path) -> None:
    """The merged export is a plain HF directory: its own model and processor classes give the
    student's prompt ids and logits."""
    model, ckpt = trained_student(name, tmp_path / "run")
    out = export_checkpoint(ckpt, tmp_path / "export", merge_lora=True)
    native, processor = native_reload(name, out)
    batch = batch_for(model)
    inputs = processor.encode_prompts(waveforms(), batch.instructions)
    assert torch.equal(inputs.prompt_ids, batch.prompt_ids)
    with torch.no_grad():
        positions = sequence_positions(batch.prompt_mask)
        ours = model(batch.audio, batch.prompt_ids, batch.prompt_mask, positions)
        theirs = native(input_ids=inputs.prompt_ids, attention_mask=inputs.prompt_mask, position_ids=positions,
                        **inputs.audio).logits
    mask = batch.prompt_mask.bool()
    torch.testing.assert_close(theirs[mask], ours[mask], atol=1e-4, rtol=1e-4)


def test_composed_parts_load_with_hf_and_peft(tmp_path: Path) -> None:
    """The composed export's parts are HF directories: ``encoder/`` a Whisper encoder, ``llm/`` the
    base LM whose ``adapter/`` PEFT loads."""
    model, ckpt = trained_student("composed_tiny", tmp_path / "run")
    out = export_checkpoint(ckpt, tmp_path / "export")
    encoder = WhisperEncoder.from_pretrained(out / "encoder")
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value), key
    base = AutoModelForCausalLM.from_pretrained(out / "llm")
    peft_model = PeftModel.from_pretrained(base, out / "llm" / "adapter").eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = model.llm(input_ids=ids).logits
        got = peft_model(input_ids=ids).logits
    torch.testing.assert_close(got, expected)


def test_model_card_holds_the_runs_stages_and_metrics(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _, ckpt = trained_student("text_llm", run / "dpo" / "checkpoints")
    (run / "sft" / "checkpoints").mkdir(parents=True)
    (run / "sft" / "checkpoints" / "last.ckpt").write_bytes(b"")
    metrics = {"system": {"name": "student_dpo", "role": "student", "stage": "dpo"}, "num_examples": 8,
               "results": {"all": {"rouge_l": {"mean": 0.4321, "low": 0.4, "high": 0.46, "n": 8}}}}
    (run / "evaluate" / "student_dpo").mkdir(parents=True)
    (run / "evaluate" / "student_dpo" / "metrics.json").write_text(json.dumps(metrics))
    (run / "report.md").write_text("| system | score |\n|---|---|\n| dpo | 6.1 |\n")
    main([str(ckpt), "--out", str(tmp_path / "export"), "--merge-lora"])
    main([str(ckpt), "--out", str(tmp_path / "export"), "--merge-lora"])  # an earlier export is replaced
    card = (tmp_path / "export" / "README.md").read_text()
    assert "training stages of this student: sft → dpo" in card
    assert "| student_dpo | student | dpo | 8 | 0.432 [0.400, 0.460] |" in card
    assert "| dpo | 6.1 |" in card


def test_bad_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="speechsum export: .*bad.ckpt"):
        main([str(bad), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_an_out_folder_holding_other_files_or_a_file_is_refused(tmp_path: Path) -> None:
    """Replacing ``--out`` deleted whatever a user kept there (and a file became a folder)."""
    _, ckpt = trained_student("text_llm", tmp_path / "run")
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(SystemExit, match=f"--out {mine} is a folder that holds other files"):
        main([str(ckpt), "--out", str(mine)])
    assert (mine / "notes.txt").read_text() == "precious"
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SystemExit, match="is a file: give a folder"):
        main([str(ckpt), "--out", str(tmp_path / "file.txt")])
    assert (tmp_path / "file.txt").read_text() == "x"


@pytest.mark.parametrize("name", ["qwen2_audio_tiny", "phi4mm_tiny", "text_llm"])
def test_hf_generate_on_the_export_decodes_speechsums_tokens(name: str, tmp_path: Path) -> None:
    """The exported ``generation_config.json`` carries speechsum's stop tokens, pad id and the
    suppressed audio placeholder: before, HF ``generate`` emitted ``<|AUDIO|>`` where speechsum
    never does and the two greedy outputs parted."""
    torch.manual_seed(2)  # LoRA's init: Qwen2-Audio's HF greedy output then holds <|AUDIO|> unless suppressed
    model, ckpt = trained_student(name, tmp_path / "run")
    out = export_checkpoint(ckpt, tmp_path / "export", merge_lora=True)
    saved = GenerationConfig.from_pretrained(out)
    assert saved.suppress_tokens == [model.audio_token_id]
    assert saved.eos_token_id == model.processor.stop_token_ids
    native = native_reload(name, out)[0] if name != "text_llm" else AutoModelForCausalLM.from_pretrained(out).eval()
    batch = batch_for(model)
    expected = generate_texts(model, batch, GenerationSettings(max_new_tokens=30)).ids
    with torch.no_grad():
        got = native.generate(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, **batch.audio,
                              max_new_tokens=30, do_sample=False)[:, batch.prompt_ids.shape[1]:]
    assert torch.equal(got, expected)


def test_a_checkpoint_whose_base_folder_moved_is_a_clear_error(tmp_path: Path) -> None:
    """The model config names its base by path; once that folder moved, export (and summarize,
    serve) printed jsonargparse's "Does not validate against any of the Union subtypes" and a dump
    of the config around HF's "Repo id must be in the form 'repo_name'"."""
    base = tmp_path / "base"
    student = instantiate_speech_llm(model_config("qwen2_audio_tiny"))
    student.hf.save_pretrained(base)
    student.processor.processor.save_pretrained(base)
    config = model_config("qwen2_audio_tiny")
    config["init_args"]["model"] = str(base)
    model = instantiate_speech_llm(config)
    ckpt = tmp_path / "last.ckpt"
    trainable = dict(model.trainable_parameters())
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items() if k in trainable},
                "hyper_parameters": {"model": config}}, ckpt)
    main([str(ckpt), "--out", str(tmp_path / "export")])  # loads while the base is in place
    assert f"- base: model: `{base}`\n" in (tmp_path / "export" / "README.md").read_text()
    base.rename(tmp_path / "moved")
    with pytest.raises(SystemExit) as raised:
        main([str(ckpt), "--out", str(tmp_path / "export2")])
    assert str(raised.value).startswith(
        f"speechsum export: {ckpt}: the model config names folders that do not exist: model={base} (moved or "
        "deleted since training?); put them back, or pass --config with a stage config naming their new place (")
    assert not (tmp_path / "export2").exists()


def test_model_card_names_the_students_base_data_and_stages_up_to_its_own(tmp_path: Path) -> None:
    """Exporting an SFT checkpoint of a run that went on to KD and DPO, the card said "training
    stages of the run: align → sft → kd → dpo", named no base model and no training data."""
    run = tmp_path / "run"
    _, ckpt = trained_student("text_llm", run / "sft" / "checkpoints")
    for stage in ("align", "kd", "dpo"):
        (run / stage / "checkpoints").mkdir(parents=True)
        (run / stage / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / "sft" / "config.yaml").write_text("data:\n  train_manifest: runs/x/data/train.jsonl\n")
    main([str(ckpt), "--out", str(tmp_path / "export")])
    card = (tmp_path / "export" / "README.md").read_text()
    assert "- training stages of this student: align → sft\n" in card
    assert "- training data of this stage: train_manifest: `runs/x/data/train.jsonl`\n" in card
    assert "- base: random-init (a config dict, no pretrained weights)\n" in card


@pytest.mark.parametrize("name", ["qwen2_audio_tiny", "phi4mm_tiny"])
def test_a_bfloat16_student_round_trips_with_its_fp32_projector(name: str, tmp_path: Path) -> None:
    """Loaded in bf16, the student trains its projector in fp32; the export's ``from_pretrained``
    loaded ``model.safetensors`` in bf16 and rounded it (log-probs ~4e-3 off with the adapter kept).
    The trained parts are now also saved on their own: the adapter export is exact again."""
    base = tmp_path / "base"
    plain_config = model_config(name)
    plain_config["init_args"]["policy"] = {"llm": "frozen"}  # no LoRA: the base folder's names are HF's
    plain = instantiate_speech_llm(plain_config)
    plain.hf.to(torch.bfloat16).save_pretrained(base)
    if name == "qwen2_audio_tiny":
        plain.processor.processor.save_pretrained(base)
    else:
        save_phi4_processor(plain, base)
    config = model_config(name)
    config["init_args"].update(model=str(base), dtype="bfloat16")
    model = instantiate_speech_llm(config).eval()
    trainable = dict(model.trainable_parameters())
    with torch.no_grad():
        for parameter in trainable.values():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)))
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items() if k in trainable},
                "hyper_parameters": {"model": config}}, ckpt)
    batch = batch_for(model)
    expected_logprobs, expected_ids = logprobs_and_greedy(model, batch)
    logprobs, ids = logprobs_and_greedy(load_exported(export_checkpoint(ckpt, tmp_path / "export")), batch)
    torch.testing.assert_close(logprobs, expected_logprobs, atol=0.0, rtol=0.0)
    assert torch.equal(ids, expected_ids)


def test_an_exported_folder_or_a_folder_given_as_the_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    """Before: "speechsum export: [Errno 21] Is a directory: 'DIR'"."""
    _, ckpt = trained_student("text_llm", tmp_path / "run")
    exported = export_checkpoint(ckpt, tmp_path / "export")
    with pytest.raises(SystemExit) as raised:
        main([str(exported), "--out", str(tmp_path / "again")])
    assert str(raised.value) == (
        f"speechsum export: {exported} is an exported folder already (it loads as it is: summarize/serve --model "
        "DIR); export takes a stage checkpoint file, e.g. RUN/sft/checkpoints/last.ckpt")
    with pytest.raises(SystemExit) as raised:
        main([str(tmp_path / "run"), "--out", str(tmp_path / "again")])
    assert str(raised.value) == (f"speechsum export: {tmp_path / 'run'} is a folder; export takes a stage checkpoint "
                                 f"file (it holds stage checkpoints, newest first: {ckpt}): give one")
    assert not (tmp_path / "again").exists()


def test_a_missing_checkpoint_or_config_is_named_by_its_argument(tmp_path):
    """Both were '[Errno 2] No such file or directory: ...', naming no argument."""
    from speechsum.serving.export import main

    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "out")])
    assert info.value.code == f"speechsum export: CKPT {tmp_path / 'none.ckpt'}: no such file"
    (tmp_path / "last.ckpt").write_bytes(b"x")
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "last.ckpt"), "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out")])
    assert info.value.code == f"speechsum export: --config {tmp_path / 'c.yaml'}: no such file"
    assert not (tmp_path / "out").exists()


def test_an_exported_file_cut_short_is_named(tmp_path: Path) -> None:
    """A copy of an export cut short: json's or safetensors' error named no file (a truncated
    adapter_config.json or encoder/config.json even loaded)."""
    import shutil

    from speechsum.models.checkpoint import CheckpointError

    _, ckpt = trained_student("composed_tiny", tmp_path / "run")
    out = export_checkpoint(ckpt, tmp_path / "export")
    for name in (EXPORT_FILE, "projector.safetensors", "llm/adapter/adapter_config.json",
                 "llm/adapter/adapter_model.safetensors", "encoder/config.json"):
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(out, copy)
        data = (copy / name).read_bytes()
        (copy / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="cut short or corrupted") as info:
            load_exported(copy)
        assert str(info.value).startswith(f"{copy / name}: "), name


def test_merge_lora_on_a_model_without_lora_says_so_and_the_card_claims_no_merge(tmp_path: Path, caplog) -> None:
    """Before: accepted silently, and the model card said "LoRA: merged into the weights"."""
    config = model_config("composed_tiny")
    config["init_args"]["policy"]["llm"] = "frozen"  # no LoRA adapters: the projector alone is trained
    model = instantiate_speech_llm(config)
    state = {f"model.{key}": value for key, value in model.state_dict().items()
             if key in dict(model.trainable_parameters())}
    ckpt = tmp_path / "align.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"model": config}}, ckpt)
    with caplog.at_level("WARNING", logger="speechsum.serving.export"):
        main([str(ckpt), "--out", str(tmp_path / "export"), "--merge-lora"])
    assert caplog.messages == [f"speechsum export: {ckpt} has no LoRA adapters: --merge-lora has nothing to merge "
                               "(the weights are exported as they are)"]
    card = (tmp_path / "export" / "README.md").read_text()
    assert "- LoRA: kept as a PEFT adapter (adapter/) where the model has one" in card
    assert "merged" not in card
    assert json.loads((tmp_path / "export" / EXPORT_FILE).read_text())["lora_merged"] is False
