"""The fewest tokens a text can take, without tokenizing it: a prompt far past the context is refused
at once (an 8 MB instruction took 17 s to tokenize before its 400, holding the model's lock).

A BPE token covers at most as many characters as its longest vocabulary entry (``L``: byte-level
entries stand for one byte each, SentencePiece's ``▁`` for one space), so a text of ``c`` characters
after the tokenizer's normalizer takes at least ``ceil(c / L)`` tokens. Whitespace is not counted
(a pre-tokenizer may drop it). Where no such bound holds (WordPiece and Unigram map a long unknown word
to one token, as BPE does with ``fuse_unk`` and no byte fallback; a pre-tokenizer that drops what it
splits on; a slow tokenizer) the floor is 0 and the text is tokenized as before.
"""

from __future__ import annotations

from tokenizers.models import BPE


class TokenFloor:
    """``at_least(text)``: a lower bound on the tokens ``tokenizer`` encodes ``text`` into."""

    def __init__(self, tokenizer: object) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        model = getattr(backend, "model", None)
        unknown_runs = isinstance(model, BPE) and model.unk_token and model.fuse_unk and not model.byte_fallback
        splits = repr(getattr(backend, "pre_tokenizer", None))  # one that drops what it splits on drops text
        drops_text = "behavior=Removed" in splits or "CharDelimiterSplit" in splits
        vocab = tokenizer.get_vocab() if isinstance(model, BPE) and not unknown_runs and not drops_text else {}
        self.chars_per_token = max((len(piece) for piece in vocab), default=0)  # 0: no bound
        self.normalizer = backend.normalizer if vocab else None

    def at_least(self, text: str) -> int:
        if not self.chars_per_token:
            return 0
        if self.normalizer is not None:
            text = self.normalizer.normalize_str(text)
        visible = sum(len(word) for word in text.split())  # Unicode whitespace, which a pre-tokenizer may drop
        return -(-visible // self.chars_per_token)
