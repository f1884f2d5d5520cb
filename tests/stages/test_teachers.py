"""KD teachers: prompt/completion alignment, vocabulary check, the remote teacher over real HTTP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from speechsum.data.batch import SpeechBatch
from speechsum.models.text_llm import TextLLM
from speechsum.models.text_prompt import text_messages
from speechsum.models.tokenizer import build_byte_tokenizer
from speechsum.stages.kd.teacher_base import check_vocab
from speechsum.stages.kd.teachers import HFTeacher, OpenAICompatibleTeacher

TEACHER_LLM = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "initializer_range": 0.2,  # peaked, context-dependent distributions
}
INSTRUCTIONS = ["List the words you heard.", "Say the first word."]
TRANSCRIPTS = ["do re mi fa", "sol la"]
COMPLETIONS = ["do re mi fa", "sol"]


def student_tokenizer():
    return build_byte_tokenizer(extra_special_tokens=("<|audio|>",))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "tiny-teacher"
    TextLLM(llm=TEACHER_LLM, end_of_turn="<|im_end|>", init_seed=3).save_pretrained(out)
    return out


@pytest.fixture
def batch_and_completion(tiny_composed):
    """A student batch (audio prompt, no transcript in it) and right-padded completion ids."""
    processor = tiny_composed.processor
    waveforms = [np.random.default_rng(i).standard_normal(8000).astype(np.float32) * 0.1 for i in range(2)]
    prompts = processor.encode_prompts(waveforms, INSTRUCTIONS)
    batch = SpeechBatch(
        ids=["a", "b"], audio=prompts.audio, audio_seconds=torch.tensor([0.5, 0.5]),
        prompt_ids=prompts.prompt_ids, prompt_mask=prompts.prompt_mask, instructions=INSTRUCTIONS,
        transcripts=TRANSCRIPTS, references=COMPLETIONS,
    )
    ids, mask = processor.encode_responses(COMPLETIONS)
    return batch, ids, mask


def manual_completion_log_probs(teacher_dir, instruction, transcript, completion_ids):
    """log-softmax of the teacher at each completion position, from one unpadded forward."""
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    text = tokenizer.apply_chat_template(text_messages(instruction, transcript), add_generation_prompt=True, tokenize=False)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion_ids])).logits[0]
    return prompt, logits[len(prompt) - 1 : -1].log_softmax(-1)


def test_vocabulary_check_compares_the_vocabularies_not_their_size():
    check_vocab(student_tokenizer(), student_tokenizer())
    other = build_byte_tokenizer(extra_special_tokens=("<|image|>",))  # same size, another token
    assert len(other) == len(student_tokenizer())
    with pytest.raises(ValueError, match=r"<\|audio\|>.*only in the student|only in the student.*<\|audio\|>"):
        check_vocab(student_tokenizer(), other)
    with pytest.raises(ValueError, match="same vocabulary size|one\nvocabulary|one vocabulary"):
        check_vocab(student_tokenizer(), build_byte_tokenizer())


def test_hf_teacher_rejects_a_teacher_with_another_vocabulary(tmp_path):
    teacher = HFTeacher(TEACHER_LLM)
    swapped = build_byte_tokenizer(extra_special_tokens=("<|audio|>", "<|extra|>"))
    with pytest.raises(ValueError, match="<\\|extra\\|>"):
        teacher.attach(swapped, "<|im_end|>")


def test_hf_teacher_scores_line_up_token_for_token(teacher_dir, batch_and_completion):
    batch, ids, mask = batch_and_completion
    teacher = HFTeacher(str(teacher_dir))
    teacher.attach(student_tokenizer(), "<|im_end|>")
    scores = teacher.score(batch, ids, mask)
    assert scores.logits.shape[:2] == ids.shape
    for row in range(2):
        completion = ids[row][mask[row].bool()].tolist()
        prompt, expected = manual_completion_log_probs(teacher_dir, INSTRUCTIONS[row], TRANSCRIPTS[row], completion)
        # the teacher reads the transcript; the student's prompt holds audio placeholders instead
        student_prompt = batch.prompt_ids[row][batch.prompt_mask[row].bool()].tolist()
        assert prompt != student_prompt and TRANSCRIPTS[row] in AutoTokenizer.from_pretrained(teacher_dir).decode(prompt)
        got = scores.logits[row, : len(completion)].float().log_softmax(-1)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        token_lps = scores.sampled_log_probs(ids)[row, : len(completion)]
        torch.testing.assert_close(token_lps, expected.gather(-1, torch.tensor(completion)[:, None])[:, 0])


def test_missing_transcript_is_a_clear_error(teacher_dir, batch_and_completion):
    batch, ids, mask = batch_and_completion
    batch.transcripts = ["do re", None]
    teacher = HFTeacher(str(teacher_dir))
    with pytest.raises(ValueError, match=r"\['b'\].*transcript"):
        teacher.score(batch, ids, mask)


@pytest.mark.parametrize("scoring", ["echo", "prompt_logprobs"])
def test_remote_teacher_over_http_equals_the_local_teacher(teacher_dir, batch_and_completion, scoring):
    from speechsum.serving.cli import HFBackend
    from tests.servers import serve_in_thread

    batch, ids, mask = batch_and_completion
    local = HFTeacher(str(teacher_dir))
    local.attach(student_tokenizer(), "<|im_end|>")
    full = local.score(batch, ids, mask).logits.float().log_softmax(-1)
    backend = HFBackend(teacher_dir)
    with serve_in_thread(backend) as url:
        remote = OpenAICompatibleTeacher(backend.model_name, base_url=url, tokenizer=str(teacher_dir), top_k=5, scoring=scoring)
        remote.attach(student_tokenizer(), "<|im_end|>")
        scores = remote.score(batch, ids, mask)
    kept = mask.bool()
    torch.testing.assert_close(scores.token_log_probs[kept], full.gather(-1, ids[..., None])[..., 0][kept], rtol=1e-4, atol=1e-4)
    top = full.topk(5, -1)
    assert torch.equal(scores.topk_ids[kept], top.indices[kept])
    torch.testing.assert_close(scores.topk_log_probs[kept], top.values[kept], rtol=1e-4, atol=1e-4)
    assert (scores.topk_ids[~kept] == -1).all()


def test_sequence_level_teacher_writes_summaries_over_chat(teacher_dir, batch_and_completion, tmp_path):
    from speechsum.serving.cli import HFBackend
    from tests.servers import serve_in_thread

    batch, _, _ = batch_and_completion
    local = HFTeacher(str(teacher_dir))
    local.attach(student_tokenizer(), "<|im_end|>")
    expected = local.write_summaries(batch, max_new_tokens=12)
    backend = HFBackend(teacher_dir)
    with serve_in_thread(backend) as url:
        remote = OpenAICompatibleTeacher(backend.model_name, base_url=url, scoring="none", cache_path=str(tmp_path / "c.jsonl"))
        assert not remote.can_score
        remote.attach(student_tokenizer(), "<|im_end|>")
        written = remote.write_summaries(batch, max_new_tokens=12)
    assert written == expected and all(isinstance(s, str) for s in written)
    # a second call is answered from the cache, with no server running
    assert remote.write_summaries(batch, max_new_tokens=12) == written


def _scoring_reply(prompt: list[int], break_it) -> dict:
    """A well-formed echo + prompt_logprobs reply for ``prompt`` (top-2: the token and id 1), then ``break_it``."""
    logprobs = {"tokens": [f"token_id:{t}" for t in prompt], "token_logprobs": [None] + [-1.0] * (len(prompt) - 1),
                "top_logprobs": [None] + [{f"token_id:{t}": -1.0, "token_id:1": -2.0} for t in prompt[1:]]}
    choice = {"index": 0, "text": "", "logprobs": logprobs, "finish_reason": "length",
              "prompt_logprobs": [None] + [{str(t): {"logprob": -1.0}, "1": {"logprob": -2.0}} for t in prompt[1:]]}
    reply = {"id": "c", "object": "text_completion", "created": 0, "model": "m", "choices": [choice]}
    break_it(reply, choice, logprobs, choice["prompt_logprobs"])
    return reply


BROKEN_REPLIES = {  # (scoring, how the reply is broken, what the error names); the last position is 4
    "nan": ("echo", lambda r, c, lp, pl: lp["token_logprobs"].__setitem__(-1, float("nan")),
            "logprobs.token_logprobs[4] is nan"),
    "positive": ("echo", lambda r, c, lp, pl: lp["token_logprobs"].__setitem__(-1, 5.0),
                 "logprobs.token_logprobs[4] is 5.0"),
    "null log-prob": ("echo", lambda r, c, lp, pl: lp["token_logprobs"].__setitem__(-1, None),
                      "logprobs.token_logprobs[4] is None"),
    "short": ("echo", lambda r, c, lp, pl: lp["token_logprobs"].pop(), "logprobs.token_logprobs has 4 entries"),
    "null top": ("echo", lambda r, c, lp, pl: lp["top_logprobs"].__setitem__(-1, None),
                 "logprobs.top_logprobs[4] is null"),
    "list top": ("echo", lambda r, c, lp, pl: lp["top_logprobs"].__setitem__(-1, [["token_id:1", -1.0]]),
                 "logprobs.top_logprobs[4] is an array"),
    "nan top": ("echo", lambda r, c, lp, pl: lp["top_logprobs"].__setitem__(-1, {"token_id:9": float("nan")}),
                "logprobs.top_logprobs[4]['token_id:9'] is nan"),
    # logits (each <= 0), not log-probs: read before as a teacher with more than all the mass
    "top mass over 1": ("echo", lambda r, c, lp, pl: lp["top_logprobs"].__setitem__(-1, {"token_id:9": -0.1,
                                                                                      "token_id:1": -0.2}),
                        "logprobs.top_logprobs[4]: the probabilities of its 2 log-probs sum to 1.72, more than 1: they "
                        "are not the log-probabilities of one distribution (logits, or values not normalized: serve "
                        "vLLM with its default --logprobs-mode raw_logprobs)"),
    "pl mass over 1": ("prompt_logprobs", lambda r, c, lp, pl: pl.__setitem__(-1, {"9": {"logprob": -0.1},
                                                                                   "1": {"logprob": -0.2}}),
                       "prompt_logprobs[4]: the probabilities of its 2 log-probs sum to 1.72, more than 1"),
    "bad id": ("echo", lambda r, c, lp, pl: lp["tokens"].__setitem__(-1, "token_id:abc"),
               "logprobs.tokens[4]: token 'token_id:abc' has no integer id"),
    # the echoed ids are those sent, the prompt's too (before, only the completion's: another prompt of the same
    # length read as this one's scores; a BOS put in front read as "echoed token token_id:7 at 3, sent 8")
    "other prompt": ("echo", lambda r, c, lp, pl: lp["tokens"].__setitem__(1, "token_id:42"),
                     "echoed token 42 at 1 (prompt token 1 of 3), sent 6: the server scored other tokens than those "
                     "sent, so its scores are not the teacher's for this text"),
    "other completion": ("echo", lambda r, c, lp, pl: lp["tokens"].__setitem__(-1, "token_id:42"),
                         "echoed token 42 at 4 (completion token 1 of 2), sent 9: the server scored other tokens"),
    "bos in front": ("echo", lambda r, c, lp, pl: [lp[key].insert(0, value) for key, value in (
        ("tokens", "token_id:1"), ("token_logprobs", None), ("top_logprobs", None))],
                     "the server put token_id:1 in front of the 5 tokens sent (a BOS token its tokenizer adds to every "
                     "prompt), so every score would be one position off: serve the teacher with a server that scores "
                     "token-id prompts as sent (vLLM, speechsum serve), or turn off its BOS token (add_bos_token: "
                     "false in the served tokenizer's config)"),
    # tokens written after those sent (a server that does not honour max_tokens=0): before, read as a good reply
    "past the end": ("echo", lambda r, c, lp, pl: [lp[key].append(value) for key, value in (
        ("tokens", "token_id:3"), ("token_logprobs", -0.5), ("top_logprobs", {"token_id:3": -0.5}))],
                     "the reply echoes 6 tokens, 1 more than the 5 sent: the server generated after them (it did not "
                     "honour max_tokens=0 with echo), so its reply is not the scores of the text sent"),
    "scores past the end": ("echo", lambda r, c, lp, pl: lp["token_logprobs"].append(-0.5),
                            "logprobs.token_logprobs has 6 entries, 1 more than the 5 tokens echoed: its scores do not "
                            "line up with the tokens"),
    "pl other prompt": ("prompt_logprobs", lambda r, c, lp, pl: pl.__setitem__(1, {"42": {"logprob": -1.0}}),
                        "prompt_logprobs[1] does not score prompt token 1 of 3 sent (6): the server scored other "
                        "tokens than those sent, so its scores are not the teacher's for this text"),
    "pl bos in front": ("prompt_logprobs", lambda r, c, lp, pl: pl.insert(1, {"5": {"logprob": -1.0}}),
                        "prompt_logprobs has 6 positions, 1 more than the 5 tokens sent: the server put tokens in "
                        "front of them (a BOS token its tokenizer adds to every prompt), so every score would be one "
                        "position off"),
    "logprobs a string": ("echo", lambda r, c, lp, pl: c.__setitem__("logprobs", "oops"), "does not echo the 5"),
    "pl bare float": ("prompt_logprobs", lambda r, c, lp, pl: pl.__setitem__(-1, {"9": -1.0}),
                      "prompt_logprobs[4]['9'] is a number without a 'logprob'"),
    "pl no logprob": ("prompt_logprobs", lambda r, c, lp, pl: pl.__setitem__(-1, {"9": {"rank": 1}}),
                      "prompt_logprobs[4]['9'] is an object without a 'logprob'"),
    "pl nan": ("prompt_logprobs", lambda r, c, lp, pl: pl[-1]["9"].__setitem__("logprob", float("nan")),
               "prompt_logprobs[4]['9'].logprob is nan"),
    "pl list": ("prompt_logprobs", lambda r, c, lp, pl: pl.__setitem__(-1, [1, 2]),
                "no prompt_logprobs for position 4 (token 9): an array"),
    "empty choices": ("echo", lambda r, c, lp, pl: r.__setitem__("choices", []), "an empty choices array"),
    # scores left out (an API that does not score supplied text): the error says which servers do
    "no logprobs": ("echo", lambda r, c, lp, pl: c.__setitem__("logprobs", None),
                    "does not echo the 5 prompt tokens sent; token-level KD needs a server that scores supplied text"),
    "no top_logprobs": ("echo", lambda r, c, lp, pl: lp.__setitem__("top_logprobs", None),
                        "logprobs.top_logprobs is null; the 5 echoed tokens need one each; token-level KD needs"),
    "no prompt_logprobs": ("prompt_logprobs", lambda r, c, lp, pl: c.pop("prompt_logprobs"),
                           "prompt_logprobs is null, not an array; token-level KD needs a server that scores supplied "
                           "text (echo + logprobs, or vLLM's prompt_logprobs): vLLM or speechsum serve; the OpenAI and "
                           "Azure APIs do not (set the teacher's scoring: none, sequence-level KD)"),
}


@pytest.mark.parametrize("name", BROKEN_REPLIES)
def test_remote_teacher_refuses_malformed_or_non_finite_scores(name):
    from tests.servers import JSONServer

    scoring, break_it, what = BROKEN_REPLIES[name]
    with JSONServer(lambda request: _scoring_reply(request["prompt"], break_it)) as server:
        teacher = OpenAICompatibleTeacher("m", base_url=server.url, top_k=2, scoring=scoring, attempts=1)
        with pytest.raises(ValueError) as error:
            teacher._score_one(([5, 6, 7], [8, 9]))
    assert str(error.value).startswith(server.url) and what in str(error.value)
    with JSONServer(lambda request: _scoring_reply(request["prompt"], lambda *parts: None)) as server:
        teacher = OpenAICompatibleTeacher("m", base_url=server.url, top_k=2, scoring=scoring, attempts=1)
        assert teacher._score_one(([5, 6, 7], [8, 9]))[0] == [-1.0, -1.0]  # the unbroken reply reads


@pytest.mark.parametrize("body, what", [
    (b"", "the reply body is not JSON (JSONDecodeError: Expecting value: line 1 column 1 (char 0))"),
    (b'{"choices": "caf\xe9"}', "the reply body is not UTF-8 text (UnicodeDecodeError: 'utf-8' codec can't decode "
                                "byte 0xe9 in position 16: invalid continuation byte)"),
])
def test_a_teacher_reply_that_cannot_be_decoded_is_asked_again_then_ends_fit_with_one_line(body, what):
    """Before: a bare JSONDecodeError (or a UnicodeDecodeError, not even retried) and a traceback naming no endpoint."""
    from speechsum.cli import known_error
    from speechsum.utils.replies import MalformedReply
    from tests.servers import JSONServer

    with JSONServer(lambda request: body) as server:
        teacher = OpenAICompatibleTeacher("m", base_url=server.url, top_k=2, attempts=2)
        with pytest.raises(MalformedReply) as error:
            teacher._score_one(([5, 6, 7], [8, 9]))
    assert server.requests == 2 and str(error.value) == f"{server.url}/: {what}"
    assert known_error("fit", error.value) == (
        f"{server.url}/: {what}; check that base_url is the OpenAI-compatible API's (ending in /v1) and that "
        "nothing in between (a proxy, a login page) answers in its place, then rerun", 1)


@pytest.mark.parametrize("scoring", ["echo", "prompt_logprobs"])
def test_speechsum_serve_refusing_top_k_names_the_settings(teacher_dir, batch_and_completion, scoring):
    """As against vLLM (tests/stages/test_vllm_teacher.py), in speechsum serve's own words."""
    from speechsum.serving.cli import HFBackend
    from tests.servers import serve_in_thread

    batch, ids, mask = batch_and_completion
    backend = HFBackend(teacher_dir)
    with serve_in_thread(backend, max_logprobs=4) as url:
        remote = OpenAICompatibleTeacher(backend.model_name, base_url=url, top_k=5, scoring=scoring, attempts=1)
        remote.attach(student_tokenizer(), "<|im_end|>")
        with pytest.raises(ValueError, match=r"above this server's limit of 4 \(--max-logprobs\).*top_k=5.*--max-logprobs 5"):
            remote.score(batch, ids, mask)


