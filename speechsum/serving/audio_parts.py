"""The audio content parts of a ``speechsum serve`` chat message → :class:`AudioInput`: OpenAI's
``input_audio`` (base64 ``data`` + ``format``) and vLLM's ``audio_url`` holding a ``data:`` URL
(``data:audio/wav;base64,…``, the format read from its media type). Sizes are checked from the
base64 length before decoding (413 above the server's ``--max-audio-bytes``)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable

from speechsum.data.not_audio import HEAD_BYTES, audio_format
from speechsum.serving.protocol import APIError, AudioInput, bad_request, sent_value
from speechsum.serving.request_fields import check_part_fields
from speechsum.utils.replies import json_type

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")  # OpenAI's input_audio takes wav and mp3
MEDIA_TYPES = {  # a data: URL's media type → the format libsndfile reads it as
    "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/vnd.wave": "wav",
    "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/mpeg3": "mp3", "audio/x-mpeg-3": "mp3",
    "audio/flac": "flac", "audio/x-flac": "flac", "audio/ogg": "ogg", "application/ogg": "ogg", "audio/opus": "ogg",
}

GENERIC_MEDIA_TYPES = ("application/octet-stream", "")  # bytes of no stated type: the format is sniffed
SNIFFED_FORMATS = {"WAV": "wav", "RF64": "wav", "BW64": "wav", "W64": "wav", "MP3": "mp3", "FLAC": "flac", "Ogg": "ogg"}


# labels of a format read here under another name (a media subtype, a file extension, OpenAI's output "opus":
# Ogg Opus), and of headerless PCM (OpenAI's realtime pcm16: 16-bit mono at 24 kHz), whose rate no file tells
FORMAT_ALIASES = {"wave": "wav", "x-wav": "wav", "vnd.wave": "wav", "mpeg": "mp3", "mpga": "mp3", "mpeg3": "mp3",
                  "x-mpeg-3": "mp3", "x-mp3": "mp3", "x-flac": "flac", "oga": "ogg", "x-ogg": "ogg", "opus": "ogg"}
HEADERLESS_PCM = ("pcm", "pcm16", "s16le", "l16", "raw")
FORMAT_TITLES = {"wav": "WAV", "mp3": "MP3", "flac": "FLAC", "ogg": "Ogg"}


def _convert_advice(kind: object, named: Callable[[str], str] = lambda fmt: f"\"{fmt}\"") -> str:
    """What to do with audio of a format this server does not read (``kind``: the part's format, or the
    subtype of an audio_url's media type): a case variant is told the lower-case name, another name of a
    format read here (``x-wav``, ``mpeg``, ``audio/wav``, ``.wav``, ``opus``) the one to send (``named``: how
    the caller's field writes it; before 2026-12-07 "convert it first, e.g. `ffmpeg -i clip.wav clip.wav`"),
    headerless PCM how to give it a header, another format how to convert it (a browser's MediaRecorder
    gives webm, a phone m4a)."""
    if not isinstance(kind, str) or not kind.strip():
        return ""
    if kind.lower() in AUDIO_FORMATS:
        return f"; formats are lower-case: \"{kind.lower()}\""
    label = kind.strip().lower().removeprefix("audio/").removeprefix(".")
    read = label if label in AUDIO_FORMATS else FORMAT_ALIASES.get(label)
    if read:
        return f"; {json.dumps(kind)} names {FORMAT_TITLES[read]} audio, which is read here: send {named(read)}"
    if label in HEADERLESS_PCM:
        return ("; headerless PCM does not say its rate or sample format: give it a WAV header first, e.g. "
                f"`ffmpeg -f s16le -ar 24000 -ac 1 -i clip.{label} clip.wav` (its own rate: OpenAI's pcm16 is 24 kHz)")
    extension = label.rsplit("-", 1)[-1]  # a media subtype's x-m4a: m4a
    if not (extension.isascii() and extension.isalnum() and len(extension) <= 8):
        return "; convert the file to WAV first (e.g. with ffmpeg)"
    return f": {extension} audio is not read here; convert it first, e.g. `ffmpeg -i clip.{extension} clip.wav`"


def _media_type(fmt: str) -> str:
    """How a data: URL names a format read here: ``mp3`` → ``audio/mpeg``."""
    return "audio/" + {"mp3": "mpeg"}.get(fmt, fmt)


def _reads_audio(param: str, max_audio_bytes: int) -> None:
    if not max_audio_bytes:
        raise bad_request(f"{param}: this model does not read audio; serve a speech student exported with "
                          "`speechsum export` to send input_audio.", param)


def base64_problem(sent: str, start: int = 0) -> str | None:
    """What makes ``sent`` (base64 text, white space allowed) not standard base64, with where: the first
    character outside the +/ alphabet (URL-safe base64's -_ told so), data after '=' padding, or a length
    that is no multiple of 4 (cut short); ``start``: where ``sent`` begins in its field. None: none of those."""
    data, padding, pads = 0, None, 0  # base64 characters so far; where the padding began; its '=' characters
    for offset, char in enumerate(sent, start):
        if char.isspace() and char.isascii():
            continue
        if char == "=":
            padding, pads = offset if padding is None else padding, pads + 1
            continue
        if not (char.isascii() and (char.isalnum() or char in "+/")):
            kind = " (URL-safe base64: encode with + and / instead of - and _)" if char in "-_" else ""
            return f"character {json.dumps(char, ensure_ascii=False)} at position {offset} (from 0) is not a base64 character{kind}"
        if padding is not None:
            return (f"the '=' padding at position {padding} is followed by more data at position {offset} (two "
                    "encodings joined, or '=' inside the text): send one file's base64")
        data += 1
    if padding is not None and data == 0:
        return f"it holds only '=' padding (from position {padding}), no data"
    if (data % 4 == 1) or (padding is None and data % 4):
        return (f"its {data} base64 characters, white space not counted, are not a multiple of 4: it is cut short, "
                "or its '=' padding is missing")
    if (data + pads) % 4:
        return f"its {data} base64 characters take {-data % 4} '=' of padding, not {pads}"
    return None


def _decode(encoded: str, param: str, field: str, max_audio_bytes: int, sent: str = "", start: int = 0) -> bytes:
    """Base64 ``encoded`` (whitespace removed) → the file's bytes; 413 above the limit (from its
    length, before decoding), 400 when it is not standard base64 (naming where, in ``sent``: the text
    as sent, from position ``start`` of the field) or empty."""
    size = len(encoded) * 3 // 4 - encoded[-2:].count("=")  # the file's bytes: one under the limit is under it
    if size > max_audio_bytes:
        raise APIError(413, f"{param}: about {size} bytes of audio exceed this server's limit of "
                            f"{max_audio_bytes} bytes (--max-audio-bytes).", param=param, code="audio_too_large")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as error:  # ValueError: a character outside ASCII
        problem = base64_problem(sent or encoded, start) or str(error)  # before 2026-12-07 binascii's words, no position
        raise bad_request(f"{field} is not valid standard base64 ({problem}): encode the file's bytes with the "
                          "+/ alphabet and = padding, e.g. `base64 -w0 clip.wav`.", field) from None
    if not data:  # before 2026-12-08 "is empty." (of a data: URL, which is not), with nothing of what to send
        raise bad_request(f"{field} holds no audio: its base64 data is empty; send the audio file's bytes in base64, "
                          "e.g. `base64 -w0 clip.wav`.", field)
    return data


def input_audio_part(part: dict, index: int, position: int, max_audio_bytes: int) -> AudioInput:
    """An ``input_audio`` part of ``messages[index].content[position]`` → :class:`AudioInput`."""
    param = f"messages[{index}].content[{position}].input_audio"
    _reads_audio(param, max_audio_bytes)
    audio = part.get("input_audio")
    if not isinstance(audio, dict) or audio.get("data") is None:
        raise bad_request(f"{param} must be an object with 'data' (base64 audio file) and 'format'.", param)
    if not isinstance(audio["data"], str):
        raise bad_request(f"{param}.data must be a string (the file's bytes in base64, e.g. `base64 -w0 clip.wav`), got "
                          f"{json_type(audio['data'])}.", f"{param}.data")
    check_part_fields(audio, ("data", "format"), param, "an input_audio object")
    kind = audio.get("format")
    if kind not in AUDIO_FORMATS:
        raise bad_request(f"{param}.format must be one of {', '.join(AUDIO_FORMATS)} (the file's format); "
                          f"{sent_value(audio, 'format')}{_convert_advice(kind)}.", f"{param}.format")
    encoded = "".join(audio["data"].split())  # line breaks (what `base64` prints every 76 columns) and spaces carry no data
    if encoded[:5].lower() == "data:":
        raise bad_request(f"{param}.data must be bare base64 (the file's bytes), not a data: URL; drop the "
                          f"'{encoded[: min(encoded.find(',') + 1, 80)] or 'data:'}' prefix.", f"{param}.data")
    return AudioInput(_decode(encoded, param, f"{param}.data", max_audio_bytes, audio["data"]), kind, index, param)


def audio_url_part(part: dict, index: int, position: int, max_audio_bytes: int) -> AudioInput:
    """vLLM's ``{"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,…"}}`` part →
    :class:`AudioInput`; a URL to download (http, file) is a 400: this server reads audio inline only."""
    param = f"messages[{index}].content[{position}].audio_url"
    _reads_audio(param, max_audio_bytes)
    audio = part.get("audio_url")
    url = audio.get("url") if isinstance(audio, dict) else None
    if not isinstance(url, str):
        raise bad_request(f"{param} must be an object with 'url' (a data:audio/wav;base64,… URL of the file).", param)
    check_part_fields(audio, ("url",), param, "an audio_url object")
    url = url.strip()
    field = f"{param}.url"
    if url[:5].lower() != "data:":
        scheme = url.split(":", 1)[0][:20] if ":" in url else "no scheme"
        raise bad_request(f"{field}: this server does not download audio ({scheme} URL); send the file inline as a "
                          "data:audio/wav;base64,… URL or an input_audio part.", field)
    header, comma, payload = url[5:].partition(",")
    labels = [p.strip().lower() for p in header.split(";")]
    if not comma or "base64" not in labels[1:]:
        shown = url if len(url) <= 40 else url[:40] + "…"
        raise bad_request(f"{field} must be a base64 data: URL (data:audio/wav;base64,…), got '{shown}'.", field)
    kind = MEDIA_TYPES.get(labels[0])
    generic = labels[0] in GENERIC_MEDIA_TYPES
    if kind is None and not generic:
        subtype = labels[0].split("/", 1)[-1] if labels[0].startswith("audio/") else ""
        raise bad_request(f"{field}: media type {labels[0] or '(none)'!r} is not audio this server reads; use "
                          f"audio/wav, audio/mpeg, audio/flac or audio/ogg{_convert_advice(subtype, _media_type)}.", field)
    sent = audio["url"]
    data = _decode("".join(payload.split()), param, field, max_audio_bytes, sent[sent.find(",") + 1:], sent.find(",") + 1)
    if generic:  # a Blob without a type (a browser's readAsDataURL): the format its bytes show
        kind = SNIFFED_FORMATS.get(audio_format(data[:HEAD_BYTES]) or "")
        if kind is None:
            raise bad_request(f"{field}: media type {labels[0] or '(none)'!r} does not say the format, and the bytes are "
                              "not WAV, MP3, FLAC or OGG audio; send one of those as audio/wav, audio/mpeg, audio/flac "
                              "or audio/ogg.", field)
    return AudioInput(data, kind, index, param)
