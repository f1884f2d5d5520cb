"""A local KD teacher given a transcript past its context: an error naming the example and the counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechsum.data.batch import SpeechBatch
from speechsum.stages.kd.teachers import HFTeacher
from tests.stages.test_teachers import TEACHER_LLM

GPT2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 256}  # learned positions


def _batch(processor, transcript: str) -> SpeechBatch:
    prompts = processor.encode_prompts([np.zeros(8_000, np.float32)], ["Summarize."])
    return SpeechBatch(ids=["call-7"], audio=prompts.audio, audio_seconds=torch.tensor([0.5]),
                       prompt_ids=prompts.prompt_ids, prompt_mask=prompts.prompt_mask, instructions=["Summarize."],
                       transcripts=[transcript], references=[None])


@pytest.mark.parametrize(("llm", "context"), [(TEACHER_LLM, 1024), (GPT2, 256)])
def test_a_transcript_past_the_teachers_context_names_the_example_and_the_counts(tiny_composed, llm, context):
    """Before: a RoPE teacher (Llama) scored the completion from positions it never trained on, without a word;
    one of learned positions (GPT-2) raised 'IndexError: index out of range in self'."""
    processor = tiny_composed.processor
    teacher = HFTeacher(llm)
    teacher.attach(processor.tokenizer, "<|im_end|>")
    batch = _batch(processor, "word " * 400)  # byte tokens: 2000 of transcript, 42 of instruction and template
    ids, mask = processor.encode_responses(["a short summary"])  # 15 tokens + end of turn
    with pytest.raises(ValueError) as info:
        teacher.score(batch, ids, mask)
    assert str(info.value) == (
        "example 'call-7': the KD teacher's prompt (the instruction and transcript, with its chat template) takes 2042 "
        f"positions and the student's completion 16, 2058 in all, more than the teacher's context of {context} "
        "(max_position_embeddings): shorten that transcript, lower model.init_args.max_new_tokens or use a teacher "
        "with a longer context")
    with pytest.raises(ValueError) as info:
        teacher.write_summaries(batch, 8)  # before: "generate(): the prompt of example 0 takes …", no id
    assert str(info.value) == (
        "example 'call-7': the KD teacher's prompt (the instruction and transcript, with its chat template) takes 2042 "
        f"positions, more than the teacher's context of {context} (max_position_embeddings): shorten that transcript "
        "or use a teacher with a longer context")
    assert teacher.score(_batch(processor, "word " * 10), ids, mask).logits.shape == (1, 16, len(processor.tokenizer))