def test_a_teacher_model_name_the_server_does_not_serve_is_named(teacher_dir, batch_and_completion):
    """speechsum serve answers it 404, as vLLM and OpenAI: before, a raw openai.NotFoundError."""
    from speechsum.serving.cli import HFBackend
    from tests.servers import serve_in_thread

    batch, ids, mask = batch_and_completion
    with serve_in_thread(HFBackend(teacher_dir, served_model_name="teacher")) as url:
        remote = OpenAICompatibleTeacher("techer", base_url=url, top_k=2, attempts=1)
        remote.attach(student_tokenizer(), "<|im_end|>")
        with pytest.raises(ValueError) as error:
            remote.score(batch, ids, mask)
    assert str(error.value) == (f"{url}/: the teacher's scoring request was refused (Error code: 404 - The model "
                                "'techer' does not exist; this server serves 'teacher'.): the endpoint does not serve "
                                "this model name: set the teacher's model (model.teacher.init_args.model) to the name "
                                "its /v1/models lists.")
    from speechsum.cli import known_error  # `speechsum fit` ends with this line, not a traceback

    assert known_error("fit", error.value) == (str(error.value), 1)


def test_a_remote_teachers_token_id_beyond_the_students_logits_is_named_not_an_index_crash(tiny_composed,
                                                                                           batch_and_completion):
    """Before: a top-k id the student has no logit for reached the loss's gather: an index error
    traceback on the CPU (a device-side assert on CUDA), naming neither the endpoint nor the cause."""
    from speechsum.stages.kd.module import OnPolicyKDModule
    from speechsum.utils.replies import EndpointError
    from tests.servers import JSONServer

    def wider_vocabulary(reply, choice, logprobs, prompt_logprobs):  # the served model's vocabulary is larger
        for top in logprobs["top_logprobs"][1:]:
            top["token_id:100000"] = -1.5  # in the top 2, the 3 summing below 1

    batch, ids, mask = batch_and_completion
    with JSONServer(lambda request: _scoring_reply(request["prompt"], wider_vocabulary)) as server:
        teacher = OpenAICompatibleTeacher("m", base_url=server.url, top_k=2, attempts=1)
        teacher.attach(student_tokenizer(), "<|im_end|>")
        scores = teacher.score(batch, ids, mask)
    module = OnPolicyKDModule(tiny_composed, teacher, max_new_tokens=6)
    logits = torch.zeros(*ids.shape, tiny_composed.llm.get_input_embeddings().num_embeddings)
    with pytest.raises(EndpointError) as error:
        module.kd_loss(logits, ids, mask, scores)
    assert str(error.value).startswith(f"{server.url}/: the teacher's top-k names token id 100000, beyond the "
                                       f"student's {logits.shape[-1]} logits")


