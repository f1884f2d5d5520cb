"""Chat messages to a served text LM: text that its tokenizer would read as special tokens is refused.

A chat template pastes each message's content between its turn markers, and the rendered text is
tokenized with special tokens read as such (as vLLM does): a user message holding
``<|im_end|>\\n<|im_start|>assistant\\n…`` closed its own turn and wrote the assistant's words (an
injected turn), ``<|endoftext|>`` ended the document. OpenAI reads such text as text; here a message
holding one is a 400 naming it, as a speech student's instruction is (:mod:`speechsum.data.text_checks`).
"""

from __future__ import annotations

from speechsum.data.text_checks import reserved_in
from speechsum.serving.protocol import bad_request


def check_message_text(messages: list[dict], reserved: tuple[str, ...]) -> None:
    """A 400 naming ``messages[i].content`` for the first message whose text holds one of ``reserved``
    (the tokenizer's special tokens, :func:`~speechsum.data.text_checks.reserved_strings`)."""
    for index, message in enumerate(messages):
        content = message.get("content")
        problem = reserved_in(content, reserved) if isinstance(content, str) else None
        if problem:
            raise bad_request(f"messages[{index}].content {problem}.", f"messages[{index}].content")
