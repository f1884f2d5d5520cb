"""The ``speechsum serve`` backend for a speech student: ``/v1/chat/completions`` with one OpenAI
``input_audio`` part (as vLLM serves audio models).

A request holds one user message with one ``input_audio`` part (wav/mp3/flac/ogg, any rate,
stereo averaged) and text parts (the instruction; none: :data:`DEFAULT_INSTRUCTION`). The prompt
format is the student's own (fixed in training), so system and assistant messages are refused.
The audio is written to a temporary file, its duration read from the header and refused above the
limit (the server's ``--max-audio-seconds`` or the backbone's own maximum) before the samples are
decoded by :func:`speechsum.data.audio.load_audio`; a file that cannot be read is a 400, and so is a
file of which only the first part is read (a truncated upload), which would be summarised as the whole.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from speechsum.data.audio import (
    AudioTooLongError,
    BadSampleError,
    EmptyAudioError,
    NonFiniteAudioError,
    SampleRateError,
    UnreadableAudioError,
    load_audio,
    open_audio,
)
from speechsum.data.audio_notes import LOUD
from speechsum.data.clip_advice import without_manifest
from speechsum.data.cut_short import REWRITE, damage
from speechsum.data.processor import SpeechProcessor
from speechsum.models.base import SpeechLLM, mask_after_stop
from speechsum.models.generation import GenerationSettings
from speechsum.serving.protocol import (
    APIError,
    AudioInput,
    ChatOutput,
    ChatRequest,
    ClientGone,
    CompletionOutput,
    CompletionRequest,
    Generation,
    ReplyWarning,
    bad_request,
    check_client,
)
from speechsum.serving.summarize import (
    audio_limit,
    instruction_problem,
    or_default,
    prompt_positions,
    summarize_waveforms,
)
from speechsum.serving.token_floor import TokenFloor

DEFAULT_MAX_AUDIO_SECONDS = 600.0
DEFAULT_CHAT_TOKENS = 512  # a request without max_tokens: at most this many (the summary's length)
SILENT_AUDIO = "silent_audio"  # the warning code of a clip the model hears nothing in (docs/serve.md)
LOUD_AUDIO = "loud_audio"  # of float samples louder than any recording (over ±2, read as they are)
FORMAT_MISMATCH = "format_mismatch"  # the warning code of a part whose format is not its file's
FILE_FORMATS = {"wav": ("WAV", "WAVEX", "W64", "RF64"), "mp3": ("MP3",), "flac": ("FLAC",), "ogg": ("OGG",)}  # libsndfile's

LOG = logging.getLogger(__name__)


def decode_audio(audio: AudioInput, sample_rate: int, max_seconds: float | None,
                 warnings: list[ReplyWarning] | None = None) -> np.ndarray:
    """The part's audio as mono float32 at ``sample_rate``; a 400 naming the part for a file that
    is unreadable, empty, non-finite or longer than ``max_seconds`` (checked from the header).
    A clip with no sound in it (every sample 0, or channels that cancel in the mono mix), of float samples
    over ±2 (read as they are), or whose bytes are another format than the part's ``format`` (read as its
    bytes say), is logged and added to ``warnings`` (a ``silent_audio``, ``loud_audio`` or ``format_mismatch``
    :class:`ReplyWarning` naming the part)."""
    with tempfile.TemporaryDirectory(prefix="speechsum-audio-") as folder:
        path = Path(folder) / f"input.{audio.format}"
        path.write_bytes(audio.data)
        notes: list[str] = []  # silence, channels that cancel: logged naming the part, not the temporary file
        try:
            waveform = load_audio(str(path), sample_rate, max_seconds, too_long="error", notes=notes)
        except AudioTooLongError as error:  # from the header, or read up to the limit when it has no length
            length = "the audio exceeds" if error.seconds is None else f"{seconds_over(error.seconds, max_seconds)} s of audio exceed"
            raise bad_request(f"{audio.param}: {length} the limit of {max_seconds:g} s (the model's maximum or "
                              "--max-audio-seconds); send a shorter clip.", audio.param) from None
        except BadSampleError as error:  # before 2026-12-08 a NaN or a sample of 1e30 said nothing of what to do
            advice = ("The file is corrupt: re-export it and send that." if isinstance(error, NonFiniteAudioError) else
                      "Send float samples within [-1, 1]: normalise the clip, e.g. `sox --norm in.wav out.wav`.")
            raise bad_request(f"{audio.param}: the audio holds a {error.what} at frame {error.frame}. {advice}",
                              audio.param) from None
        except SampleRateError as error:  # it said "drop it from the manifest", of a request
            raise bad_request(f"{audio.param}: {_reason(without_manifest(error, 'send another recording'), path)}.",
                              audio.param) from None
        except EmptyAudioError:  # before 2026-12-08 nothing of what to do
            raise bad_request(f"{audio.param}: the audio has no samples at the model's {sample_rate} Hz (a file of 0 "
                              "frames, or of too few to make one sample there); send a recording.", audio.param) from None
        except UnreadableAudioError as error:  # a format libsndfile does not read, or a file it reads only a part of
            advice = "send WAV, MP3, FLAC or OGG audio" if error.formats or error.advice is None else error.advice
            raise bad_request(f"{audio.param}: not a readable {audio.format} file ({error.reason}); {advice}.",
                              audio.param) from None
        except (RuntimeError, OSError, ValueError) as error:
            raise bad_request(f"{audio.param}: not a readable {audio.format} file ({_reason(error, path)}).",
                              audio.param) from None
        mismatch = _format_mismatch(audio, _refuse_partial(path, audio, len(waveform) / sample_rate))
    if warnings is not None and mismatch is not None:
        LOG.warning("%s", mismatch.message)
        warnings.append(mismatch)
    for note in notes:
        message = note.replace(str(path), f"{audio.param} (a {audio.format} file)")
        LOG.warning("%s", message)
        if warnings is not None:
            warnings.append(ReplyWarning(LOUD_AUDIO if note.kind == LOUD else SILENT_AUDIO, audio.param, message))
    return waveform


def _refuse_partial(path: Path, audio: AudioInput, seconds: float) -> str:
    """A 400 naming the part when libsndfile reads only a part of its file (:func:`~speechsum.data.cut_short.damage`:
    cut short, a header that does not count all its samples, a page damaged inside): its first ``seconds``
    would be summarised as if they were the whole recording. Else the format libsndfile read it as ("WAV")."""
    with open_audio(str(path), whole=False) as handle:  # as load_audio opened it (a WAV with its fmt chunk last)
        found = damage(handle, str(path))  # with its bytes: an MP3 cut short, which only its frames show
        read_as = handle.format
    if found and not found.whole:  # whole: an MP3 whose length libsndfile misreads, read whole
        advice = ("re-export or re-fetch it and send that" if found.mid_stream else "send the whole file" if found.cut
                  else f"send it with a header that counts all of it ({REWRITE})")
        raise bad_request(f"{audio.param}: {found.what}; only its first {seconds:.2f} s are read: {advice}.", audio.param)
    return read_as


def _format_mismatch(audio: AudioInput, read_as: str) -> ReplyWarning | None:
    """A ``format_mismatch`` warning when the part's format (``input_audio.format``, or an ``audio_url``'s
    media type) is not what libsndfile read its bytes as, ``read_as``: read right, but labelled wrongly."""
    if read_as in FILE_FORMATS[audio.format]:
        return None
    field = f"{audio.param}.format" if audio.param.endswith("input_audio") else f"{audio.param}.url"
    return ReplyWarning(FORMAT_MISMATCH, field, f"{audio.param}: sent as {audio.format} ({field}), but the file is "
                                                f"{read_as} audio: it was read as {read_as}, as its bytes say; send "
                                                "the file's own format.")


def seconds_over(seconds: float, limit: float) -> str:
    """``seconds`` to two decimals, or to as many as show it over ``limit`` (1.0000625, not "1.00", over 1)."""
    for digits in range(2, 8):
        if float(text := f"{seconds:.{digits}f}") > limit:
            return text
    return f"{seconds!r}"


def _reason(error: Exception, path: Path) -> str:
    return str(error).replace(f"{path}: ", "").replace(str(path), "the file")


class SpeechBackend:
    """Serve a :class:`SpeechLLM` (exported directory or checkpoint) for chat completions with
    audio; ``max_audio_seconds`` caps a clip (lowered to the backbone's own maximum, if any)."""

    reads_audio = True

    def __init__(self, model: SpeechLLM, served_model_name: str,
                 max_audio_seconds: float | None = DEFAULT_MAX_AUDIO_SECONDS) -> None:
        if not getattr(model.processor, "reads_audio", True):
            raise ValueError("SpeechBackend serves speech students; a text LM is served as a causal LM directory")
        self.model = model.eval()
        self.model_name = served_model_name
        self.max_model_len = model.context_length()
        limits = [x for x in (max_audio_seconds, audio_limit(model)) if x is not None]
        self.max_audio_seconds = min(limits) if limits else None
        self._lock = threading.Lock()
        # one clip decoded at a time: its samples at its own rate (a 1.4 MB FLAC of 600 s at 655 kHz decodes to
        # 1.5 GB) fit memory once, not once per request waiting for the model (--max-waiting of them)
        self._decoding = threading.Lock()
        self._token_floor = TokenFloor(model.processor.tokenizer)

    def complete(self, requests: list[CompletionRequest]) -> list[CompletionOutput]:
        raise APIError(400, f"Model '{self.model_name}' is a speech model: use /v1/chat/completions with an "
                            "input_audio content part.", param="prompt")

    def chat(self, request: ChatRequest) -> ChatOutput:
        instruction = self._instruction(request)
        if request.top_logprobs is not None:
            raise bad_request("'logprobs' are not supported for audio requests.", "logprobs")
        warnings: list[ReplyWarning] = []
        with self._decoding:
            check_client(request.client_gone)  # it may have waited here for another request's decode
            waveform = decode_audio(request.audio[0], self.model.processor.sample_rate, self.max_audio_seconds, warnings)
            if request.stream is not None:
                request.stream.warn(warnings)
            # its features as well (~200 MB for 600 s): before 2026-12-07 every waiting request computed them at once
            prompt_tokens = self._prompt_tokens(waveform, instruction)
        sampling = request.sampling
        greedy = sampling.greedy
        max_tokens = min(sampling.max_tokens, DEFAULT_CHAT_TOKENS) if sampling.fit_to_context else sampling.max_tokens
        max_tokens = self._fit_context(waveform, instruction, prompt_tokens, max_tokens, sampling.fit_to_context,
                                       request.client_gone, sampling.max_tokens_field)
        settings = GenerationSettings(max_new_tokens=max_tokens, do_sample=not greedy,
                                      temperature=sampling.temperature or 1.0, top_p=sampling.top_p)
        rows = 1 if greedy else sampling.n
        with self._lock, torch.inference_mode(), torch.random.fork_rng(devices=self._devices()):
            check_client(request.client_gone)
            torch.manual_seed(sampling.rng_seed())
            out = summarize_waveforms(self.model, [waveform], [instruction], settings, num_return_sequences=rows,
                                      step_check=step_check(request, self.model.processor, sampling.n // rows))
        generations = [self._generation(out.texts[i], bool(out.truncated[i]), out.ids[i][out.mask[i].bool()].tolist(),
                                        sampling.stop) for i in range(rows)]
        return ChatOutput(prompt_tokens, generations if not greedy else generations * sampling.n, warnings)

    # ------------------------------------------------------------------------------------ internals
    def _instruction(self, request: ChatRequest) -> str:
        for index, message in enumerate(request.messages):
            if message["role"] != "user":
                raise bad_request(f"messages[{index}]: a speech student answers one user message (audio + instruction); "
                                  f"its prompt format is fixed in training, so '{message['role']}' messages are not "
                                  "supported.", f"messages[{index}].role")
        if not request.add_generation_prompt:
            raise bad_request("'add_generation_prompt': false is not supported by a speech student: its prompt format is "
                              "fixed in training.", "add_generation_prompt")
        if len(request.audio) > 1:  # the second part named, as the one to leave out
            raise bad_request(f"{request.audio[1].param}: a speech student reads one audio part per request, and this "
                              f"request holds {len(request.audio)}; send one clip per request.", request.audio[1].param)
        if len(request.messages) > 1:  # before 2026-12-07 neither message was named
            raise bad_request(f"messages[1]: a speech student answers one user message (its input_audio part, and the "
                              f"instruction as text parts), and this request has {len(request.messages)}; put the "
                              "input_audio part and the instruction in one message.", "messages[1]")
        if not request.audio:
            raise bad_request(f"messages[0].content: model '{self.model_name}' summarises audio, and this message has no "
                              "input_audio part; add one ({\"type\": \"input_audio\", \"input_audio\": {\"data\": "
                              "<base64 file>, \"format\": \"wav\"}}) beside the instruction's text.", "messages[0].content")
        instruction = or_default(request.messages[0]["content"])  # before, zero-width spaces alone were the prompt
        problem = instruction_problem(self.model, instruction)
        if problem:
            raise bad_request(f"messages[0]: the text part {problem}.", "messages[0].content")
        tokens = self._token_floor.at_least(instruction)  # far past the context: refused before it is tokenized
        if self.max_model_len is not None and tokens >= self.max_model_len:
            raise APIError(400, f"This model's maximum context length is {self.max_model_len} tokens; the instruction "
                                f"(the text parts: {len(instruction)} characters) takes at least {tokens}. Send a shorter "
                                "instruction.", param="messages", code="context_length_exceeded")
        return instruction

    def _fit_context(self, waveform: np.ndarray, instruction: str, prompt_tokens: int, max_tokens: int,
                     fit: bool, client_gone: Callable[[], bool], field: str = "max_tokens") -> int:
        """``max_tokens``, lowered to the room the prompt leaves in the LM's context when ``fit`` (no
        max_tokens asked for); a 400 when the prompt alone fills the context or ``max_tokens`` does not fit.
        ``prompt_tokens`` (the placeholders, an upper bound) spares the encoder pass that counts the
        positions a CTC-compressed prompt really takes, whenever it fits. That pass waits for the model: a
        request whose client left meanwhile (``client_gone``) is dropped before it. ``field``: the request field that
        asked for ``max_tokens``, which the error names."""
        if self.max_model_len is None or prompt_tokens + max_tokens <= self.max_model_len:
            return max_tokens
        with self._lock, torch.inference_mode():
            check_client(client_gone)
            positions = prompt_positions(self.model, waveform, instruction)
        room = self.max_model_len - positions
        if room <= 0 or (max_tokens > room and not fit):
            seconds = len(waveform) / self.model.processor.sample_rate
            asked = "" if fit else f" and the completion asks for {max_tokens}"
            raise APIError(400, f"This model's maximum context length is {self.max_model_len} tokens; the "
                                f"{seconds:.1f} s of audio and the instruction take {positions}{asked}. Send a "
                                "shorter clip or instruction" + ("." if fit else f", or lower {field}."),
                           param=field if room > 0 else "messages", code="context_length_exceeded")
        return min(max_tokens, room)

    def _devices(self) -> list[torch.device]:
        device = next(self.model.parameters()).device
        return [device] if device.type == "cuda" else []

    def _prompt_tokens(self, waveform: np.ndarray, instruction: str) -> int:
        return int(self.model.processor.encode_prompts([waveform], [instruction]).prompt_mask.sum())

    def _generation(self, text: str, truncated: bool, ids: list[int], stops: list[str]) -> Generation:
        """One response (``ids``: its tokens, a final stop token included) cut at the first stop string."""
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            return Generation(text[:cut], "stop", None, self._tokens_for(ids, cut))
        return Generation(text, "length" if truncated else "stop", None, len(ids))

    def _tokens_for(self, ids: list[int], chars: int) -> int:
        """How many of ``ids`` it takes to decode to ``chars`` characters: the completion tokens of a
        response a stop string cut there (as the text backend counts them: the tokens up to the cut)."""
        decode = self.model.processor.decode_responses
        low, high = 0, len(ids)
        while low < high:  # the decoded prefix grows with the tokens it holds
            middle = (low + high) // 2
            prefix = torch.tensor([ids[:middle]], dtype=torch.long)
            if len(decode(prefix, torch.ones_like(prefix))[0]) >= chars:
                high = middle
            else:
                low = middle + 1
        return low


def step_check(request: ChatRequest, processor: SpeechProcessor, fan_out: int) -> Callable[[Tensor], Tensor | None]:
    """A generation's step check (:class:`~speechsum.models.sampling.StepCheck`): raises :class:`ClientGone`
    once the request's client has closed its connection (a Ctrl-C mid-stream, a client timeout: before 2026-12-07
    the answer was generated to ``max_tokens`` for nobody while the requests behind it waited); sends each row's
    text so far to the request's stream (``fan_out`` choices per row: greedy n > 1); ends the rows whose text holds
    one of the request's stop strings (before 2026-12-07 they were generated to ``max_tokens``, then cut)."""
    stops, stream = request.sampling.stop, request.stream

    def check(new: Tensor) -> Tensor | None:
        if request.client_gone():
            raise ClientGone("the client closed its connection while its answer was generated",
                             f"while its answer was generated; stopped after {new.shape[1]} tokens")
        if not stops and stream is None:
            return None
        texts = processor.decode_responses(new, mask_after_stop(new, processor.stop_token_ids))
        if stream is not None:
            for row, text in enumerate(texts):
                for index in range(row * fan_out, (row + 1) * fan_out):
                    stream.text(index, text)
        return torch.tensor([any(s in text for s in stops) for text in texts], dtype=torch.bool)

    return check
