"""Request and reply bodies of ``speechsum serve``: the JSON object a request holds (clear 400s and a
415 for a body that is not JSON by its ``Content-Type``) and the UTF-8 JSON of a reply."""

from __future__ import annotations

import json
import re
import sys
from email.message import Message

from speechsum.serving.protocol import APIError
from speechsum.utils.json_keys import RepeatedKeyError, object_without_repeated_keys
from speechsum.utils.replies import json_type

UTF16_LE_BOM, UTF16_BE_BOM = b"\xff\xfe", b"\xfe\xff"
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # a JSON escape in U+D800-U+DFFF (raw UTF-8 cannot hold one)


def check_content_type(header: str | None) -> None:
    """A 415 for a ``Content-Type`` that is not JSON (``application/json`` or ``application/*+json``,
    UTF-8): a form (curl's ``-d`` without ``-H``), text or a multipart upload. No header: read as JSON,
    as vLLM reads it."""
    if header is None or not header.strip():
        return
    parsed = Message()
    parsed["Content-Type"] = header
    subtype = parsed.get_content_subtype()
    charset = (parsed.get_param("charset") or "utf-8").lower()
    if parsed.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json")):
        if charset.replace("-", "").replace("_", "") == "utf8":
            return
        raise APIError(415, f"Content-Type {header.strip()!r}: the body must be UTF-8 JSON; send it as UTF-8 with "
                            "'Content-Type: application/json'.", code="unsupported_media_type")
    curl = " (curl: -H 'Content-Type: application/json'; its -d alone sends a form)" \
        if parsed.get_content_type() == "application/x-www-form-urlencoded" else ""
    raise APIError(415, f"Content-Type {header.strip()!r} is not JSON: send the request as a JSON object with "
                        f"'Content-Type: application/json'{curl}.", code="unsupported_media_type")


def json_object(body: bytes) -> dict:
    """The JSON object of a request body (UTF-8, a leading byte-order mark allowed); a 400 saying
    what is wrong with it otherwise."""
    if not body:
        raise APIError(400, "Empty request body: send a JSON object.")
    if (utf16 := _utf16(body)) is not None:  # PowerShell 5's Out-File / -Encoding Unicode, Notepad's "Unicode"
        raise APIError(400, f"Request body is UTF-16 ({utf16}), not UTF-8: send it as UTF-8 JSON (PowerShell: "
                            "-Encoding utf8; a file saved as 'Unicode': save it as UTF-8).")
    try:
        value = json.loads(body.decode("utf-8-sig"), object_pairs_hook=object_without_repeated_keys)  # -sig: a BOM (PowerShell, Notepad files) as json.loads(bytes)
        if SURROGATE_ESCAPE.search(body):  # maybe unpaired: a str no tokenizer or reply could encode
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeDecodeError as error:
        raise APIError(400, f"Request body is not UTF-8: {error}.") from None
    except RepeatedKeyError as error:
        raise APIError(400, f"Request body gives the key {error.key!r} twice in one object: a JSON parser keeps one "
                            "of the two silently; send it once.", param=error.key) from None
    except json.JSONDecodeError as error:
        raise APIError(400, f"Request body is not valid JSON: {error.msg} at line {error.lineno} "
                            f"column {error.colno}.") from None
    except UnicodeEncodeError as error:
        raise APIError(400, f"Request body holds a lone UTF-16 surrogate ({error.object[error.start]!r}, an "
                            "unpaired \\uD800-\\uDFFF escape): not valid Unicode text.") from None
    except RecursionError:
        raise APIError(400, "Request body is nested deeper than this server parses.") from None
    except ValueError:  # an integer literal longer than Python converts
        raise APIError(400, "Request body holds a number with more digits than this server reads "
                            f"({sys.get_int_max_str_digits()}).") from None
    if not isinstance(value, dict):
        raise APIError(400, f"Request body must be a JSON object, got {json_type(value)}.")
    return value


def _utf16(body: bytes) -> str | None:
    """How ``body`` shows it is UTF-16 JSON ("a little-endian byte-order mark", "a 0 byte after each
    ASCII character"), or None."""
    if body[:2] in (UTF16_LE_BOM, UTF16_BE_BOM):
        return f"a {'little' if body[:2] == UTF16_LE_BOM else 'big'}-endian byte-order mark"
    head = body[:64]
    if len(head) >= 4 and (not any(head[1::2]) or not any(head[0::2])) and any(head):
        return "a 0 byte beside each ASCII character"
    return None


def json_bytes(payload: dict) -> bytes:
    """``payload`` as UTF-8 JSON (NaN refused); a lone surrogate echoed from a request is escaped."""
    try:
        return json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate echoed from a request: escape it, send valid JSON
        return json.dumps(payload, ensure_ascii=True, allow_nan=False).encode("ascii")
