"""The text LMs' corpus: the benchmark's world, and the unseen-phrasing / cross-lingual shares."""

import json
import shutil

import pytest

from speechsum.benchmark import lexicon
from speechsum.benchmark.documents import generate_document
from speechsum.benchmark.text_corpus import (
    benchmark_world,
    document_kind,
    is_unlabeled,
    text_records,
    write_text_corpus,
)


def _bench_in_world(toy_data, tmp_path, world):
    bench = tmp_path / "bench"
    shutil.copytree(toy_data["train"].parent, bench)
    (bench / "benchmark.json").write_text(json.dumps({"version": "1.0", "world": world}))
    return bench


def _names(records):
    return {name for r in records for name in r["meta"]["speakers"]}


def test_the_corpus_is_written_in_the_benchmarks_world(toy_data, tmp_path):
    compact = lexicon.WORLDS["compact"]
    bench = _bench_in_world(toy_data, tmp_path, "compact")
    assert benchmark_world(bench) == "compact"
    out = write_text_corpus(bench, tmp_path / "corpus", documents=20, seed=3)
    extra = [json.loads(line) for line in (out / "train.jsonl").open() if '"lmtext-' in line]
    assert len(extra) == 20
    firsts = {n.split()[0] for n in _names(extra)}
    assert firsts <= set(compact.first_names)
    # the same draws in the full world use names the compact world does not have
    full = text_records(20, 1, 3, "x.wav", world="full")
    assert {n.split()[0] for n in _names(full)} - set(compact.first_names)


def test_a_benchmark_without_summary_is_the_full_world_and_a_bad_world_is_named(toy_data, tmp_path):
    assert benchmark_world(toy_data["train"].parent) == "full"
    bench = _bench_in_world(toy_data, tmp_path, "moon")
    with pytest.raises(ValueError, match=r"benchmark.json: field 'world' is 'moon'"):
        write_text_corpus(bench, tmp_path / "corpus", documents=2)
    assert not (tmp_path / "corpus").exists()


def test_shares_draw_unseen_phrasing_and_spanish_german_documents():
    kinds = [document_kind(1, index, unseen_share=0.25, xling_share=0.25) for index in range(2000)]
    xling = [lang for lang, _ in kinds if lang != "en"]
    unseen = [u for lang, u in kinds if lang == "en" and u]
    assert set(xling) == {"es", "de"}
    assert 0.22 < len(xling) / 2000 < 0.28 and 0.22 < len(unseen) / 2000 < 0.28
    assert all(kind == ("en", False) for kind in (document_kind(1, i, 0.0, 0.0) for i in range(200)))

    records = text_records(40, 1, 1, "x.wav", world="compact", unseen_share=0.5, xling_share=0.5)
    by_lang = {r["lang"] for r in records}
    assert by_lang == {"en", "es", "de"}
    for index, record in enumerate(records):
        lang, unseen = document_kind(1, index, 0.5, 0.5)
        assert record["lang"] == lang and record["meta"]["split"] == "train"
        doc = generate_document(f"lmtext-{index:06d}", "train", 1, record["meta"]["genre"], lang, unseen=unseen,
                                world="compact")
        assert record["transcript"] == doc.transcript()
        if lang != "en":
            assert record["meta"]["transcript_en"] and record["summary"].isascii()


