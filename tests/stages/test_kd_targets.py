"""Sequence-level KD: a teacher's summary that takes the student past its LM's context is no target."""

from __future__ import annotations

import logging

from speechsum.stages.kd.module import OnPolicyKDModule
from speechsum.stages.kd.teachers import HFTeacher
from tests.stages.test_kd import TEACHER_LLM, one_batch


class VerboseTeacher(HFTeacher):
    """Writes 2500 byte tokens for the first example (its max_tokens count another tokenizer's tokens)."""

    def write_summaries(self, batch, max_new_tokens):
        return ["word " * 500, *["A short summary."] * (len(batch) - 1)]


def test_a_teacher_summary_past_the_students_context_carries_no_loss_and_is_warned(tiny_composed, toy_data, caplog):
    """Before: the student trained on it from positions 2048 and beyond, which its LM never saw, without a word."""
    module = OnPolicyKDModule(tiny_composed, VerboseTeacher(TEACHER_LLM), max_new_tokens=6, seq_kd=True, lmbda=0.0)
    batch = one_batch(module, toy_data)
    with caplog.at_level(logging.WARNING, logger="speechsum.stages.kd.module"):
        rollout = module.make_rollout(batch, "train")
    short = len(module.processor.tokenizer("A short summary.", add_special_tokens=False).input_ids) + 1
    assert rollout.completion_mask[0].sum() == 0 and rollout.completion_mask.shape[1] == short
    assert (rollout.completion_mask[1:].sum(1) == short).all()
    prompt = int(batch.prompt_mask[0].sum())
    assert caplog.messages == [
        f"the teacher's summary of 1 of {len(batch)} examples ({batch.ids[0]}) takes the student past its LM's context "
        f"of 2048 positions ({batch.ids[0]}: {prompt} of prompt and 2501 of summary): they carry no loss in this step; "
        "lower model.init_args.max_new_tokens (the teacher's max_tokens) or shorten the clips"]


class ChatMLTeacher(HFTeacher):
    """A teacher whose server kept special tokens in its text."""

    def write_summaries(self, batch, max_new_tokens):
        return ["Done.<|im_end|>", "Heard <|audio|> twice.", *["A short summary."] * (len(batch) - 2)]


def test_a_teacher_summary_holding_a_special_token_carries_no_loss_and_is_warned(tiny_composed, toy_data, caplog):
    """Before: <|im_end|> taught the student to end its answer there; <|audio|> stopped the training step with
    'N audio placeholders but M audio frames'."""
    module = OnPolicyKDModule(tiny_composed, ChatMLTeacher(TEACHER_LLM), max_new_tokens=6, seq_kd=True, lmbda=0.0)
    batch = one_batch(module, toy_data)
    with caplog.at_level(logging.WARNING, logger="speechsum.stages.kd.module"):
        rollout = module.make_rollout(batch, "train")
    assert rollout.completion_mask[:2].sum() == 0 and (rollout.completion_mask[2:].sum(1) > 0).all()
    assert module.processor.audio_token_id not in rollout.completion_ids.tolist()[1]
    assert caplog.messages == [
        f"the teacher's summary of 2 of {len(batch)} examples ({batch.ids[0]}, {batch.ids[1]}) holds a special token of "
        f"the student's tokenizer ({batch.ids[0]} holds '<|im_end|>' (at character 5)): they carry no loss in this "
        "step; check the teacher's replies (a server that keeps special tokens in its text?)"]
