"""``speechsum serve``: an OpenAI-compatible HTTP server for a local Hugging Face causal LM.

    speechsum serve --model runs/benchmark/teacher --port 8000 --api-key-env SPEECHSUM_SERVE_KEY

Endpoints: ``GET /v1/models``, ``POST /v1/completions`` (echo + logprobs scoring, vLLM's
``prompt_logprobs`` and ``return_tokens_as_token_ids``), ``POST /v1/chat/completions``; ``GET /health``.
The pieces live in :mod:`speechsum.serving` (protocol, JSON format, HTTP layer, HF backend).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from speechsum.serving.http import DEFAULT_MAX_REQUEST_BYTES, APIServer, build_server
from speechsum.serving.protocol import APIError, Backend

if TYPE_CHECKING:
    from speechsum.serving.hf_backend import HFBackend

__all__ = ["APIError", "APIServer", "Backend", "HFBackend", "build_server", "main"]

LOG = logging.getLogger("speechsum.serving.cli")


def __getattr__(name: str) -> Any:  # HFBackend imports torch/transformers: only when asked for
    if name == "HFBackend":
        from speechsum.serving.hf_backend import HFBackend

        return HFBackend
    raise AttributeError(name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechsum serve",
        description="Serve a local Hugging Face causal LM (model + tokenizer directory) over an "
        "OpenAI-compatible HTTP API: GET /v1/models, POST /v1/completions (echo+logprobs scoring, "
        "prompt_logprobs), POST /v1/chat/completions. Model calls run one at a time.",
    )
    parser.add_argument("--model", required=True, help="directory with the model (AutoModelForCausalLM) and its tokenizer")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                        "0.0.0.0 exposes the server to the network — set an API key then)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    parser.add_argument("--api-key-env", default=None, metavar="NAME",
                        help="name of an environment variable holding the API key clients must send as "
                        "'Authorization: Bearer <key>' (default: no key needed). The key is never logged.")
    parser.add_argument("--served-model-name", default=None, metavar="NAME",
                        help="model name clients use in requests and see in /v1/models (default: the directory name)")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES, metavar="N",
                        help=f"largest request body accepted; larger gets HTTP 413 (default {DEFAULT_MAX_REQUEST_BYTES})")
    parser.add_argument("--max-tokens-limit", type=int, default=4096, metavar="N",
                        help="largest max_tokens a request may ask for; more gets HTTP 400 (default 4096)")
    parser.add_argument("--max-logprobs", type=int, default=20, metavar="K",
                        help="largest top-k for logprobs/top_logprobs/prompt_logprobs (default 20, as vLLM)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="weights dtype (default: as saved in the model directory's config)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level; INFO logs one line per request (default INFO)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise SystemExit(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty. "
                             f"Export it first (export {args.api_key_env}=...) or drop --api-key-env.")
    from speechsum.serving.hf_backend import HFBackend

    backend = HFBackend(args.model, device=args.device, dtype=args.dtype, served_model_name=args.served_model_name)
    server = build_server(backend, host=args.host, port=args.port, api_key=api_key,
                          max_request_bytes=args.max_request_bytes, max_tokens_limit=args.max_tokens_limit,
                          max_logprobs=args.max_logprobs)
    LOG.info("serving %s (%s, max_model_len=%s) at %s%s", backend.model_name, args.model, backend.max_model_len,
             server.base_url, " (API key required)" if api_key else "")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        LOG.info("shutting down")
    finally:
        server.server_close()
