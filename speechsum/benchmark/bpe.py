"""The benchmark's shared tokenizer: a byte-level BPE trained on the train split's text.

Backbone and teacher LMs are trained from scratch with this one tokenizer, so their vocabularies
are identical token for token (on-policy KD scores the student's tokens with the teacher). It is
byte-level: any UTF-8 text encodes and decodes exactly, whatever the language, so it is trained
on training text only (transcripts, instructions, summaries of the train split, or of the text
corpus of ``speechsum benchmark textcorpus``: train split + text-only documents) and still reads
the cross-lingual test transcripts, just in more tokens; no test text leaks into it. The default
vocabulary (4096) exceeds the generator's word list, so every name, city and number is one token.

Special tokens (ids 0–4, in this order): ``<|endoftext|>`` (eos), ``<|pad|>`` (pad),
``<|im_start|>``, ``<|im_end|>`` (ChatML turns; the chat template is
:data:`speechsum.models.tokenizer.CHATML_TEMPLATE`) and ``<|audio|>`` (the composed speech model's
audio placeholder, present from the start so that adding it later changes nothing).

    speechsum benchmark tokenizer --data BENCH_OR_TEXT_CORPUS_DIR --out DIR [--vocab-size N]
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from speechsum.models.tokenizer import AUDIO_TOKEN, BYTE_TOKENIZER_SPECIALS, CHATML_TEMPLATE
from speechsum.utils.arguments import at_least
from speechsum.utils.io import check_not_a_file, check_replaceable_folder, jsonl_lines, write_dir_atomically
from speechsum.utils.repeated_options import OnceParser

SPECIAL_TOKENS = (*BYTE_TOKENIZER_SPECIALS, AUDIO_TOKEN)  # endoftext, pad, im_start, im_end, audio
TEXT_FIELDS = ("transcript", "instruction", "summary")
DEFAULT_VOCAB_SIZE = 4096  # ≥ the whole word list of the generator: every name, city, number is one token


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, out_dir: str | Path | None = None
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of at most ``vocab_size`` tokens (256 bytes + specials + merges).

    Returns a ``PreTrainedTokenizerFast`` with eos ``<|endoftext|>``, pad ``<|pad|>``, the other
    specials and the ChatML chat template; when ``out_dir`` is given it is also saved there
    (``save_pretrained``, written to a temporary sibling then renamed) and reloads with
    ``AutoTokenizer.from_pretrained(out_dir)``. Deterministic for the same texts in the same order.
    """
    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be at least {minimum} (256 bytes + {len(SPECIAL_TOKENS)} specials)")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=SPECIAL_TOKENS[0],
        pad_token=SPECIAL_TOKENS[1],
        extra_special_tokens=list(SPECIAL_TOKENS[2:]),
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    if out_dir is not None:
        write_dir_atomically(out_dir, lambda tmp: tokenizer.save_pretrained(str(tmp)))
    return tokenizer


def manifest_texts(path: str | Path) -> list[str]:
    """The distinct transcript, instruction and summary strings of a JSONL manifest, in file order
    (a transcript shared by several instructions counts once). Bad lines raise ``path:line: …``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path} (build the benchmark first: speechsum benchmark build)")
    seen: dict[str, None] = {}
    for number, line in jsonl_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: invalid JSON: {err.msg} (column {err.colno})") from err
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
        for name in TEXT_FIELDS:
            value = record.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{path}:{number}: field '{name}' must be a string")
            if value:
                seen.setdefault(value)
    if not seen:
        raise ValueError(f"{path}: no transcript, instruction or summary text to train a tokenizer on")
    return list(seen)


def main(argv: list[str] | None = None) -> None:
    parser = OnceParser(
        prog="speechsum benchmark tokenizer",
        description="Train the benchmark's shared byte-level BPE tokenizer on the train split's "
        "transcripts, instructions and summaries, and save it as a Hugging Face tokenizer directory.",
    )
    parser.add_argument("--data", required=True, help="benchmark directory holding train.jsonl")
    parser.add_argument("--out", required=True, help="output directory: new, empty, or an earlier tokenizer (replaced whole); a folder holding "
                        "anything else is refused")
    parser.add_argument(
        "--vocab-size",
        type=at_least(256 + len(SPECIAL_TOKENS)),  # checked before the train split is read
        default=DEFAULT_VOCAB_SIZE,
        help=f"largest vocabulary: 256 bytes + 5 specials + merges (default {DEFAULT_VOCAB_SIZE})",
    )
    args = parser.parse_args(argv)
    check_replaceable_folder(args.out, "--out", "tokenizer.json", "tokenizer")
    check_not_a_file(args.data, "--data", "train.jsonl")
    texts = manifest_texts(Path(args.data) / "train.jsonl")
    tokenizer = train_bpe_tokenizer(texts, args.vocab_size, args.out)
    sample = texts[0]
    ratio = len(sample.encode("utf-8")) / max(1, len(tokenizer(sample)["input_ids"]))
    print(f"tokenizer: {len(tokenizer)} tokens from {len(texts)} texts → {args.out} ({ratio:.1f} bytes/token)")
