"""The benchmark's shared byte-level BPE tokenizer."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from speechsum.benchmark.bpe import SPECIAL_TOKENS, main, manifest_texts, train_bpe_tokenizer
from speechsum.models.text_prompt import text_messages
from speechsum.models.tokenizer import CHATML_TEMPLATE

CORPUS = [
    "Maria Lopez: Good morning everyone, let's start with the budget.",
    "Tom Becker: We decided to move the launch to the 14th of March in Lisbon.",
    "- Maria will send the report by Friday.\n- Budget: 45,000 euros.",
    "Summarise the meeting in one sentence.",
] * 20


def test_specials_template_and_round_trip(tmp_path):
    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=400, out_dir=tmp_path / "tok")
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(5)] == list(SPECIAL_TOKENS)
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token == "<|pad|>"
    assert 256 + 5 < len(tokenizer) <= 400  # merges were learned
    texts = ["Maria Lopez decided: budget 45,000 euros.\n- Tom", "Ça coûte 12 € à Zürich — 東京 ✓", "  two  spaces\t"]
    for text in texts:  # byte-level: every string round-trips, also unseen scripts
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    # learned merges make the training text shorter than its bytes
    assert len(tokenizer(CORPUS[1])["input_ids"]) < len(CORPUS[1].encode()) / 2

    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded.chat_template == CHATML_TEMPLATE
    messages = text_messages("Summarise.", "Maria: hi")
    text = reloaded.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nTranscript:\nMaria: hi\n\nSummarise.<|im_end|>\n<|im_start|>assistant\n"
    ids = reloaded.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    assert ids[0] == reloaded.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(reloaded.convert_tokens_to_ids("<|im_end|>")) == 1  # a special is one token
    assert reloaded("<|audio|>", add_special_tokens=False)["input_ids"] == [4]


def test_deterministic_and_too_small_vocab(tmp_path):
    a = train_bpe_tokenizer(CORPUS, vocab_size=350)
    b = train_bpe_tokenizer(CORPUS, vocab_size=350)
    assert a.get_vocab() == b.get_vocab()
    with pytest.raises(ValueError, match="at least 261"):
        train_bpe_tokenizer(CORPUS, vocab_size=100)


def test_cli_trains_on_the_train_split_only(tmp_path, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    rows = [{"id": f"x{i}", "audio": "a.wav", "instruction": "Summarise the call.", "summary": "Ana pays.",
             "transcript": f"Ana: I will pay the invoice {i} tomorrow."} for i in range(30)]
    (bench / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (bench / "test.jsonl").write_text(json.dumps({**rows[0], "transcript": "zqxj zqxj zqxj " * 50}) + "\n")
    texts = manifest_texts(bench / "train.jsonl")  # distinct strings, file order
    assert texts[:4] == [rows[0]["transcript"], rows[0]["instruction"], "Ana pays.", rows[1]["transcript"]]
    assert len(texts) == 32
    main(["--data", str(bench), "--out", str(tmp_path / "tok"), "--vocab-size", "300"])
    assert "tokens from 32 texts" in capsys.readouterr().out
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert "zqxj" not in {t.lstrip("Ġ") for t in tokenizer.get_vocab()}  # test text never seen
    assert len(tokenizer(" invoice")["input_ids"]) <= 2

    (bench / "train.jsonl").write_text(json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"train.jsonl:2: invalid JSON"):
        main(["--data", str(bench), "--out", str(tmp_path / "tok2")])
    assert not (tmp_path / "tok2").exists()


def test_cli_never_replaces_a_file_or_a_folder_it_did_not_write(tmp_path, capsys):
    """``--out`` was "replaced whole if it exists": a file given by mistake became a tokenizer
    folder (the file gone) and ``--out ~`` would have deleted the home folder."""
    from speechsum.cli import main as speechsum

    bench = tmp_path / "bench"
    bench.mkdir()
    rows = [{"id": f"x{i}", "audio": "a.wav", "instruction": "Sum up.", "summary": "Ana pays.",
             "transcript": f"Ana: I pay invoice {i}."} for i in range(5)]
    (bench / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    notes, mine = tmp_path / "notes.txt", tmp_path / "mine"
    notes.write_text("keep me")
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me too")
    for out, message in ((notes, f"--out {notes} is a file: give a folder"),
                         (mine, f"--out {mine} is a folder that holds other files (no tokenizer.json: not an earlier "
                                "tokenizer, which would be replaced): give a new or empty folder")):
        with pytest.raises(SystemExit) as stop:
            speechsum(["benchmark", "tokenizer", "--data", str(bench), "--out", str(out), "--vocab-size", "300"])
        assert stop.value.code == 2
        assert f"speechsum benchmark: error: {message}\n" in capsys.readouterr().err
    assert notes.read_text() == "keep me" and (mine / "thesis.tex").read_text() == "keep me too"
    for _ in range(2):  # an earlier tokenizer is replaced
        main(["--data", str(bench), "--out", str(tmp_path / "tok"), "--vocab-size", "300"])
    assert (tmp_path / "tok" / "tokenizer.json").is_file()


def test_a_vocab_size_below_the_bytes_and_specials_is_a_usage_error_before_the_data_is_read(tmp_path, capsys):
    """Before: refused as 'vocab_size must be at least 261' only after the train split was read."""
    with pytest.raises(SystemExit) as stop:
        main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "tok"), "--vocab-size", "10"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(f"error: argument --vocab-size: must be at least {256 + len(SPECIAL_TOKENS)}, "
                                            "got 10\n")


@pytest.mark.parametrize("command", ["tokenizer", "textcorpus"])
def test_a_data_that_is_the_manifest_file_names_its_folder(tmp_path, capsys, command):
    """``--data BENCH/train.jsonl`` (the manifest, not its folder) was 'BENCH/train.jsonl/train.jsonl not found'."""
    from speechsum.cli import main as speechsum

    manifest = tmp_path / "bench" / "train.jsonl"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"id": "x", "audio": "a.wav", "transcript": "Ana: I pay."}) + "\n")
    with pytest.raises(SystemExit) as stop:
        speechsum(["benchmark", command, "--data", str(manifest), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    prefix = "speechsum benchmark: error:" if command == "tokenizer" else "speechsum benchmark textcorpus: error:"
    assert capsys.readouterr().err.splitlines()[-2 if command == "tokenizer" else -1] == (
        f"{prefix} --data {manifest} is a file: give the folder that holds train.jsonl ({manifest.parent})")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]
