"""The log-probs of ``speechsum serve``'s replies in OpenAI's and vLLM's shapes: legacy completions'
``logprobs``, vLLM's ``prompt_logprobs`` and chat completions' ``logprobs.content``."""

from __future__ import annotations

from speechsum.serving.protocol import TokenLogprob


def _token_name(token_id: int, text: str, as_ids: bool) -> str:
    return f"token_id:{token_id}" if as_ids else text


def legacy_logprobs(tokens: list[TokenLogprob], k: int, as_ids: bool) -> dict:
    """OpenAI legacy ``logprobs``: tokens, token_logprobs, top_logprobs (top-k ∪ the chosen token,
    None where the token has no log-prob) and text_offset (character offsets into the choice's text)."""
    names, values, tops, offsets = [], [], [], []
    offset = 0
    for token in tokens:
        names.append(_token_name(token.token_id, token.text, as_ids))
        values.append(token.logprob)
        offsets.append(offset)
        offset += len(token.text)
        if token.logprob is None:
            tops.append(None)
            continue
        top: dict[str, float] = {}
        for token_id, text, logprob in token.top[:k]:
            top.setdefault(_token_name(token_id, text, as_ids), logprob)
        top.setdefault(_token_name(token.token_id, token.text, as_ids), token.logprob)
        tops.append(top)
    return {"tokens": names, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def vllm_prompt_logprobs(tokens: list[TokenLogprob], k: int) -> list[dict | None]:
    """vLLM's ``prompt_logprobs``: per prompt token None (first) or {id: {logprob, rank, decoded_token}}
    for the top-k and the actual token."""
    rendered: list[dict | None] = []
    for token in tokens:
        if token.logprob is None:
            rendered.append(None)
            continue
        entry = {}
        for rank, (token_id, text, logprob) in enumerate(token.top[:k], start=1):
            entry[str(token_id)] = {"logprob": logprob, "rank": rank, "decoded_token": text}
        entry.setdefault(str(token.token_id), {"logprob": token.logprob, "rank": token.rank, "decoded_token": token.text})
        rendered.append(entry)
    return rendered


def chat_logprobs(tokens: list[TokenLogprob], k: int, as_ids: bool) -> dict:
    """OpenAI chat ``logprobs``: {"content": [{token, logprob, bytes, top_logprobs: k entries}], "refusal": None}."""

    def item(token_id: int, text: str, logprob: float) -> dict:
        return {"token": _token_name(token_id, text, as_ids), "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    content = [
        {**item(t.token_id, t.text, t.logprob), "top_logprobs": [item(*alt) for alt in t.top[:k]]} for t in tokens
    ]
    return {"content": content, "refusal": None}
