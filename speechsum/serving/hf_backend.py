"""The ``speechsum serve`` backend for a local Hugging Face causal LM (model + tokenizer directory).

Scoring (echo / prompt log-probs) is one forward pass per prompt under ``torch.inference_mode``;
generation is ``model.generate`` with a fresh GenerationConfig (no saved sampling defaults leak
in), stopping at the tokenizer's EOS, the generation config's EOS ids and the chat template's end
token (``<|im_end|>`` for ChatML). Log-probs are of the raw model distribution (natural log, before
temperature/top-p), as vLLM's default. All model calls are serialised by one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from jinja2.exceptions import TemplateError, TemplateSyntaxError
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteria

from speechsum.data.text_checks import reserved_strings
from speechsum.models.base import load_tokenizer
from speechsum.models.model_folder import check_model_folder
from speechsum.models.sampling import FiniteScores, Temperature
from speechsum.serving.hf_folder import check_vocabulary, checkpoints_hint, load_served_lm
from speechsum.serving.message_text import check_message_text
from speechsum.serving.protocol import (
    APIError,
    ChatOutput,
    ChatRequest,
    ClientGone,
    CompletionOutput,
    CompletionRequest,
    Generation,
    Sampling,
    TextStream,
    TokenLogprob,
    check_client,
    client_present,
)
from speechsum.serving.token_floor import TokenFloor

CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
NEG_INF_LOGPROB = -9999.0  # JSON has no -inf; vLLM reports -9999.0 as well
T = TypeVar("T")


def token_pieces(tokenizer, ids: list[int], context: list[int] = ()) -> list[str]:
    """Each token's piece of the decoded text (vLLM-style incremental detokenisation).

    Pieces concatenate to the decoding of ``ids`` after ``context``; a token that ends inside a
    multi-byte character gets "" and the token completing it gets the whole character.
    """
    pieces = Pieces(tokenizer, context)
    pieces.add(ids)
    return pieces.finish()


class Pieces:
    """:func:`token_pieces` a token at a time: ``add`` the tokens as they are generated, ``pieces`` so far
    (the text of complete characters: a prefix of the final text), ``finish`` with an incomplete end."""

    def __init__(self, tokenizer, context: list[int] = ()) -> None:
        self.tokenizer, self.ids = tokenizer, list(context)
        self.prefix, self.read = max(len(context) - 5, 0), len(context)
        self.pieces: list[str] = []

    def _decode(self, span: list[int]) -> str:
        return self.tokenizer.decode(span, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def add(self, ids: list[int]) -> None:
        for token in ids:
            self.ids.append(token)
            before = self._decode(self.ids[self.prefix:self.read])
            after = self._decode(self.ids[self.prefix:])
            if len(after) > len(before) and not after.endswith("\ufffd"):
                self.pieces.append(after[len(before):])
                self.prefix, self.read = self.read, len(self.ids)
            else:
                self.pieces.append("")

    def finish(self) -> list[str]:
        pieces = list(self.pieces)
        if pieces and self.read < len(self.ids):  # an incomplete character at the very end
            pieces[-1] += self._decode(self.ids[self.prefix:])[len(self._decode(self.ids[self.prefix:self.read])):]
        return pieces


def template_roles(messages: list[dict], template: str | dict) -> list[dict]:
    """``messages`` as the chat template takes them: OpenAI's ``developer`` role (its newer name of
    ``system``) as ``system``, unless the template names the developer role itself (gpt-oss's does);
    a template that knows neither rendered ``<|im_start|>developer``, a turn no model was trained on."""
    if "developer" in str(template):
        return messages
    return [{**m, "role": "system"} if m["role"] == "developer" else m for m in messages]


def _naming_prompt(index: int, prompts: int, check: Callable[[CompletionRequest], T], request: CompletionRequest) -> T:
    """``check(request)``; its error names the prompt (``prompt[index]: …``) when there are several."""
    try:
        return check(request)
    except APIError as error:
        if prompts > 1:
            error.message = f"prompt[{index}]: {error.message}"
        raise


class _StopOnStrings(StoppingCriteria):
    """Per-sequence stop once the generated text (after ``prompt_length``) contains a stop string."""

    def __init__(self, tokenizer, stops: list[str], prompt_length: int) -> None:
        self.tokenizer, self.stops, self.prompt_length = tokenizer, stops, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=False)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


class _StopWhenClientGone(StoppingCriteria):
    """Every row stops once the request's client has closed its connection: nobody reads the answer, and the
    requests waiting behind it get the model (before 2026-12-07 a client gone mid-stream, e.g. a Ctrl-C, held it
    until ``max_tokens``)."""

    def __init__(self, client_gone: Callable[[], bool]) -> None:
        self.client_gone, self.gone = client_gone, False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        self.gone = self.gone or self.client_gone()
        return torch.full((input_ids.shape[0],), self.gone, dtype=torch.bool, device=input_ids.device)


class _StreamText(StoppingCriteria):
    """Sends each row's text so far to the request's stream after every new token (:class:`Pieces`, as
    :meth:`HFBackend._finish` decodes it), up to the row's first stop token; never stops a row itself.
    Not once the client is gone (``gone``): the generation is being dropped."""

    def __init__(self, backend: HFBackend, prompt: list[int], stream: TextStream, fan_out: int,
                 gone: _StopWhenClientGone) -> None:
        self.backend, self.context, self.length, self.stream = backend, prompt[-8:], len(prompt), stream
        self.fan_out, self.gone, self.rows = fan_out, gone, {}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        for row, ids in enumerate(input_ids[:, self.length:].tolist()):
            pieces = self.rows.setdefault(row, [Pieces(self.backend.tokenizer, self.context), False])
            if pieces[1] or self.gone.gone:
                continue
            token = ids[-1]
            pieces[1] = token in self.backend.stop_ids
            if not pieces[1]:
                pieces[0].add([token])
                for index in range(row, row + self.fan_out):  # greedy n > 1: one row is every choice
                    self.stream.text(index, "".join(pieces[0].pieces))
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class HFBackend:
    """Serve ``model_dir`` (AutoModelForCausalLM + AutoTokenizer) on ``device`` in ``dtype``
    ("float32", "bfloat16", "float16", None = as saved). ``served_model_name`` defaults to the
    directory name; ``max_model_len`` comes from ``config.max_position_embeddings``."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str | torch.dtype | None = None,
                 served_model_name: str | None = None) -> None:
        path = Path(model_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"--model {model_dir}: not a directory (expected a saved HF model + tokenizer)")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--model {model_dir}: no config.json: not a saved HF model + tokenizer, nor a "
                                    f"folder written by `speechsum export`{checkpoints_hint(path)}")
        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or "auto")
        check_model_folder(path)
        model, tokenizer = load_served_lm(path, torch_dtype), load_tokenizer(path)
        check_vocabulary(model, tokenizer, path)
        self._setup(model.to(device), tokenizer, served_model_name or path.resolve().name)

    @classmethod
    def from_objects(cls, model: torch.nn.Module, tokenizer, served_model_name: str = "model") -> HFBackend:
        """Serve an already loaded causal LM and tokenizer (on the model's device, in its dtype)."""
        backend = cls.__new__(cls)
        backend._setup(model, tokenizer, served_model_name)
        return backend

    def _setup(self, model: torch.nn.Module, tokenizer, name: str) -> None:
        self.model, self.tokenizer, self.model_name = model.eval(), tokenizer, name
        self.device = next(model.parameters()).device
        self.max_model_len: int | None = getattr(self.model.config, "max_position_embeddings", None)
        self.vocab_size = self.model.get_input_embeddings().num_embeddings
        self.stop_ids = self._stop_ids()
        self._token_floor, self._reserved = TokenFloor(tokenizer), reserved_strings(tokenizer)
        self._lock = threading.Lock()
        self._rendering = threading.Lock()  # chat templates: one at a time, beside the model's work

    def _stop_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[t] for t in CHAT_END_TOKENS if t in vocab)
        return sorted(i for i in ids if i is not None)

    # ------------------------------------------------------------------------------------ public API
    def complete(self, requests: list[CompletionRequest]) -> list[CompletionOutput]:
        """One output per prompt. Every prompt is tokenized and checked (vocabulary, context, ``max_tokens``)
        before any is generated, so an invalid later prompt costs no generation (before 2026-12-07 the
        earlier ones were generated first); an error names ``prompt[i]`` when there are several."""
        with self._lock:  # the tokenizer too: fast tokenizers are not safe to share between threads
            check_client(requests[0].client_gone)
            prompts = [_naming_prompt(index, len(requests), self._prompt, r) for index, r in enumerate(requests)]
            outputs = []
            for request, (ids, text) in zip(requests, prompts):
                check_client(request.client_gone)
                top_k = request.prompt_top_k
                prompt_tokens = self.score(ids, top_k) if top_k is not None else None
                outputs.append(CompletionOutput(text, prompt_tokens, len(ids), self._generate(
                    ids, request.sampling, request.logprobs, request.client_gone, request.stream)))
            return outputs

    def chat(self, request: ChatRequest) -> ChatOutput:
        # the template renders outside the model's lock, one request at a time: ~2 s for 200k tiny messages (all
        # an 8 MiB body holds), which before 2026-12-07 held the model's lock; a text far past the context is refused
        # there too (the token floor reads no tokenizer state). The text is tokenized under the model's lock
        with self._rendering:
            check_client(request.client_gone)  # it may have waited here for another request's rendering
            text = self._render(request)
            self._refuse_long_text(text, "messages")
        with self._lock:
            check_client(request.client_gone)
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            self._check_prompt(ids, "messages")
            return ChatOutput(len(ids), self._generate(ids, request.sampling, request.top_logprobs, request.client_gone,
                                                       request.stream))

    def _prompt(self, request: CompletionRequest) -> tuple[list[int], str]:
        """The prompt's token ids and text, once its ids, length and room for ``max_tokens`` are checked."""
        if isinstance(request.prompt, str):
            self._refuse_long_text(request.prompt, "prompt")
            ids = self.tokenizer(request.prompt).input_ids
            prompt_text = request.prompt
        else:
            ids = list(request.prompt)
            bad = [i for i in ids if not 0 <= i < self.vocab_size]
            if bad:
                raise APIError(400, f"Token ids {bad[:5]} are outside this model's vocabulary [0, {self.vocab_size}).",
                               param="prompt")
            prompt_text = self.tokenizer.decode(ids, skip_special_tokens=False)
        self._check_prompt(ids, "prompt")
        self._max_new_tokens(len(ids), request.sampling)
        return ids, prompt_text

    def _render(self, request: ChatRequest) -> str:
        """The chat's messages rendered with the tokenizer's chat template (no tokenizing: safe beside it)."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise APIError(400, f"Model '{self.model_name}' has no chat template; use /v1/completions.",
                           param="messages")
        check_message_text(request.messages, self._reserved)  # <|im_end|> in a user's text injected a turn
        try:
            messages = template_roles(request.messages, self.tokenizer.chat_template)
            text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=request.add_generation_prompt,
                                                      continue_final_message=request.continue_final_message)
        except TemplateSyntaxError:  # the template itself is broken: the server's fault
            raise
        except TemplateError as error:  # its raise_exception: e.g. roles must alternate, no system role
            raise APIError(400, f"The model's chat template refuses these messages: {str(error).rstrip('.')}. Change "
                                "their roles or order to what it takes.", param="messages") from None
        except ValueError as error:  # transformers: a final message it cannot find in the rendered text
            if not request.continue_final_message:
                raise
            raise APIError(400, f"The last message cannot be continued with this model's chat template ({error}).",
                           param="continue_final_message") from None
        return text

    def score(self, ids: list[int], top_k: int = 0) -> list[TokenLogprob]:
        """Log p(ids[t] | ids[:t]) for every t ≥ 1 (t = 0: None) with the ``top_k`` alternatives,
        from one forward pass. Not locked: call it from one thread (the server calls it under the lock)."""
        with torch.inference_mode():
            input_ids = torch.tensor([ids], device=self.device)
            logits = self.model(input_ids=input_ids).logits[0, :-1].float()  # (T-1, V) predicts ids[1:]
        pieces = token_pieces(self.tokenizer, ids)
        scored = self._token_logprobs(logits, ids[1:], pieces[1:], top_k)
        return [TokenLogprob(ids[0], pieces[0], None)] + scored

    # ------------------------------------------------------------------------------------ internals
    def _check_prompt(self, ids: list[int], param: str) -> None:
        if not ids:
            raise APIError(400, "The prompt is empty after tokenization.", param=param)
        if self.max_model_len is not None and len(ids) > self.max_model_len:
            raise APIError(400, f"This model's maximum context length is {self.max_model_len} tokens, but the "
                                f"prompt has {len(ids)} tokens. Shorten the prompt.", param=param,
                           code="context_length_exceeded")

    def _refuse_long_text(self, text: str, param: str) -> None:
        """The 400 of :meth:`_check_prompt` for a text whose fewest possible tokens pass the context, before
        tokenizing it (seconds for megabytes, under the model's lock)."""
        tokens = self._token_floor.at_least(text)
        if self.max_model_len is not None and tokens > self.max_model_len:
            raise APIError(400, f"This model's maximum context length is {self.max_model_len} tokens, but the "
                                f"prompt has at least {tokens} tokens ({len(text)} characters). Shorten the prompt.",
                           param=param, code="context_length_exceeded")

    def _token_logprobs(self, logits: torch.Tensor, ids: list[int], pieces: list[str], top_k: int | None
                        ) -> list[TokenLogprob]:
        """Rows of ``logits`` (L, V) → the chosen ``ids`` (L) with log-prob, rank and top-k."""
        if not ids:
            return []
        logprobs = torch.log_softmax(logits, dim=-1).clamp_min(NEG_INF_LOGPROB)
        chosen = logprobs.gather(1, torch.tensor(ids, device=logits.device)[:, None])  # (L, 1)
        ranks = (logprobs > chosen).sum(dim=1) + 1
        k = min(top_k or 0, logprobs.shape[1])
        top_values, top_ids = logprobs.topk(k, dim=1) if k else (None, None)
        tokens = []
        for row, token_id in enumerate(ids):
            top = []
            if k:
                top = [(int(i), self._token_text(int(i)), float(v))
                       for v, i in zip(top_values[row].tolist(), top_ids[row].tolist())]
            tokens.append(TokenLogprob(token_id, pieces[row], float(chosen[row, 0]), top, int(ranks[row])))
        return tokens

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def _max_new_tokens(self, prompt_length: int, sampling: Sampling) -> int:
        if self.max_model_len is None:
            return sampling.max_tokens
        room = self.max_model_len - prompt_length
        if sampling.fit_to_context and room <= 0:  # as vLLM: an empty completion would only look like an answer
            raise APIError(400, f"This model's maximum context length is {self.max_model_len} tokens, and the prompt "
                                f"takes all {prompt_length} of them: no room is left for the completion. Shorten the "
                                "prompt.", param="messages", code="context_length_exceeded")
        if sampling.fit_to_context:
            return min(sampling.max_tokens, room)
        if sampling.max_tokens > room:
            raise APIError(400, f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                                f"requested {prompt_length + sampling.max_tokens} tokens ({prompt_length} in the "
                                f"prompt, {sampling.max_tokens} in the completion). Reduce the prompt or "
                                f"{sampling.max_tokens_field}.", param=sampling.max_tokens_field, code="context_length_exceeded")
        return sampling.max_tokens

    def _generate(self, ids: list[int], sampling: Sampling, top_k: int | None,
                  client_gone: Callable[[], bool] = client_present, stream: TextStream | None = None
                  ) -> list[Generation]:
        max_new = self._max_new_tokens(len(ids), sampling)
        if max_new == 0:
            return [Generation("", "length", [] if top_k is not None else None, 0) for _ in range(sampling.n)]
        greedy = sampling.greedy
        config = GenerationConfig(
            max_new_tokens=max_new, do_sample=not greedy, num_return_sequences=1 if greedy else sampling.n,
            # no stop token at all (a tokenizer without eos): every row runs to max_tokens (before 2026-12-07 an IndexError, a 500)
            eos_token_id=self.stop_ids or None, pad_token_id=self.tokenizer.pad_token_id or (self.stop_ids or [0])[0],
            output_logits=True, return_dict_in_generate=True,
            **({} if greedy else {"top_p": sampling.top_p, "top_k": 0}),
        )
        # the temperature as a processor (before top-p, as generate's own): HF's bits for float32 logits, and a row
        # whose logits / temperature overflow decodes greedily (generate's own warper: NaN, a 500); logits that are not
        # finite (an fp16 model overflowing) are a ValueError in the server log, where greedy answers were token 0
        tempered = LogitsProcessorList([*([Temperature(sampling.temperature)] if not greedy and sampling.temperature != 1.0
                                          else []), FiniteScores()])
        gone = _StopWhenClientGone(client_gone)
        stopping = [gone, *([_StopOnStrings(self.tokenizer, sampling.stop, len(ids))] if sampling.stop else [])]
        if stream is not None:  # stream: true: the text as it comes
            stopping.append(_StreamText(self, ids, stream, sampling.n if greedy else 1, gone))
        input_ids = torch.tensor([ids], device=self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(sampling.rng_seed())
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      generation_config=config, logits_processor=tempered,
                                      stopping_criteria=stopping)
        if gone.gone:
            raise ClientGone("the client closed its connection while its answer was generated",
                             f"while its answer was generated; stopped after {out.sequences.shape[1] - len(ids)} tokens")
        logits = torch.stack(out.logits, dim=1).float()  # (rows, L, V)
        generations = [self._finish(ids, out.sequences[row, len(ids):].tolist(), logits[row], sampling, max_new, top_k)
                       for row in range(out.sequences.shape[0])]
        return generations if not greedy else generations * sampling.n

    def _finish(self, prompt: list[int], new: list[int], logits: torch.Tensor, sampling: Sampling,
                max_new: int, top_k: int | None) -> Generation:
        """Cut one generated row at its first stop token or stop string; text, reason, log-probs."""
        finish, counted = "length", len(new)
        for position, token_id in enumerate(new):
            if token_id in self.stop_ids:
                new, finish, counted = new[:position], "stop", position + 1  # the end token counts, unshown
                break
        pieces = token_pieces(self.tokenizer, new, context=prompt[-8:])
        text = "".join(pieces)
        cut = min((i for i in (text.find(s) for s in sampling.stop) if i >= 0), default=-1)
        if cut >= 0:
            start, keep = 0, 0
            while keep < len(pieces) and start < cut:
                start += len(pieces[keep])
                keep += 1
            pieces = pieces[:keep]
            if pieces:
                pieces[-1] = pieces[-1][: len(pieces[-1]) - (start - cut)]
            new, text, finish, counted = new[:keep], text[:cut], "stop", keep
        elif finish == "length" and len(new) < max_new:
            finish = "stop"  # ended by a stop string criterion right at a token boundary
        tokens = self._token_logprobs(logits[: len(new)], new, pieces, top_k) if top_k is not None else None
        return Generation(text, finish, tokens, counted)
