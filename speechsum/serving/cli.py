"""``speechsum serve``: an OpenAI-compatible HTTP server for a local Hugging Face causal LM or a
trained speech student.

    speechsum serve --model runs/benchmark/text_teacher/model --port 8000 --api-key-env SPEECHSUM_SERVE_KEY
    speechsum serve --model student/        # speechsum export output: chat completions with input_audio

Endpoints: ``GET /v1/models``, ``POST /v1/completions`` (echo + logprobs scoring, vLLM's
``prompt_logprobs`` and ``return_tokens_as_token_ids``), ``POST /v1/chat/completions``; ``GET /health``.
The pieces live in :mod:`speechsum.serving` (protocol, JSON format, HTTP layer, HF and speech backends).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechsum.serving.admission import DEFAULT_MAX_WAITING
from speechsum.serving.cors import allowed_origin
from speechsum.serving.http import DEFAULT_MAX_AUDIO_BYTES, DEFAULT_MAX_REQUEST_BYTES, APIServer, build_server
from speechsum.serving.protocol import APIError, Backend
from speechsum.utils.arguments import at_least, key_problem, key_variable, port, positive_seconds, user_path
from speechsum.utils.devices import check_device
from speechsum.utils.project_configs import project_config
from speechsum.utils.repeated_options import OnceParser

if TYPE_CHECKING:
    from speechsum.serving.hf_backend import HFBackend

__all__ = ["APIError", "APIServer", "Backend", "HFBackend", "build_server", "main"]

LOG = logging.getLogger("speechsum.serving.cli")
DEFAULT_MAX_AUDIO_SECONDS = 600.0  # speechsum.serving.speech_backend.DEFAULT_MAX_AUDIO_SECONDS


def __getattr__(name: str) -> Any:  # HFBackend imports torch/transformers: only when asked for
    if name == "HFBackend":
        from speechsum.serving.hf_backend import HFBackend

        return HFBackend
    raise AttributeError(name)


def _given(what: str) -> Callable[[str], str]:
    """argparse ``type=`` refusing an empty or blank value, which was taken as the default: an empty
    ``--host`` bound every interface (as 0.0.0.0), an empty ``--served-model-name`` the folder's name."""
    def check(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{text!r} is empty or blank: give {what}")
        return text
    return check


def build_parser() -> argparse.ArgumentParser:
    parser = OnceParser(
        prog="speechsum serve",
        description="Serve a local Hugging Face causal LM (model + tokenizer directory) over an "
        "OpenAI-compatible HTTP API: GET /v1/models, POST /v1/completions (echo+logprobs scoring, "
        "prompt_logprobs), POST /v1/chat/completions. A speech student (exported directory or checkpoint) "
        "answers chat completions whose user message holds one input_audio part. Model calls run one at a time.",
    )
    parser.add_argument("--model", required=True, type=user_path,
                        help="directory with a causal LM (AutoModelForCausalLM) and its tokenizer; or a speech student: "
                        "a directory written by `speechsum export` or a stage checkpoint (.ckpt), served for chat "
                        "completions with input_audio parts (a text LM student's: as a causal LM, its LoRA applied)")
    parser.add_argument("--config", default=None, type=project_config, metavar="YAML",
                        help="stage config for a checkpoint without saved hyperparameters (speech students)")
    parser.add_argument("--host", type=_given("an address: 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"),
                        default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                        "0.0.0.0 exposes the server to the network — set an API key then)")
    parser.add_argument("--port", type=port, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    parser.add_argument("--api-key-env", type=key_variable, default=None, metavar="NAME",
                        help="name of an environment variable holding the API key clients must send as "
                        "'Authorization: Bearer <key>' (default: no key needed). The key is never logged.")
    parser.add_argument("--allowed-origins", nargs="+", type=allowed_origin, default=[], metavar="ORIGIN",
                        help="browser origins (e.g. http://localhost:3000, or '*' for any) whose requests get CORS "
                        "headers, so a web page there can call the server (default: none)")
    parser.add_argument("--served-model-name", type=_given("a name, or leave the option out for the directory's"),
                        default=None, metavar="NAME",
                        help="model name clients use in requests and see in /v1/models (default: the directory name)")
    parser.add_argument("--max-request-bytes", type=at_least(1), default=DEFAULT_MAX_REQUEST_BYTES, metavar="N",
                        help=f"largest request body accepted; larger gets HTTP 413 (default {DEFAULT_MAX_REQUEST_BYTES})")
    parser.add_argument("--max-tokens-limit", type=at_least(1), default=4096, metavar="N",
                        help="largest max_tokens a request may ask for; more gets HTTP 400 (default 4096)")
    parser.add_argument("--max-logprobs", type=at_least(0), default=20, metavar="K",
                        help="largest top-k for logprobs/top_logprobs/prompt_logprobs (default 20, as vLLM)")
    parser.add_argument("--max-audio-bytes", type=at_least(1), default=DEFAULT_MAX_AUDIO_BYTES, metavar="N",
                        help="speech students: largest input_audio file in bytes; larger gets HTTP 413 before it is "
                        f"decoded (default {DEFAULT_MAX_AUDIO_BYTES})")
    parser.add_argument("--max-audio-seconds", type=positive_seconds, default=DEFAULT_MAX_AUDIO_SECONDS, metavar="S",
                        help="speech students: longest clip (lowered to the backbone's own maximum, e.g. 30 s for "
                        f"Qwen2-Audio); longer gets HTTP 400 (default {DEFAULT_MAX_AUDIO_SECONDS:g})")
    parser.add_argument("--max-waiting", type=at_least(0), default=DEFAULT_MAX_WAITING, metavar="N",
                        help="most requests waiting for the model while it generates for another (model calls run one "
                        "at a time); one more is answered at once with HTTP 503 and a Retry-After header, which "
                        f"OpenAI clients retry (default {DEFAULT_MAX_WAITING}; 0: none waits)")
    parser.add_argument("--max-reading-bytes", type=at_least(1), default=None, metavar="N",
                        help="most bytes of request bodies read at once over all connections; a body beyond it while "
                        "others are read is answered at once with HTTP 503 and a Retry-After header, a body alone is "
                        "always read (default: twice the largest body a request may send)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="weights dtype (default: as saved in the model directory's config)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level; INFO logs one line per request (default INFO)")
    return parser


def is_speech_student(path: str) -> bool:
    """A stage checkpoint, or an exported directory of a backbone that reads audio (an exported
    text LM is a plain causal-LM directory, served as one)."""
    from speechsum.serving.export import EXPORT_FILE, is_exported

    if Path(path).is_file():
        return True
    if not is_exported(path):
        return False
    class_path = json.loads((Path(path) / EXPORT_FILE).read_text(encoding="utf-8"))["model"]["class_path"]
    return not class_path.endswith(".TextLLM")


def build_backend(args: argparse.Namespace) -> Backend:
    """An HF causal-LM backend, or a speech backend for a speech student (see :func:`is_speech_student`)."""
    name = args.served_model_name or Path(args.model).resolve().name
    if is_speech_student(args.model):
        import torch

        from speechsum.serving.export import load_model
        from speechsum.serving.speech_backend import SpeechBackend
        from speechsum.serving.summarize import check_finite_weights

        model = load_model(args.model, args.config)
        check_finite_weights(model, args.model)  # it would answer every request with token 0 repeated
        if args.dtype:
            model.to(getattr(torch, args.dtype))
        if not getattr(model.processor, "reads_audio", True):  # a text LM's checkpoint: its causal LM, LoRA and all
            from speechsum.serving.hf_backend import HFBackend  # (before 2026-12-07 refused)

            return HFBackend.from_objects(model.llm.to(args.device), model.processor.tokenizer, name)
        return SpeechBackend(model.to(args.device), name, max_audio_seconds=args.max_audio_seconds)
    from speechsum.serving.hf_backend import HFBackend

    return HFBackend(args.model, device=args.device, dtype=args.dtype, served_model_name=args.served_model_name)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_key = None
    if args.api_key_env:
        # clients' keys are read without surrounding whitespace (a key file's newline), so is this one
        api_key = (os.environ.get(args.api_key_env) or "").strip()
        if problem := key_problem(api_key, args.api_key_env):  # no client could send it: every request a 401
            raise SystemExit(f"speechsum serve: --api-key-env {args.api_key_env}: {problem}")
        if not api_key:
            raise SystemExit(f"--api-key-env {args.api_key_env}: that environment variable is not set, empty or only "
                             "whitespace. "
                             f"Export it first (export {args.api_key_env}=...) or drop --api-key-env.")
    try:
        check_device(args.device)
        backend = build_backend(args)
    except (OSError, ValueError) as err:
        raise SystemExit(f"speechsum serve: {err}") from None
    try:
        server = build_server(backend, host=args.host, port=args.port, api_key=api_key,
                              max_request_bytes=args.max_request_bytes, max_tokens_limit=args.max_tokens_limit,
                              max_logprobs=args.max_logprobs, max_audio_bytes=args.max_audio_bytes,
                              allowed_origins=tuple(args.allowed_origins), max_waiting=args.max_waiting,
                              max_reading_bytes=args.max_reading_bytes)
    except OSError as err:  # the port is taken, the address is not this machine's or does not resolve
        raise SystemExit(f"speechsum serve: cannot listen on {args.host}:{args.port}: {err.strerror or err}; "
                         "pick another --port (0: any free one) or --host") from None
    LOG.info("serving %s (%s, max_model_len=%s) at %s%s", backend.model_name, args.model, backend.max_model_len,
             server.base_url, " (API key required)" if api_key else "")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        LOG.info("shutting down")
    finally:
        server.server_close()