def test_unlabeled_documents_read_as_the_audio_says_them():
    labeled = text_records(60, 2, 1, "x.wav", world="compact", unseen_share=0.2, xling_share=0.3)
    records = text_records(60, 2, 1, "x.wav", world="compact", unseen_share=0.2, xling_share=0.3,
                           unlabeled_share=0.5)
    assert len(records) == len(labeled) == 120
    unlabeled = 0
    for index, (plain, original) in enumerate(zip(records, labeled)):
        # the same document, instruction and summary: only the transcript's form differs
        assert {k: v for k, v in plain.items() if k not in ("transcript", "meta")} == \
               {k: v for k, v in original.items() if k not in ("transcript", "meta")}
        if is_unlabeled(1, index // 2, 0.5):
            unlabeled += 1
            assert plain["meta"]["unlabeled"] is True
            assert "\n" not in plain["transcript"]
            assert not any(f"{name}:" in plain["transcript"] for name in plain["meta"]["speakers"])
            # the turns' own words, in order, joined by single spaces
            turns = [line.split(": ", 1)[1] for line in original["transcript"].splitlines()]
            assert plain["transcript"] == " ".join(turns)
        else:
            assert plain == original
    assert 30 < unlabeled < 90  # about half of 120 records, drawn per document (both instructions alike)
    assert not any(is_unlabeled(1, index, 0.0) for index in range(500))
    assert all(is_unlabeled(1, index, 1.0) for index in range(500))


@pytest.mark.parametrize(("unseen", "xling", "message"), [
    (-0.1, 0.0, r"unseen_share must be in \[0, 1\]"),
    (0.0, 1.5, r"xling_share must be in \[0, 1\]"),
    (0.6, 0.6, r"unseen_share \+ xling_share must be <= 1"),
])
def test_bad_shares_are_refused(unseen, xling, message):
    with pytest.raises(ValueError, match=message):
        text_records(1, 1, 1, "x.wav", unseen_share=unseen, xling_share=xling)


def test_a_bad_unlabeled_share_is_refused():
    with pytest.raises(ValueError, match=r"unlabeled_share must be in \[0, 1\]"):
        text_records(1, 1, 1, "x.wav", unlabeled_share=1.2)


def test_the_cli_refuses_bad_shares_with_a_usage_error(toy_data, tmp_path, capsys):
    from speechsum.benchmark.text_corpus import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(toy_data["train"].parent), "--out", str(tmp_path / "c"), "--xling-share", "2"])
    assert exit_info.value.code == 2
    # named by its option, before the train split is read (was 'xling_share must be in [0, 1]')
    assert "error: argument --xling-share: must be a share at least 0 and at most 1, got 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data", str(toy_data["train"].parent), "--out", str(tmp_path / "c"), "--unlabeled-share", "-1"])
    assert "argument --unlabeled-share: must be a share at least 0 and at most 1, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "c"), "--unseen-share", "nan"])
    assert "argument --unseen-share: must be a share at least 0 and at most 1, got nan" in capsys.readouterr().err
    for option, value, message in (("--documents", "-1", "must be at least 0, got -1"),
                                   ("--instructions", "0", "must be at least 1, got 0")):
        with pytest.raises(SystemExit) as exit_info:  # -1 documents wrote none, silently
            main(["--data", str(toy_data["train"].parent), "--out", str(tmp_path / "c"), option, value])
        assert exit_info.value.code == 2 and f"argument {option}: {message}" in capsys.readouterr().err


def test_the_cli_never_replaces_a_file_or_a_folder_it_did_not_write(toy_data, tmp_path, capsys):
    """``--out`` was "replaced whole if it exists", also a file, or the benchmark's own folder."""
    from speechsum.benchmark.text_corpus import main

    data = toy_data["train"].parent
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    for out, message in ((notes, f"--out {notes} is a file: give a folder"),
                         (data, f"--out {data} is a folder that holds other files (no silence.wav: not an earlier "
                                "text corpus, which would be replaced): give a new or empty folder")):
        with pytest.raises(SystemExit) as stop:
            main(["--data", str(data), "--out", str(out), "--documents", "2"])
        assert stop.value.code == 2
        assert capsys.readouterr().err.endswith(f"error: {message}\n")
    assert notes.read_text() == "keep me" and toy_data["train"].is_file()
    for _ in range(2):  # an earlier text corpus is replaced
        main(["--data", str(data), "--out", str(tmp_path / "corpus"), "--documents", "2"])
    assert (tmp_path / "corpus" / "train.jsonl").is_file()


def test_the_corpus_loads_without_a_duration_warning(toy_data, tmp_path, caplog):
    """Its text-only lines gave a nominal spoken length (2.5 words/s, e.g. 44.8 s) for a 0.1 s silent WAV:
    every text LM stage warned that all 12,000 of them named the wrong file."""
    import logging

    from speechsum.data.manifest import load_manifest

    out = write_text_corpus(toy_data["train"].parent, tmp_path / "corpus", documents=5, instructions=2, seed=1)
    extra = [json.loads(line) for line in (out / "train.jsonl").open() if '"lmtext-' in line]
    assert len(extra) == 10 and {(r["audio"], r["duration"]) for r in extra} == {(str(out / "silence.wav"), 0.1)}
    with caplog.at_level(logging.WARNING, logger="speechsum.data.manifest"):
        examples, skipped = load_manifest(out / "train.jsonl", require_summary=True, require_transcript=True)
    assert (len(examples), skipped, caplog.records) == (24 + 10, [], [])
    assert {e.duration for e in examples if e.id.startswith("lmtext-")} == {0.1}
    assert all(e.stated_duration is None for e in examples)
