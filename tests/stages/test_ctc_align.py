"""CTC projector, CTC compression and the alignment stage (tiny random-init models, toy data)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from speechsum.cli import lightning_cli
from speechsum.data.batch import SpeechCollator
from speechsum.data.transcripts import spoken_text
from speechsum.losses import ctc_alignment_loss
from speechsum.models.base import sequence_positions
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.policy import TrainingPolicy
from speechsum.models.projectors import CTCProjector, ctc_collapse, ctc_keep_mask
from tests.conftest import tiny_backbone_args
from tests.helpers import run_config
from tests.models.test_composed import examples


def test_ctc_loss_matches_hand_computed_paths():
    probs = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]])  # 2 frames, classes {0, 1, blank=2}
    logits = probs.log()[None]
    # target [0]: paths (0,0), (0,b), (b,0)
    loss, infeasible = ctc_alignment_loss(logits, torch.tensor([2]), [[0]], blank=2)
    p = 0.5 * 0.1 + 0.5 * 0.3 + 0.3 * 0.1
    assert loss.item() == pytest.approx(-math.log(p), rel=1e-5) and infeasible.item() == 0
    # target [0, 1]: the one path (0, 1); per-token mean over 2 tokens
    loss, _ = ctc_alignment_loss(logits, torch.tensor([2]), [[0, 1]], blank=2)
    assert loss.item() == pytest.approx(-math.log(0.5 * 0.6) / 2, rel=1e-5)


def test_ctc_loss_counts_infeasible_rows_and_skips_them():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    # row 0: [1, 1] needs 3 frames (a blank between repeats) but has 2; row 1 is feasible
    loss, infeasible = ctc_alignment_loss(logits, torch.tensor([2, 3]), [[1, 1], [2]], blank=3)
    alone, _ = ctc_alignment_loss(logits[1:], torch.tensor([3]), [[2]], blank=3)
    assert infeasible.item() == 1 and loss.item() == pytest.approx(alone.item())
    none, infeasible = ctc_alignment_loss(logits[:1], torch.tensor([2]), [[1, 1]], blank=3)
    none.backward()
    assert none.item() == 0.0 and infeasible.item() == 1


def test_ctc_loss_of_all_feasible_rows_equals_the_row_selected_one_bit_for_bit():
    """Every row feasible: the logits are used as they are (no index copy), with the same loss and
    gradient as through the selection of all rows, to the last bit."""
    logits = torch.randn(3, 6, 5, requires_grad=True)
    counts, targets = torch.tensor([6, 4, 5]), [[1, 2], [3], [0, 0, 2]]
    loss, infeasible = ctc_alignment_loss(logits, counts, targets, blank=4)
    (gradient,) = torch.autograd.grad(loss, logits)
    selected = logits[torch.arange(3)]
    log_probs = selected.log_softmax(-1).transpose(0, 1)
    flat = torch.tensor([token for target in targets for token in target])
    lengths = torch.tensor([len(t) for t in targets])
    reference = torch.nn.functional.ctc_loss(log_probs, flat, counts, lengths, blank=4, reduction="sum") / lengths.sum()
    (reference_gradient,) = torch.autograd.grad(reference, logits)
    assert infeasible.item() == 0 and torch.equal(loss, reference) and torch.equal(gradient, reference_gradient)


def test_keep_mask_and_collapse():
    blank = 9
    labels = torch.tensor([[blank, 3, 3, blank, 3, 4, 4, blank]])
    assert ctc_keep_mask(labels, blank).tolist() == [[False, True, False, False, True, True, False, False]]
    assert ctc_collapse(labels[0], 8, blank) == [3, 3, 4]
    assert ctc_collapse(labels[0], 3, blank) == [3]


def test_projector_embeds_confident_frames_as_token_embeddings():
    projector = CTCProjector(encoder_dim=3, llm_dim=4, vocab_size=5, stack=2)
    table = torch.randn(5, 4)
    with torch.no_grad():
        projector.blank_embedding.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    logits = torch.full((1, 2, 6), -1e4)
    logits[0, 0, 2] = 0.0  # certain: token 2
    logits[0, 1, 5] = 0.0  # certain: blank
    embeds = projector.embed(logits, table)
    torch.testing.assert_close(embeds[0, 0], table[2])
    torch.testing.assert_close(embeds[0, 1], projector.blank_embedding.detach())
    assert projector.logits(torch.randn(2, 5, 3)).shape == (2, 3, 6)


def test_spoken_text_strips_speaker_labels():
    transcript = "Kofi Ali: Hi, this is Kofi.\nEthan Soto:  Right now the price is 310.\n"
    assert spoken_text(transcript, True) == "Hi, this is Kofi. Right now the price is 310."
    assert spoken_text(transcript, False) == "Kofi Ali: Hi, this is Kofi. Ethan Soto:  Right now the price is 310."
    # times and ratios are speech, not labels
    assert spoken_text("At 10:30 we met.\nThe ratio is 3:1, said Kofi.", True) == "At 10:30 we met. The ratio is 3:1, said Kofi."


def ctc_model(compress: bool = True) -> ComposedSpeechLLM:
    args = tiny_backbone_args()
    args["policy"] = TrainingPolicy(**{**args["policy"], "lora_dropout": 0.0})
    return ComposedSpeechLLM(**args, projector="ctc", ctc_compress=compress).eval()


def blank_half_of_the_frames(model: ComposedSpeechLLM, batch) -> None:
    """Raise the blank logit by the median margin of the best token over it, so that about half
    of the frames are blank and compression has work to do."""
    with torch.no_grad():
        logits, _ = model.ctc_logits(batch.audio)
        blank = model.projector.blank
        margin = logits[..., :blank].max(-1).values - logits[..., blank]
        model.projector.head[1].bias[blank] += margin.flatten().median()


def test_compression_equals_feeding_only_the_kept_audio_tokens():
    """Masked-out audio positions change nothing: the response logits equal those of the LLM fed
    the prompt with only the kept audio embeddings (positions renumbered without gaps)."""
    model = ctc_model()
    batch = SpeechCollator(model.processor)(examples())
    blank_half_of_the_frames(model, batch)
    input_ids = torch.cat([batch.prompt_ids, batch.response_ids], 1)
    mask = torch.cat([batch.prompt_mask, batch.response_mask], 1)
    with torch.no_grad():
        logits = model(batch.audio, input_ids, mask, sequence_positions(mask))
        embeds, kept_mask = model.embed_prompt(batch.audio, input_ids, mask)
    dropped = int((mask - kept_mask).sum())
    assert 0 < dropped < int((input_ids == model.audio_token_id).sum())
    for row in range(len(batch)):
        keep = kept_mask[row].bool()
        with torch.no_grad():
            alone = model.llm(inputs_embeds=embeds[row][keep][None], use_cache=False).logits[0]
        torch.testing.assert_close(logits[row][keep], alone, rtol=1e-4, atol=1e-4)


def test_generate_agrees_with_forward_under_compression():
    model = ctc_model()
    batch = SpeechCollator(model.processor)(examples())
    blank_half_of_the_frames(model, batch)
    response_ids, response_mask = model.generate(batch, max_new_tokens=6)
    logits = model.response_logits(batch, response_ids, response_mask)
    greedy = logits.argmax(-1)
    assert torch.equal(greedy[response_mask.bool()], response_ids[response_mask.bool()])


def test_mlp_model_has_no_ctc_logits(tiny_composed):
    batch = SpeechCollator(tiny_composed.processor)(examples())
    with pytest.raises(ValueError, match="projector: ctc"):
        tiny_composed.ctc_logits(batch.audio)
    with pytest.raises(ValueError, match="'mlp' or 'ctc'"):
        ComposedSpeechLLM(**{**tiny_backbone_args(), "projector": "linear"})


def align_config(tmp_path, toy_data, **trainer):
    path = run_config(tmp_path, toy_data, **trainer)
    config = yaml.safe_load(path.read_text())
    model = config["model"]["init_args"]["model"]["init_args"]
    model["projector"] = "ctc"
    model["stack"] = 1  # 20 ms audio tokens: the toy clips are short for their byte-level transcripts
    model["policy"]["llm"] = "frozen"
    config["model"]["class_path"] = "speechsum.stages.align.CTCAlignModule"
    config["model"]["init_args"].update({"learning_rate": 0.01, "warmup_steps": 1, "min_lr_ratio": 1.0})
    config["model"]["init_args"].pop("generation")
    config["data"]["require_transcript"] = True
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def metric_rows(run_dir):
    import csv

    [metrics] = run_dir.glob("logs/version_*/metrics.csv")
    return list(csv.DictReader(metrics.open()))


def test_align_stage_lowers_ctc_loss_and_sft_starts_from_it(tmp_path, toy_data):
    config = align_config(tmp_path / "align", toy_data, max_steps=30, max_epochs=100, val_check_interval=15,
                          check_val_every_n_epoch=None, log_every_n_steps=5)
    cli = lightning_cli(["fit", "--config", str(config)])
    assert all(not p.requires_grad for p in cli.model.model.llm.parameters())
    rows = metric_rows(tmp_path / "align" / "run")
    val = [float(r["val/ctc_loss"]) for r in rows if r.get("val/ctc_loss")]
    error = [float(r["val/token_error_rate"]) for r in rows if r.get("val/token_error_rate")]
    assert len(val) == 2 and val[1] < val[0] and len(error) == 2
    [samples] = (tmp_path / "align" / "run").glob("logs/version_*/samples/step0000030.jsonl")
    transcripts = {json.loads(line)["id"]: json.loads(line)["transcript"] for line in toy_data["val"].open()}
    for sample in map(json.loads, samples.open()):  # references are the decoded transcript tokens
        assert sample["reference"] == transcripts[sample["id"]]
    aligned = torch.load(tmp_path / "align" / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert aligned and all(k.startswith("model.projector.") for k in aligned)

    sft = run_config(tmp_path / "sft", toy_data, max_steps=1, limit_val_batches=0)
    sft_config = yaml.safe_load(sft.read_text())
    sft_config["model"]["init_args"]["model"]["init_args"].update({"projector": "ctc", "stack": 1})
    sft_config["model"]["init_args"]["init_from"] = str(tmp_path / "align" / "run" / "checkpoints" / "last.ckpt")
    sft.write_text(yaml.safe_dump(sft_config))
    cli = lightning_cli(["--config", str(sft)], run=False)  # the model as built, before any training
    for key, value in aligned.items():
        torch.testing.assert_close(cli.model.state_dict()[key], value, msg=key)