def test_a_server_sending_fewer_alternatives_than_top_k_is_told_once(batch_and_completion, caplog):
    """Before: a server that caps its log-probs (2 where top_k=5 were asked) went unnoticed: the loss
    silently ran on 2 alternatives plus the tail."""
    import logging

    from tests.servers import JSONServer

    batch, ids, mask = batch_and_completion
    with JSONServer(lambda request: _scoring_reply(request["prompt"], lambda *parts: None)) as server:
        teacher = OpenAICompatibleTeacher("m", base_url=server.url, top_k=5, attempts=1)
        teacher.attach(student_tokenizer(), "<|im_end|>")
        with caplog.at_level(logging.WARNING, logger="speechsum.stages.kd.teachers"):
            scores = teacher.score(batch, ids, mask)
            teacher.score(batch, ids, mask)
    assert (scores.topk_ids[mask.bool()][:, 2:] == -1).all()  # the 3 missing slots stay empty
    warnings = [r.getMessage() for r in caplog.records if "alternatives per position" in r.getMessage()]
    assert warnings == [f"{server.url}/ returned at most 2 alternatives per position where top_k=5 were asked: the "
                        "server caps its log-probs; KD runs on those 2 plus the tail (lower top_k to match, or serve "
                        "the teacher with vLLM or speechsum serve --max-logprobs 5)"]


