"""A request an endpoint refuses (a 400) over real loopback servers: the server's own message shown, and what to do
by its cause (model name, context or max_tokens, a parameter the model or server does not take, a content filter)."""

from __future__ import annotations

import openai
import pytest

from speechsum.stages.kd.teachers import OpenAICompatibleTeacher
from speechsum.utils.chat_json import ChatJsonAsker, check_not_all_refused
from speechsum.utils.remote import endpoint_error_text, openai_client
from tests.servers import JSONServer
from tests.utils.test_remote import _chat


def _refusal(message: str, param: str | None = None, code: str | None = None) -> tuple[int, dict]:
    return 400, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


REFUSED = {  # the server's words (vLLM, OpenAI, Azure) → what the one-line error says to do
    "context": (_refusal("This model's maximum context length is 2048 tokens. However, you requested 4096 tokens (100 "
                         "in the messages, 3996 in the completion). Please reduce the length of the messages or "
                         "completion."),
                "the prompt plus max_tokens exceed the model's context: lower max_tokens, shorten the input, or serve "
                "the model with a longer context (vllm serve --max-model-len)"),
    "max_tokens": (_refusal("max_tokens is too large: 100000. This model supports at most 16384 completion tokens, "
                            "whereas you provided 100000.", "max_tokens", "invalid_value"),
                   "max_tokens is more than the model allows: lower it to what the error says the model supports"),
    "model": (_refusal("The model `judge-x` does not exist."),
              "the endpoint does not serve this model name: give the name its GET base_url/models lists"),
    "content": (_refusal("The response was filtered due to the prompt triggering Azure OpenAI's content management "
                         "policy.", "prompt", "content_filter"),
                "the endpoint's content filter refused this text, which no retry changes: the item is left out; "
                "another model or endpoint (a self-hosted one) may take it"),
}


@pytest.mark.parametrize("cause", REFUSED)
def test_a_refused_request_shows_the_servers_message_and_what_to_do_for_its_cause(cause):
    """Before: every 400 ended "check its URL, the model name, and the API key in the environment variable named by
    api_key_env / --api-key-env", whatever the server said was wrong."""
    answer, advice = REFUSED[cause]
    with JSONServer(lambda request: answer) as server:
        with pytest.raises(openai.BadRequestError) as error:
            _chat(openai_client(server.url))
    assert endpoint_error_text(error.value) == (
        f"the endpoint {server.url}/chat/completions failed (BadRequestError: Error code: 400 - "
        f"{answer[1]['error']['message']}); {advice}, then rerun")


@pytest.mark.parametrize(("scoring", "message", "param", "advice"), [
    ("echo", "Setting 'echo' and 'logprobs' at the same time is not supported for this model.", None,
     "the server does not echo the prompt with its log-probs: set the remote teacher's scoring "
     "(model.teacher.init_args.scoring) to prompt_logprobs (vLLM) or none (sequence-level KD, any chat API), or serve "
     "the teacher with vllm serve or speechsum serve"),
    ("echo", "logprobs is not supported for this model.", "logprobs",  # not "lower top_k": no top_k is taken
     "the server returns no log-probs: set the remote teacher's scoring (model.teacher.init_args.scoring) to none "
     "(sequence-level KD), or serve the teacher with vllm serve or speechsum serve, which score text"),
    ("echo", "The model `m` does not exist.", None,  # some servers answer an unknown model with a 400
     "the endpoint does not serve this model name: set the teacher's model (model.teacher.init_args.model) to the "
     "name its /v1/models lists"),
    ("prompt_logprobs", "Unrecognized request argument supplied: prompt_logprobs", None,
     "the server does not take vLLM's prompt_logprobs: set the remote teacher's scoring "
     "(model.teacher.init_args.scoring) to echo (vLLM, speechsum serve) or none (sequence-level KD, any chat API)"),
])
def test_a_teacher_scoring_mode_the_server_does_not_take_names_the_mode_to_use(scoring, message, param, advice):
    """Before: "the server refused this request (HTTP 400), which retrying cannot change", or for a refused logprobs
    parameter "lower the teacher's top_k", which no top_k cures."""
    with JSONServer(lambda request: _refusal(message, param)) as server:
        teacher = OpenAICompatibleTeacher("m", base_url=server.url, top_k=2, scoring=scoring, attempts=1)
        with pytest.raises(ValueError) as error:
            teacher._score_one(([5, 6, 7], [8, 9]))
    assert str(error.value) == (f"{server.url}/: the teacher's scoring request was refused (Error code: 400 - {message}): "
                                f"{advice}.")


def test_a_judge_whose_every_request_is_refused_is_told_the_cause():
    """Before: "check the judge's model, max_tokens and temperature" for a model that takes max_completion_tokens."""
    message = "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
    with JSONServer(lambda request: _refusal(message, "max_tokens", "unsupported_parameter")) as server:
        asker = ChatJsonAsker(openai_client(server.url), "o-judge", request_attempts=1)
        errors = [asker.ask([{"role": "user", "content": "hi"}], dict).error for _ in range(2)]
        with pytest.raises(Exception) as error:
            check_not_all_refused(errors, str(asker.client.base_url), "o-judge", "the judge")
    assert str(error.value).endswith(
        f"{message}); this model takes max_completion_tokens, not max_tokens (an OpenAI reasoning model): use a model "
        "that takes max_tokens (or serve the model with vLLM) (the judge's model: 'o-judge'), then rerun")
