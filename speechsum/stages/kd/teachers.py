"""KD teachers: text LLMs that read transcript + instruction and score the student's completion.

The teacher's prompt is its own chat template applied to
:func:`speechsum.models.text_prompt.text_messages` (transcript + instruction); the completion is
the student's token ids as they are (one shared vocabulary, checked by :func:`check_vocab`), so
only completion positions are aligned between teacher and student. Kinds:

- :class:`HFTeacher`: a local causal LM; full logits ``(B, R, V)`` at the completion positions.
- :class:`OpenAICompatibleTeacher`: a vLLM-style ``/v1/completions``
  endpoint (or ``speechsum serve``) that scores supplied token ids; top-k log-probs per position
  (→ :func:`speechsum.losses.topk_tail_jsd_loss`). With ``scoring: none`` (the official OpenAI API,
  which cannot score text it did not write) it only writes summaries: sequence-level KD.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import openai
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from speechsum.data.batch import SpeechBatch
from speechsum.models.policy import TrainingPolicy
from speechsum.stages.kd.remote_scores import (
    Scores,
    check_top_ids,
    echo_scores,
    prompt_logprob_scores,
    refusal,
    short_top_warning,
)
from speechsum.stages.kd.teacher_base import (
    Teacher,
    TeacherScores,
    check_teacher_context,
    check_vocab,
    require_transcripts,
)
from speechsum.utils.arguments import (
    ConfigError,
    base_url_problem,
    check_count,
    check_key_variable,
    check_number,
)
from speechsum.utils.chat_json import no_text_notes
from speechsum.utils.remote import RetryCounter, with_retries
from speechsum.utils.replies import chat_text, fetch_reply, first_choice

LOG = logging.getLogger(__name__)


class HFTeacher(Teacher):
    """A local Hugging Face causal LM as teacher, through :class:`speechsum.models.text_llm.TextLLM`
    (so its prompt is exactly the one the benchmark's text LMs were trained with).

    Args:
        model: hub id or directory of a causal LM, or a config dict (``model_type`` + fields) for
            a random-init model (tests).
        tokenizer: hub id or directory (default: the model's own; the byte tokenizer for a config
            dict). ``<|audio|>`` is added if missing, as for the student.
        device: where the teacher runs (default: the device of the student's completion ids).
        dtype: weight dtype ("bfloat16", "float16", "float32"; default: the checkpoint's).
        offload_to_cpu: keep the weights on the CPU between calls and move them to ``device`` for
            each forward: saves accelerator memory, costs a transfer per step.
        system_prompt: optional system message of the teacher's prompts.
        end_of_turn: token that ends a response (default: the student's).
        init_seed: seed of a random-init model.

    One forward per batch, eval mode, under ``torch.no_grad`` (not ``inference_mode``: the
    logits enter the student's loss, and inference tensors cannot be saved for backward); the LM
    head runs on the completion positions only (``logits_to_keep``).
    """

    def __init__(
        self,
        model: str | dict,
        tokenizer: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        offload_to_cpu: bool = False,
        system_prompt: str | None = None,
        end_of_turn: str | None = None,
        init_seed: int = 0,
    ):
        from speechsum.models.text_llm import TextLLM
        from speechsum.utils.devices import check_device

        if device is not None:  # before the model loads: "Torch not compiled with CUDA enabled" was a traceback
            try:
                check_device(device, "HFTeacher device")
            except ValueError as err:
                raise ConfigError(str(err)) from None
        self.lm = TextLLM(
            llm=model,
            tokenizer=tokenizer,
            end_of_turn=end_of_turn,
            system_prompt=system_prompt,
            policy=TrainingPolicy(train_projector=False, llm="frozen"),
            dtype=dtype,
            init_seed=init_seed,
        )
        if dtype not in (None, "auto"):  # checked by TextLLM
            self.lm.to(getattr(torch, dtype))
        self.lm.eval()
        self.device = torch.device(device) if device else None
        self.offload_to_cpu = offload_to_cpu
        self._own_end_of_turn = end_of_turn is not None
        if not offload_to_cpu and self.device is not None:
            self.lm.to(self.device)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.lm.processor.tokenizer

    def attach(self, student_tokenizer: PreTrainedTokenizerBase, end_of_turn: str) -> None:
        check_vocab(student_tokenizer, self.tokenizer)
        if not self._own_end_of_turn:
            self.lm.processor.end_of_turn = end_of_turn

    @contextlib.contextmanager
    def _placed(self, fallback: torch.device) -> Iterator[torch.device]:
        """The LM on its device for one call (moved there and back when offloading)."""
        device = self.device or fallback
        self.lm.to(device)
        try:
            yield device
        finally:
            if self.offload_to_cpu:
                self.lm.to("cpu")

    def _teacher_batch(self, batch: SpeechBatch, device: torch.device) -> SpeechBatch:
        prompts = self.lm.processor.encode_prompts((), batch.instructions, require_transcripts(batch))
        return replace(batch, audio={}, prompt_ids=prompts.prompt_ids.to(device), prompt_mask=prompts.prompt_mask.to(device))

    def score(self, batch: SpeechBatch, completion_ids: Tensor, completion_mask: Tensor) -> TeacherScores:
        vocab = self.lm.llm.get_input_embeddings().num_embeddings
        if completion_ids.numel() and int(completion_ids.max()) >= vocab:
            raise ValueError(
                f"the completion holds token id {int(completion_ids.max())} but the teacher's embedding has "
                f"{vocab} rows: the student's and teacher's vocabulary sizes differ"
            )
        with self._placed(completion_ids.device) as device, torch.no_grad():
            teacher_batch = self._teacher_batch(batch, device)
            check_teacher_context(batch, teacher_batch.prompt_mask, completion_mask, self.lm.context_length())
            logits = self.lm.response_logits(teacher_batch, completion_ids.to(device), completion_mask.to(device))
        return TeacherScores(logits=logits.to(completion_ids.device))

    def write_summaries(self, batch: SpeechBatch, max_new_tokens: int) -> list[str]:
        with self._placed(batch.prompt_ids.device) as device, torch.no_grad():
            teacher_batch = self._teacher_batch(batch, device)
            check_teacher_context(batch, teacher_batch.prompt_mask, None, self.lm.context_length())
            ids, mask = self.lm.generate(teacher_batch, max_new_tokens=max_new_tokens)
        return self.lm.processor.decode_responses(ids, mask)


class OpenAICompatibleTeacher(Teacher):
    """A teacher behind an OpenAI-compatible API, through the official ``openai`` client.

    Token-level scoring (``scoring: echo`` or ``prompt_logprobs``) needs a server that scores
    supplied text — vLLM or ``speechsum serve``: one ``/v1/completions`` request per example with
    ``prompt`` = teacher prompt ids + completion ids (a list of ints, so nothing is re-tokenised),
    ``max_tokens=0``, ``echo=True`` and either ``logprobs=top_k`` (OpenAI legacy format) or vLLM's
    ``prompt_logprobs=top_k``, always with ``return_tokens_as_token_ids``. The reply gives, per
    completion position, the log-prob of the supplied token and the top-k alternatives; the echoed
    ids are checked against the ones sent. Requests run concurrently (``max_workers``) with
    retries on timeouts, 429 and 5xx.

    ``scoring: none`` is the sequence-level mode for APIs that cannot score text they did not
    write (the official OpenAI API): the teacher only writes summaries from transcripts with chat
    completions (:meth:`write_summaries`), and the student learns them by cross-entropy
    (``seq_kd: true``, ``lmbda: 0``). ``cache_path`` keeps those summaries in a resumable JSONL
    cache, so a second epoch or a restarted run pays nothing.

    Args:
        model: the served model name.
        base_url: e.g. ``http://127.0.0.1:8000/v1`` (None: api.openai.com).
        api_key_env: environment variable holding the key (never logged or saved).
        tokenizer: hub id or directory of the teacher's tokenizer (chat template and vocabulary,
            checked against the student's); default: the student's own tokenizer.
        top_k: alternatives per position (vLLM allows up to its ``--max-logprobs``, default 20).
        scoring: "echo", "prompt_logprobs" or "none" (see above).
        system_prompt: optional system message of the teacher's prompts.
        max_workers: requests in flight at once.
        timeout: seconds per request.
        attempts: tries per request.
        summary_temperature: sampling temperature of written summaries (0: greedy).
        cache_path: JSONL cache of written summaries (None: no cache).
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        tokenizer: str | None = None,
        top_k: int = 20,
        scoring: str = "echo",
        system_prompt: str | None = None,
        max_workers: int = 8,
        timeout: float = 60.0,
        attempts: int = 4,
        summary_temperature: float = 0.0,
        cache_path: str | None = None,
    ):
        if scoring not in ("echo", "prompt_logprobs", "none"):
            raise ValueError(f"scoring must be 'echo', 'prompt_logprobs' or 'none', got {scoring!r}")
        check_key_variable("OpenAICompatibleTeacher api_key_env", api_key_env)
        if base_url is not None and (problem := base_url_problem(base_url)):  # was found at the first training step
            raise ConfigError(f"OpenAICompatibleTeacher base_url {problem}")
        if not isinstance(model, str) or not model.strip():  # every request was refused by the server
            raise ConfigError(f"OpenAICompatibleTeacher model must name the model the endpoint serves, got {model!r}")
        # each was taken and failed at the first training step (or, for a timeout, retried until unreachable)
        for name, count in (("top_k", top_k), ("max_workers", max_workers), ("attempts", attempts)):
            check_count(f"OpenAICompatibleTeacher {name}", count, 1)
        check_number("OpenAICompatibleTeacher timeout", timeout, 0.0, low_open=True, note=" (seconds per request)")
        check_number("OpenAICompatibleTeacher summary_temperature", summary_temperature, 0.0, note=" (0: greedy)")
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.tokenizer_name, self.top_k, self.scoring = tokenizer, top_k, scoring
        self.system_prompt, self.max_workers = system_prompt, max_workers
        self.timeout, self.attempts, self.summary_temperature = timeout, attempts, summary_temperature
        self.cache_path = cache_path
        self.can_score = scoring != "none"
        self._client = None
        self._cache = None
        self._prompter = None
        self.retries = RetryCounter()  # transient endpoint errors retried (logged as teacher/retries)
        self._warned_short_top = False
        self.cut_summaries = 0  # written summaries cut at max_new_tokens (finish_reason length)

    @property
    def client(self):
        if self._client is None:
            from speechsum.utils.remote import openai_client

            self._client = openai_client(self.base_url, self.api_key_env, self.timeout)
        return self._client

    @property
    def endpoint(self) -> str:
        """The base URL requests go to (named in every error about its replies), credentials in it masked."""
        from speechsum.utils.remote import without_keys

        return without_keys(str(self.client.base_url))

    def check_scores(self, scores: TeacherScores, vocab_size: int) -> None:
        check_top_ids(scores.topk_ids, vocab_size, self.endpoint)

    def attach(self, student_tokenizer: PreTrainedTokenizerBase, end_of_turn: str) -> None:
        from speechsum.models.base import load_tokenizer
        from speechsum.models.text_llm import TextProcessor

        tokenizer = student_tokenizer
        if self.tokenizer_name is not None:
            tokenizer = load_tokenizer(self.tokenizer_name)
            if self.can_score:
                check_vocab(student_tokenizer, tokenizer)
        self._prompter = TextProcessor(tokenizer, end_of_turn=end_of_turn, system_prompt=self.system_prompt)

    def _call(self, request):
        return with_retries(request, attempts=self.attempts, on_retry=self.retries)

    def _score_one(self, item: tuple[list[int], list[int]]) -> Scores:
        """(token log-probs, top-k [(id, log-prob)] best first) of each completion token, checked
        (:mod:`speechsum.stages.kd.remote_scores`)."""
        prompt, completion = item
        k = self.top_k
        # echo in both modes: vLLM runs echo + max_tokens=0 as one scored forward, and refuses
        # max_tokens=0 without echo ("max_tokens must be at least 1", SamplingParams)
        extra = {"return_tokens_as_token_ids": True}
        if self.scoring == "prompt_logprobs":
            extra["prompt_logprobs"] = k
            kwargs = {"echo": True}
        else:
            kwargs = {"echo": True, "logprobs": k}
        endpoint = self.endpoint
        try:
            choice = self._call(  # a reply without a choice is asked again (MalformedReply is transient)
                lambda: first_choice(fetch_reply(endpoint, lambda: self.client.completions.create(
                    model=self.model, prompt=prompt + completion, max_tokens=0, temperature=0.0, extra_body=extra,
                    **kwargs,
                )), endpoint)
            )
        except (openai.BadRequestError, openai.NotFoundError) as error:  # top_k above --max-logprobs, past the context, …
            raise refusal(error, endpoint, k, len(prompt), len(completion)) from error
        read = prompt_logprob_scores if self.scoring == "prompt_logprobs" else echo_scores
        return read(choice, endpoint, prompt, completion, k)

    def score(self, batch: SpeechBatch, completion_ids: Tensor, completion_mask: Tensor) -> TeacherScores:
        from speechsum.utils.remote import map_concurrent

        if not self.can_score:
            raise RuntimeError("this teacher has scoring: none; it only writes summaries (sequence-level KD)")
        if self._prompter is None:
            raise RuntimeError("OpenAICompatibleTeacher.attach(student_tokenizer, end_of_turn) was not called")
        prompts = [self._prompter.prompt_ids(i, t) for i, t in zip(batch.instructions, require_transcripts(batch))]
        ids, mask = completion_ids.tolist(), completion_mask.tolist()
        completions = [[t for t, m in zip(row, row_mask) if m] for row, row_mask in zip(ids, mask)]
        results = map_concurrent(self._score_one, list(zip(prompts, completions)), self.max_workers, progress=False)
        self._note_short_top([len(top) for _, tops in results for top in tops])
        shape = completion_ids.shape
        token_lps = torch.zeros(shape)
        top_lps = torch.full((*shape, self.top_k), -float("inf"))
        top_ids = torch.full((*shape, self.top_k), -1, dtype=torch.long)
        for row, (row_mask, (lps, tops)) in enumerate(zip(mask, results)):
            positions = [j for j, m in enumerate(row_mask) if m]
            if not positions:
                continue
            blank = [(-1, -float("inf"))] * self.top_k  # one tensor per row, not per token
            padded = [top + blank[len(top) :] for top in tops]
            token_lps[row, positions] = torch.tensor(lps, dtype=token_lps.dtype)
            top_lps[row, positions] = torch.tensor([[v for _, v in top] for top in padded], dtype=top_lps.dtype)
            top_ids[row, positions] = torch.tensor([[i for i, _ in top] for top in padded], dtype=torch.long)
        return TeacherScores(topk_log_probs=top_lps, topk_ids=top_ids, token_log_probs=token_lps).to(
            completion_ids.device
        )

    def _note_short_top(self, sizes: list[int]) -> None:
        """One warning (:func:`short_top_warning`) per teacher, not per batch."""
        warning = None if self._warned_short_top else short_top_warning(sizes, self.top_k, self.endpoint)
        if warning:
            self._warned_short_top = True
            LOG.warning(warning)

    def _note_cut_summary(self, endpoint: str, max_new_tokens: int) -> None:
        """Count a written summary cut at ``max_new_tokens``; warn at the first (a target that stops
        mid-sentence teaches the student to stop there)."""
        self.cut_summaries += 1  # a count for logs: no lock (the teacher is saved with the module's hyperparameters)
        if self.cut_summaries == 1:
            LOG.warning("%s: a summary the teacher wrote was cut at max_new_tokens=%d (finish_reason length): the student "
                        "learns to stop where it was cut; raise the KD module's max_new_tokens (model.max_new_tokens). "
                        "Cut summaries are counted in teacher.cut_summaries", endpoint, max_new_tokens)

    def write_summaries(self, batch: SpeechBatch, max_new_tokens: int) -> list[str]:
        from speechsum.models.text_prompt import text_messages
        from speechsum.utils.remote import JsonlCache, cache_key, map_concurrent

        if self.cache_path and self._cache is None:
            self._cache = JsonlCache(self.cache_path)

        def write(messages: list[dict]) -> str:
            key = cache_key("seq-kd-v2", self.model, messages, max_new_tokens, self.summary_temperature)
            if self._cache is not None and (hit := self._cache.get(key)) is not None:
                return hit["summary"]
            endpoint = self.endpoint

            def ask() -> tuple[str, Any]:
                reply = fetch_reply(endpoint, lambda: self.client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_new_tokens,
                    temperature=self.summary_temperature,
                ))
                return chat_text(reply, endpoint).strip(), reply.choices[0]

            summary, choice = self._call(ask)
            if not summary:  # a refusal or a tool call: not cached, so a rerun asks again
                notes = no_text_notes(choice)
                if not notes and getattr(choice, "finish_reason", None) == "length":  # said "empty content"
                    notes = [f"cut at max_new_tokens={max_new_tokens} before any text (a reasoning model may spend "
                             "them all thinking): raise the KD module's max_new_tokens (model.max_new_tokens)"]
                why = "; ".join(notes) or "empty content"
                LOG.warning("%s wrote no summary (%s); not cached: asked again next time", endpoint, why)
                return summary
            if getattr(choice, "finish_reason", None) == "length":
                self._note_cut_summary(endpoint, max_new_tokens)
            if self._cache is not None:
                self._cache.put(key, {"summary": summary})
            return summary

        transcripts = require_transcripts(batch)
        messages = [text_messages(i, t, self.system_prompt) for i, t in zip(batch.instructions, transcripts)]
        return map_concurrent(write, messages, self.max_workers, progress=False)
