"""Keys are masked in endpoint messages; a short key (``x``, ``dummy``: local servers take anything)
only where it stands alone, so the message stays readable ("E***pecting value" before)."""

from __future__ import annotations

import pytest

from speechsum.utils import remote


@pytest.mark.parametrize("keys, text, shown", [
    ({"x"}, "the reply body is not JSON (JSONDecodeError: Expecting value: line 1 column 1 (char 0))",
     "the reply body is not JSON (JSONDecodeError: Expecting value: line 1 column 1 (char 0))"),
    ({"x"}, "Incorrect API key provided: x. Bearer x", "Incorrect API key provided: ***. Bearer ***"),
    ({"dummy"}, "key 'dummy' refused; dummy_model ok", "key '***' refused; dummy_model ok"),
    ({"sk-abcdefgh123"}, "Bearer sk-abcdefgh123xyz", "Bearer ***xyz"),  # a long key: wherever it is
    ({"sk-abc", "sk-abcdefgh123"}, "key sk-abcdefgh123 and sk-abc", "key *** and ***"),
])
def test_keys_are_masked_and_short_ones_only_as_whole_words(monkeypatch, keys, text, shown):
    monkeypatch.setattr(remote, "KEYS_IN_USE", set(keys))
    assert remote.without_keys(text) == shown
