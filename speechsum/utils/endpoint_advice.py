"""What to do about an OpenAI-compatible endpoint's error, by its kind (HTTP status, timeout,
unreachable, cut off, a redirect loop, a reply too large): the advice ending the one-line errors of
:mod:`speechsum.utils.remote` (:func:`~speechsum.utils.remote.endpoint_error_text`,
:func:`~speechsum.utils.remote.endpoint_failure`)."""

from __future__ import annotations

import openai

from speechsum.utils.deadline import ReplyTooLarge
from speechsum.utils.redirects import redirect_loop

CUT_OFF = ("RemoteProtocolError", "ReadError", "WriteError")  # a connection's causes once a server took it


def proxy_refused(error: BaseException) -> bool:
    """Whether ``error`` is a proxy's 407 (Proxy Authentication Required): answered to a request (an http://
    base_url) or to the tunnel an https:// one needs (the client's "Connection error.", its cause a
    ``ProxyError``). No retry ends it, and it says nothing about the endpoint behind the proxy."""
    if getattr(error, "status_code", None) == 407:
        return True
    cause = error.__cause__
    return isinstance(error, openai.APIConnectionError) and type(cause).__name__ == "ProxyError" and \
        str(cause).startswith("407")


UNKNOWN_MODEL = "the endpoint does not serve this model name: give the name its GET base_url/models lists"
REFUSALS: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (  # (any of, and any of, what to do)
    (("content_policy", "content_filter", "content management policy", "safety system"), ("",),
     "the endpoint's content filter refused this text, which no retry changes: the item is left out; another model "
     "or endpoint (a self-hosted one) may take it"),
    (("model_not_found", "model"), ("does not exist", "not found", "unknown model", "invalid model", "no such model"),
     UNKNOWN_MODEL),
    (("context length", "context_length", "maximum context", "too many tokens", "prompt is too long",
      "input is too long"), ("",),
     "the prompt plus max_tokens exceed the model's context: lower max_tokens, shorten the input, or serve the model "
     "with a longer context (vllm serve --max-model-len)"),
    (("max_tokens",), ("max_completion_tokens",),
     "this model takes max_completion_tokens, not max_tokens (an OpenAI reasoning model): use a model that takes "
     "max_tokens (or serve the model with vLLM)"),
    (("max_tokens",), ("too large", "at most", "exceed", "must be", "maximum", "greater than", "less than"),
     "max_tokens is more than the model allows: lower it to what the error says the model supports"),
    (("temperature",), ("unsupported", "not support", "only the default", "does not support"),
     "this model takes no temperature 0 (reasoning models take only their default): use another model"),
    (("echo",), ("not supported", "unsupported", "not allowed", "not available"),
     "the server does not echo the prompt with its log-probs: set the remote teacher's scoring (model.teacher.init_args.scoring) to prompt_logprobs "
     "(vLLM) or none (sequence-level KD, any chat API), or serve the teacher with vllm serve or speechsum serve"),
    (("prompt_logprobs",), ("not supported", "unsupported", "not permitted", "unrecognized", "unexpected", "extra"),
     "the server does not take vLLM's prompt_logprobs: set the remote teacher's scoring (model.teacher.init_args.scoring) to echo (vLLM, speechsum "
     "serve) or none (sequence-level KD, any chat API)"),
    (("return_tokens_as_token_ids",), ("not supported", "unsupported", "not permitted", "unrecognized", "unexpected",
                                        "extra"),
     "the server does not take vLLM's return_tokens_as_token_ids, which token-level scoring needs: set the remote "
     "teacher's scoring (model.teacher.init_args.scoring) to none (sequence-level KD, any chat API), or serve the "
     "teacher with vllm serve or speechsum serve"),
    (("logprobs",), ("not supported", "unsupported", "not allowed", "not available"),
     "the server returns no log-probs: set the remote teacher's scoring (model.teacher.init_args.scoring) to none (sequence-level KD), or serve the "
     "teacher with vllm serve or speechsum serve, which score text"),
)


def refusal_advice(text: str) -> str:
    """What to do about a request the endpoint refused (a 400 or 422), from the words of its error ``text``
    (message, code, param): an unknown model name, max_tokens or the context too long, a parameter the model
    does not take (temperature, max_tokens, echo, logprobs: which teacher scoring mode or server to use), a
    content filter; "" when they say nothing known."""
    lower = text.lower()
    return next((advice for first, second, advice in REFUSALS
                 if any(word in lower for word in first) and any(word in lower for word in second)), "")


