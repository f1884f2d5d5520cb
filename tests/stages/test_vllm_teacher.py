"""The remote KD teacher against a server answering exactly as vLLM does (tests/vllm_server.py):
the teacher's scores are the scripted ones, and vLLM's refusals become errors naming the setting."""

from __future__ import annotations

import pytest
import torch

from speechsum.data.batch import SpeechBatch
from speechsum.models.text_llm import TextProcessor
from speechsum.models.tokenizer import build_byte_tokenizer
from speechsum.stages.kd.teachers import OpenAICompatibleTeacher
from tests.vllm_server import CLAMP, VLLMServer, scripted_distribution

K = 5
INSTRUCTIONS = ["List the words you heard.", "Say the first word."]
TRANSCRIPTS = ["do re mi fa", "sol la"]
COMPLETIONS = ["do re mi fa sol", "sol"]


def tokenizer():
    return build_byte_tokenizer(extra_special_tokens=("<|audio|>",))


def batch_and_completion():
    processor = TextProcessor(tokenizer(), end_of_turn="<|im_end|>")
    none = torch.zeros((2, 1), dtype=torch.long)
    batch = SpeechBatch(ids=["a", "b"], audio={}, audio_seconds=torch.zeros(2), prompt_ids=none, prompt_mask=none,
                        instructions=INSTRUCTIONS, transcripts=TRANSCRIPTS, references=COMPLETIONS)
    ids, mask = processor.encode_responses(COMPLETIONS)
    return batch, ids, mask, [processor.prompt_ids(i, t) for i, t in zip(INSTRUCTIONS, TRANSCRIPTS)]


def teacher(url: str, scoring: str, top_k: int = K) -> OpenAICompatibleTeacher:
    remote = OpenAICompatibleTeacher("teacher", base_url=url, top_k=top_k, scoring=scoring, attempts=1)
    remote.attach(tokenizer(), "<|im_end|>")
    return remote


@pytest.mark.parametrize("scoring", ["echo", "prompt_logprobs"])
def test_teacher_scores_equal_what_the_vllm_server_was_scripted_with(scoring):
    batch, ids, mask, prompts = batch_and_completion()
    distribution = scripted_distribution(len(tokenizer()), K)
    with VLLMServer(distribution) as server:
        scores = teacher(server.url, scoring).score(batch, ids, mask)
    sent = [prompt + [t for t, m in zip(row, row_mask) if m] for prompt, row, row_mask in
            zip(prompts, ids.tolist(), mask.tolist())]
    assert sorted(body["prompt"] for body in server.bodies) == sorted(sent)  # one request per example
    for body in server.bodies:
        assert body["max_tokens"] == 0 and body["echo"] is True and body["return_tokens_as_token_ids"] is True
        assert ("logprobs" in body) == (scoring == "echo")
    seen = {"tie at the k-th": 0, "scored token outside the top-k": 0, "-9999.0 in the top-k": 0}
    for row, (full, prompt) in enumerate(zip(sent, prompts)):
        for j in range(int(mask[row].sum())):
            table = {i: max(v, CLAMP) for i, v in distribution(full[: len(prompt) + j]).items()}
            token = int(ids[row, j])
            best = sorted(table.values(), reverse=True)
            assert float(scores.token_log_probs[row, j]) == pytest.approx(table[token], abs=1e-6)
            got_values, got_ids = scores.topk_log_probs[row, j].tolist(), scores.topk_ids[row, j].tolist()
            assert got_values == pytest.approx(best[:K], abs=1e-6)  # the k best, best first
            assert len(set(got_ids)) == K and all(table[i] == pytest.approx(v, abs=1e-6)
                                                  for i, v in zip(got_ids, got_values))
            seen["tie at the k-th"] += best[K - 1] == best[K]
            seen["scored token outside the top-k"] += table[token] < best[K - 1]
            seen["-9999.0 in the top-k"] += best[K - 1] == CLAMP
    assert all(seen.values()), seen  # the script reached every case vLLM can send
    assert (scores.topk_ids[~mask.bool()] == -1).all()


@pytest.mark.parametrize("scoring, param", [("echo", "logprobs"), ("prompt_logprobs", "prompt_logprobs")])
def test_top_k_above_vllm_max_logprobs_names_the_settings(scoring, param):
    batch, ids, mask, _ = batch_and_completion()
    with VLLMServer(scripted_distribution(len(tokenizer()), K), max_logprobs=20) as server:
        with pytest.raises(ValueError) as error:
            teacher(server.url, scoring, top_k=21).score(batch, ids, mask)
    message = str(error.value)
    assert "greater than max allowed: 20" in message and f"parameter={param}" in message  # vLLM's own words
    assert "top_k" in message and "--max-logprobs 21" in message and server.url in message


@pytest.mark.parametrize("scoring", ["echo", "prompt_logprobs"])
def test_context_length_exceeded_names_the_settings(scoring):
    batch, ids, mask, prompts = batch_and_completion()
    with VLLMServer(scripted_distribution(len(tokenizer()), K), max_model_len=len(prompts[0]) + 2) as server:
        with pytest.raises(ValueError) as error:
            teacher(server.url, scoring).score(batch, ids, mask)
    message = str(error.value)
    assert "context length is only" in message  # vLLM's own words
    assert "--max-model-len" in message and "max_new_tokens" in message
    assert any(f"({len(p)} tokens" in message for p in prompts)  # the prompt that did not fit