def _chat_reply(content: str | None, finish_reason: str = "stop", **message) -> dict:
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", "content": content, **message}}]}


def test_a_summary_the_teacher_refused_is_not_cached_and_a_cut_one_is_told(batch_and_completion, tmp_path, caplog):
    """Before: a refusal (content null) was cached as the summary "", so every later epoch and rerun trained
    without that example's target; a summary cut at max_new_tokens became a target silently."""
    from tests.servers import JSONServer

    batch, _, _ = batch_and_completion
    replies = iter([_chat_reply(None, refusal="I can't help with that."), _chat_reply("do re", "length")])
    with JSONServer(lambda request: next(replies, _chat_reply("Do re mi fa."))) as server:
        teacher = OpenAICompatibleTeacher("m", base_url=server.url, scoring="none", max_workers=1,
                                          cache_path=str(tmp_path / "c.jsonl"))
        assert teacher.write_summaries(batch, max_new_tokens=4) == ["", "do re"]
        assert teacher.write_summaries(batch, max_new_tokens=4) == ["Do re mi fa.", "do re"]  # asked again; cached
        assert server.requests == 3 and teacher.cut_summaries == 1
    assert (f"{server.url}/ wrote no summary (the model refused: \"I can't help with that.\"); not cached: asked "
            "again next time") in caplog.text
    assert (f"{server.url}/: a summary the teacher wrote was cut at max_new_tokens=4 (finish_reason length)"
            in caplog.text)