TIMEOUT_SETTINGS = ("the setting that sets it: --judge-timeout of speechsum pairs and evaluate, --timeout of speechsum "
                    "synth, a remote KD teacher's model.teacher.init_args.timeout")


def timeout_seconds(error: BaseException) -> float | None:
    """The seconds a timed-out request was given (its ``timeout`` extension), None where it does not say."""
    extensions = getattr(getattr(error, "request", None), "extensions", None)
    timeout = extensions.get("timeout") if isinstance(extensions, dict) else None
    seconds = timeout.get("read") if isinstance(timeout, dict) else None
    return float(seconds) if isinstance(seconds, int | float) and seconds > 0 else None


def basic_auth_sent(error: BaseException) -> bool:
    """Whether the request behind ``error`` went with HTTP Basic auth: its URL holds ``user:password@`` (base_url's,
    which the HTTP client sends as Basic auth at send time) or it carries the header."""
    request = getattr(error, "request", None)
    if getattr(getattr(request, "url", None), "username", ""):
        return True
    headers = getattr(request, "headers", None)
    return bool(headers) and str(headers.get("authorization", "")).startswith("Basic ")


def endpoint_advice(error: BaseException, key_variable: str = "the environment variable named by api_key_env / "
                    "--api-key-env", timeout_setting: str = TIMEOUT_SETTINGS) -> str:
    """What to do about an endpoint's error, by its kind (HTTP status, timeout, unreachable); "" when
    the kind says nothing particular. ``key_variable``: how to name where the key comes from;
    ``timeout_setting``: the setting that raises the timeout (each that may be, by default)."""
    status = getattr(error, "status_code", None)
    spent = getattr(error, "retries_spent", None)  # set by with_retries
    retried = "after every retry" if spent is None else f"after {spent[0]} attempts ({spent[1]:.1f} s of waits between)"
    if proxy_refused(error):
        return ("a proxy between here and the endpoint asks for credentials (407 Proxy Authentication Required): give "
                "them in the environment's proxy URL (HTTPS_PROXY, HTTP_PROXY or ALL_PROXY), as user:password@ before "
                "the proxy's host, or list the endpoint's host in NO_PROXY if it is reached without the proxy")
    if status in (400, 422) and (advice := refusal_advice(f"{error} {getattr(error, 'code', '')} {getattr(error, 'param', '')}")):
        return advice
    if status == 401 and basic_auth_sent(error):
        return ("the request carried base_url's user:password@ as HTTP Basic auth, which takes the place of an API "
                f"key in the one Authorization header: for a server that checks a key, remove user:password@ from "
                f"base_url and export the key in {key_variable}; for one behind Basic auth, check the user and password")
    if status == 401:
        return (f"the API key was missing or refused: export a valid key in {key_variable} (a self-hosted server "
                "started without a key needs none)")
    if status == 403:
        return "the API key has no access to this model or endpoint: check the key's permissions and the model name"
    if status == 404:
        return ("no such route or model: check that base_url is the API's root, ending in /v1 (http://HOST:PORT/v1), "
                "and that the endpoint serves the model name (GET base_url/models lists them)")
    if status == 429 and getattr(error, "code", None) == "insufficient_quota":
        return "the account's quota is used up (no retry ends that): add credit with the provider, or use another key"
    if status == 429:
        return f"rate-limited {retried}: lower the concurrency or wait (a used-up quota needs the provider's billing)"
    if isinstance(status, int) and status >= 500:
        return f"the server failed {retried}: check its logs and load"
    if isinstance(error, ReplyTooLarge):
        return ("check that base_url is the OpenAI-compatible API's and that nothing in between (a proxy, a login or "
                "download page) answers in its place")
    if redirect_loop(error):
        return "the endpoint redirects without end (a loop): set base_url to the API's own address, past the redirects"
    if isinstance(error, openai.APITimeoutError):
        seconds = timeout_seconds(error)
        return (f"no answer within the timeout{f' of {seconds:g} s' if seconds else ''} {retried}: raise it "
                f"({timeout_setting}) or lower the concurrency")
    if isinstance(error, openai.APIConnectionError) and type(error.__cause__).__name__ in CUT_OFF:
        return (f"the server took the connection but closed it before a whole answer {retried}: check its logs (a "
                "crash, a restart, a proxy's time limit) and that base_url's http/https is the server's")
    if isinstance(error, openai.APIConnectionError):
        return f"unreachable {retried}: check that a server runs at base_url (host, port, http/https)"
    return ""
