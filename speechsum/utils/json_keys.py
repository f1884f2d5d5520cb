"""JSON objects that name a key twice: ``json.loads`` keeps the last value without a word, so readers of
data and requests (manifest lines, ``speechsum serve`` bodies) refuse them with this hook."""

from __future__ import annotations


class RepeatedKeyError(ValueError):
    """A JSON object names ``key`` twice: ``first`` and ``then`` are its two values."""

    def __init__(self, key: str, first: object, then: object):
        self.key, self.first, self.then = key, first, then
        super().__init__(f"key {key!r} given twice in one object")


def object_without_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    """``json.loads``' ``object_pairs_hook``: the object, or :class:`RepeatedKeyError` for a key given twice."""
    value: dict = {}
    for key, item in pairs:
        if key in value:
            raise RepeatedKeyError(key, value[key], item)
        value[key] = item
    return value