def test_a_summary_cut_before_any_text_says_so_not_empty_content(batch_and_completion, caplog):
    """Before: "wrote no summary (empty content)" for a reply cut at max_tokens before any text (a reasoning model
    that spent them thinking), which did not say what to raise."""
    from tests.servers import JSONServer

    batch, _, _ = batch_and_completion
    with JSONServer(lambda request: _chat_reply(None, "length", reasoning_content="Let me think...")) as server:
        teacher = OpenAICompatibleTeacher("m", base_url=server.url, scoring="none", max_workers=1)
        assert teacher.write_summaries(batch, max_new_tokens=4) == ["", ""]
    assert (f"{server.url}/ wrote no summary (cut at max_new_tokens=4 before any text (a reasoning model may spend "
            "them all thinking): raise the KD module's max_new_tokens (model.max_new_tokens)); not cached: asked again "
            "next time") in caplog.text


def test_a_teacher_base_url_that_is_not_the_api_root_is_named_not_taken_for_a_model_name(batch_and_completion):
    """Before: any 404 said "the endpoint does not serve this model name", also a base_url missing its /v1."""
    from tests.servers import JSONServer

    with JSONServer(lambda request: (404, {"detail": "Not Found"})) as server:
        teacher = OpenAICompatibleTeacher("m", base_url=server.url, top_k=2, attempts=1)
        with pytest.raises(ValueError) as error:
            teacher._score_one(([5, 6, 7], [8, 9]))
    assert str(error.value) == (
        f"{server.url}/: the teacher's scoring request was refused (Error code: 404): no "
        "such route (a 404 that names no model): set the teacher's base_url (model.teacher.init_args.base_url) to "
        "the API's root, ending in /v1 (http://HOST:PORT/v1).")
