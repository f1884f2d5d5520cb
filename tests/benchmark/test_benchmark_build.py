"""The bundled benchmark build: determinism, disjoint splits, manifest contract, facts and references."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import soundfile as sf

from speechsum.benchmark import build as bench
from speechsum.benchmark.cli import benchmark_info, main
from speechsum.benchmark.documents import GENRES, generate_document
from speechsum.benchmark.instructions import STYLES
from speechsum.data.manifest import load_manifest

SPLITS = bench.SPLITS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "tiny"
    bench.build_benchmark(out, size="tiny", seed=0, workers=1, progress=False)
    return out


def _records(directory: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (directory / f"{split}.jsonl").read_text().splitlines()]


def _audio_hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((directory / "audio").iterdir())}


def _spoken(transcript: str) -> str:
    """What the audio says: the transcript without its ``Name:`` labels, lowercased."""
    return " ".join(line.split(": ", 1)[1] for line in transcript.splitlines()).lower()


def test_same_seed_same_bytes_in_any_worker_count(tiny, tmp_path):
    again = tmp_path / "again"
    bench.build_benchmark(again, size="tiny", seed=0, workers=2, progress=False)
    for split in SPLITS:
        assert (again / f"{split}.jsonl").read_bytes() == (tiny / f"{split}.jsonl").read_bytes(), split
    assert _audio_hashes(again) == _audio_hashes(tiny)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no temporary folder left behind


def test_cli_build_other_seed_differs_and_info(tiny, tmp_path, capsys):
    out = tmp_path / "seed1"
    main(["build", "--out", str(out), "--size", "tiny", "--seed", "1", "--workers", "1", "--no-progress",
          "--train-docs", "1", "--val-docs", "1", "--test-docs", "1", "--test-unseen-docs", "1",
          "--test-xling-docs", "1", "--train-instructions", "2"])
    assert len(_records(out, "train")) == 2
    first, base = _records(out, "train")[0], _records(tiny, "train")[0]
    assert first["meta"]["doc_id"] == base["meta"]["doc_id"] == "train-000000"
    assert first["transcript"] != base["transcript"]
    assert _audio_hashes(out)["train-000000.wav"] != _audio_hashes(tiny)["train-000000.wav"]
    summary = json.loads((out / "benchmark.json").read_text())
    assert summary["seed"] == 1 and summary["splits"]["train"]["documents"] == 1
    printed = capsys.readouterr().out
    assert "train" in printed and "examples per style" in printed
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(["build", "--out", str(out), "--size", "tiny"])
    info = benchmark_info(tiny)
    assert "test_xling" in info and "lang" in info


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = bench.synthesize_document

    def failing(doc, seed):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("synthetic failure")
        return real(doc, seed)

    monkeypatch.setattr(bench, "synthesize_document", failing)
    with pytest.raises(RuntimeError, match="synthetic failure"):
        bench.build_benchmark(tmp_path / "out", size="tiny", workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_splits_are_disjoint_and_unseen_phrasing_is_unseen(tiny):
    docs = {split: {r["meta"]["doc_id"] for r in _records(tiny, split)} for split in SPLITS}
    transcripts = {split: {r["transcript"] for r in _records(tiny, split)} for split in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not docs[a] & docs[b], (a, b)
            assert not transcripts[a] & transcripts[b], (a, b)
    seen = [r for split in ("train", "val", "test") for r in _records(tiny, split)]
    unseen = _records(tiny, "test_unseen")
    seen_templates = {f["template"] for r in seen for f in r["meta"]["facts"]}
    seen_phrasings = {r["meta"]["instruction_template"] for r in seen} | {r["instruction"] for r in seen}
    for record in unseen:
        assert not {f["template"] for f in record["meta"]["facts"]} & seen_templates
        assert record["meta"]["instruction_template"] not in seen_phrasings
        assert record["instruction"] not in seen_phrasings
    # the full template inventory: unseen ids never appear in a train/val/test draw
    assert all(t.split("/")[1] in {"0", "1", "2", "3"} for t in seen_templates)


def test_manifests_load_with_the_contract(tiny):
    for split in SPLITS:
        examples, skipped = load_manifest(tiny / f"{split}.jsonl", require_summary=True, require_transcript=True)
        assert examples and not skipped
        for example in examples:
            info = sf.info(example.audio)
            assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
            assert 15.0 <= example.duration <= 90.0
            meta = example.meta
            assert meta["split"] == split and example.id.startswith(meta["doc_id"])
            assert meta["genre"] in GENRES and meta["style"] in STYLES and meta["lang"] == example.lang
            assert 2 <= len(meta["speakers"]) <= 4 and len(set(meta["voices"])) == len(meta["speakers"])
            assert all(f["kind"] in ("person", "decision", "number", "date", "place", "action") for f in meta["facts"])
            assert meta["required_facts"] and all(0 <= i < len(meta["facts"]) for i in meta["required_facts"])
            assert all(e == e.lower() for e in meta["entities"])
    langs = {r["lang"] for r in _records(tiny, "test_xling")}
    assert langs == {"es", "de"}


def test_fact_keys_are_spoken_and_references_hold_required_keys(tiny):
    for split in SPLITS:
        for record in _records(tiny, split):
            meta = record["meta"]
            english = meta.get("transcript_en", record["transcript"])
            spoken = _spoken(english)
            for fact in meta["facts"]:
                assert fact["keys"] and all(k == k.lower() and k in spoken for k in fact["keys"]), fact
            summary = record["summary"].lower()
            for index in meta["required_facts"]:
                assert all(k in summary for k in meta["facts"][index]["keys"]), (record["id"], index)
            for entity in meta["filler_entities"]:  # chit-chat entities: said, never in a reference
                assert entity in spoken and not re.search(rf"\b{re.escape(entity)}\b", summary), entity
            if split == "test_xling":
                assert record["transcript"] != english
                assert len(record["transcript"].splitlines()) == len(english.splitlines())


def _check_style(style: str, summary: str, meta: dict) -> None:
    lines = summary.splitlines()
    if style == "one_sentence":
        assert len(lines) == 1 and summary.endswith(".") and summary.count(". ") == 0
    elif style in ("bullets", "action_items"):
        assert all(line.startswith("- ") for line in lines)
        if style == "action_items":
            actions = [meta["facts"][i] for i in meta["required_facts"]]
            assert all(f["kind"] == "action" for f in actions) and len(lines) == len(actions)
            assert all(line.startswith(f"- {f['slots']['first']}: ") for line, f in zip(lines, actions))
    elif style == "email":
        assert lines[0] == f"Hi {meta['recipient']}," and lines[-1] == "Best regards"
    elif style == "title_abstract":
        assert lines[0].startswith("Title: ") and lines[2].startswith("Abstract: ")
    elif style == "question":
        assert len(meta["required_facts"]) == 1 and "\n" not in summary


def test_reference_styles(tiny):
    styles = set()
    for split in SPLITS:
        for record in _records(tiny, split):
            _check_style(record["meta"]["style"], record["summary"], record["meta"])
            styles.add(record["meta"]["style"])
    assert len(styles) >= 4


def test_generator_variety_and_every_style_renders():
    from speechsum.benchmark.instructions import render_reference

    docs = [generate_document(f"v-{i}", "train", 7, GENRES[i % 4]) for i in range(40)]
    assert len({d.transcript() for d in docs}) == 40
    assert len({d.speakers[0].name for d in docs}) > 30
    templates = {f["template"] for d in docs for f in d.facts}
    assert len(templates) >= 20 and all(t.split("/")[1] in {"0", "1", "2", "3"} for t in templates)
    assert all(15 < len(d.spoken_text().split()) < 230 for d in docs)  # about 15-90 s at 140-180 words/min
    doc = docs[0]
    for style in STYLES:
        required = [0] if style == "question" else list(range(len(doc.facts)))
        if style == "action_items":
            required = [i for i, f in enumerate(doc.facts) if f["kind"] == "action"]
        meta = {"facts": doc.facts, "required_facts": required, "recipient": "team"}
        text = render_reference(style, doc.facts, required, genre_noun="meeting", topic=doc.topic, recipient="team")
        _check_style(style, text, meta)
    with pytest.raises(ValueError, match="unknown style"):
        render_reference("haiku", doc.facts, [0], genre_noun="meeting", topic=doc.topic)
    with pytest.raises(ValueError, match="unknown size"):
        bench.resolve_plan("huge")


def test_kd_train_split_is_more_audio_without_summaries(tiny, tmp_path, capsys):
    assert not (tiny / "kd_train.jsonl").exists()  # only when asked for
    out = tmp_path / "kd"
    main(["build", "--out", str(out), "--size", "tiny", "--workers", "1", "--no-progress",
          "--kd-train-docs", "2", "--train-instructions", "2"])
    kd = _records(out, "kd_train")
    assert len(kd) == 4 and all("summary" not in r for r in kd)
    assert {r["meta"]["doc_id"] for r in kd} == {"kd_train-000000", "kd_train-000001"}
    assert all(r["lang"] == "en" and r["transcript"] and r["instruction"] and r["meta"]["facts"] for r in kd)
    for split in SPLITS:  # the other splits are the build without kd_train, byte for byte
        if split != "train":
            assert (out / f"{split}.jsonl").read_bytes() == (tiny / f"{split}.jsonl").read_bytes(), split
    other = {r["transcript"] for split in SPLITS for r in _records(out, split)}
    assert not {r["transcript"] for r in kd} & other
    examples, skipped = load_manifest(out / "kd_train.jsonl", require_summary=False, require_transcript=True)
    assert len(examples) == 4 and not skipped and all(e.summary is None for e in examples)
    with pytest.raises(ValueError, match="summary"):
        load_manifest(out / "kd_train.jsonl", require_summary=True)
    summary = json.loads((out / "benchmark.json").read_text())
    assert summary["splits"]["kd_train"] == {**summary["splits"]["kd_train"], "documents": 2, "examples": 4}
    assert "kd_train" in benchmark_info(out)
    with pytest.raises(ValueError, match="--kd-train-docs must be >= 0"):
        bench.resolve_plan("tiny", {"kd_train": -1})


@pytest.mark.parametrize(("option", "problem"), [
    (["--train-instructions", "7"], "argument --train-instructions: must be at most 6, got 7"),  # named no option
    (["--eval-instructions", "0"], "argument --eval-instructions: must be at least 1, got 0"),
    (["--kd-train-docs", "-1"], "argument --kd-train-docs: must be at least 0, got -1"),
])
def test_build_options_out_of_range_are_usage_errors_naming_the_option(tmp_path, capsys, option, problem):
    with pytest.raises(SystemExit) as stop:
        main(["build", "--out", str(tmp_path / "b"), "--size", "tiny", *option])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(f"speechsum benchmark build: error: {problem}\n")
    assert not (tmp_path / "b").exists()


def test_workers_beyond_4_per_core_are_clamped_with_a_warning(tiny, tmp_path, monkeypatch, capsys):
    """--workers 100000 tried to spawn 100,000 processes; the count decides nothing in the output."""
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    assert bench.usable_workers(8) == 8
    with pytest.warns(UserWarning, match="^--workers 9 is more than 4 processes per CPU core \\(2 here\\): using 8 "):
        assert bench.usable_workers(9) == 8  # the Python API's build_benchmark warns so
    monkeypatch.setattr(bench, "WORKERS_PER_CORE", 0.5)  # so that the clamped build runs in this process
    capsys.readouterr()
    main(["build", "--out", str(tmp_path / "b"), "--size", "tiny", "--seed", "0", "--workers", "100000",
          "--no-progress"])
    assert capsys.readouterr().err == (
        "speechsum benchmark build: warning: --workers 100000 is more than 0.5 processes per CPU core (2 here): using "
        "1 (the benchmark does not depend on the count; more processes would only add memory)\n")
    assert json.loads((tmp_path / "b" / "benchmark.json").read_text())["workers"] == 1
    for split in SPLITS:
        assert (tmp_path / "b" / f"{split}.jsonl").read_bytes() == (tiny / f"{split}.jsonl").read_bytes(), split


def test_kd_train_docs_0_is_its_default_not_an_error(tmp_path):
    """Its help says 'default 0: no kd_train.jsonl'; written out, 0 was refused ('must be at least 1')."""
    from speechsum.benchmark.cli import _parser

    args = _parser().parse_args(["build", "--out", str(tmp_path / "b"), "--kd-train-docs", "0"])
    assert args.kd_train_docs == 0
    assert bench.resolve_plan("tiny", {"kd_train": 0})["kd_train"].documents == 0


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"version": "1.0"}', b"\xff\xfe"])
def test_info_names_a_broken_benchmark_json(tmp_path, content):
    (tmp_path / "benchmark.json").write_bytes(content)
    (tmp_path / "test.jsonl").write_text("")
    with pytest.raises(SystemExit, match=r"speechsum benchmark info: .*benchmark\.json: .*rebuild with"):
        main(["info", str(tmp_path)])


@pytest.mark.parametrize("duration", ["-5.0", "NaN", "1" + "0" * 400])
def test_info_names_a_manifest_line_without_a_duration_in_seconds(tmp_path, duration):
    (tmp_path / "test.jsonl").write_text('{"meta": {"doc_id": "d"}, "duration": ' + duration + "}\n")
    with pytest.raises(SystemExit, match=r"test\.jsonl:1: not a benchmark record \("):
        main(["info", str(tmp_path)])


@pytest.mark.parametrize(("line", "problem"), [('{"meta": {"doc_id": "d"}}', "no field 'duration'"),
                                              ('{"meta": {}, "duration": 1.0}', "no field 'meta.doc_id'")])
def test_info_names_the_field_a_manifest_line_lacks(tmp_path, line, problem):
    """Before: 'not a benchmark record ('duration')', the bare KeyError."""
    (tmp_path / "test.jsonl").write_text(line + "\n")
    with pytest.raises(SystemExit) as stop:
        main(["info", str(tmp_path)])
    assert str(stop.value) == (f"speechsum benchmark info: {tmp_path / 'test.jsonl'}:1: not a benchmark record "
                               f"({problem}); give the folder `speechsum benchmark build --out` wrote")


@pytest.mark.parametrize(("name", "problem"), [("missing", "no such folder"), ("file", "a file, not a folder")])
def test_info_on_a_path_that_is_no_folder_says_so(tmp_path, name, problem):
    """Before: 'no *.jsonl manifests in missing; build one', for a mistyped path or a file."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as stop:
        main(["info", str(tmp_path / name)])
    assert str(stop.value) == (f"speechsum benchmark info: {tmp_path / name}: {problem}; give the folder "
                               "`speechsum benchmark build --out` wrote")


def test_compact_unnamed_world_reports_decisions_without_the_unheard_decider():
    """Who decided is said only by a turn's label and voice; ``compact-unnamed`` leaves it out of the
    reference (the students' CTC audio tokens carry no voice) and is otherwise ``compact``: the same
    documents, turns and facts, the decision's text aside."""
    from speechsum.benchmark.instructions import render_reference

    for world, named in (("full", True), ("compact", True), ("compact-unnamed", False)):
        docs = [generate_document(f"d-{i}", "train", 3, GENRES[i % 4], world=world) for i in range(12)]
        decisions = [(d, f) for d in docs for f in d.facts if f["kind"] == "decision"]
        assert len(decisions) == 12  # one per document
        for doc, fact in decisions:
            verb, obj, decider = fact["slots"]["verb"], fact["slots"]["obj"], fact["slots"]["decider"]
            assert decider in [s.name for s in doc.speakers]
            assert fact["keys"] == [verb, obj]
            assert fact["text"] == f"{decider if named else 'it was'} decided to {verb} the {obj}"
    compact = [generate_document(f"d-{i}", "train", 3, GENRES[i % 4], world="compact") for i in range(12)]
    unnamed = [generate_document(f"d-{i}", "train", 3, GENRES[i % 4], world="compact-unnamed") for i in range(12)]
    for named_doc, unnamed_doc in zip(compact, unnamed, strict=True):
        assert named_doc.turns == unnamed_doc.turns and named_doc.speakers == unnamed_doc.speakers
        assert [f["slots"] for f in named_doc.facts] == [f["slots"] for f in unnamed_doc.facts]
    doc, fact = decisions[0]
    text = render_reference("bullets", [fact], [0], genre_noun="meeting", topic=doc.topic)
    assert text == f"- It was decided to {fact['slots']['verb']} the {fact['slots']['obj']}."


def test_compact_heard_world_says_who_decided_in_one_added_turn():
    """``compact-heard`` is ``compact`` with one turn added after each decision: the next speaker answers
    it by the decider's full name. Everything else (speakers, facts, the other turns) is drawn the same."""
    for lang in ("en", "es"):
        for i in range(12):
            args = (f"d-{i}", "test", 3, GENRES[i % 4], lang)
            compact, heard = (generate_document(*args, world=world) for world in ("compact", "compact-heard"))
            assert heard.speakers == compact.speakers and heard.facts == compact.facts
            decision = next(f for f in heard.facts if f["kind"] == "decision")
            name = decision["slots"]["decider"]
            decider = [s.name for s in heard.speakers].index(name)
            spoken = heard.spoken_text(english=False)
            assert spoken.count(name.lower()) == compact.spoken_text(english=False).count(name.lower()) + 1
            said = [t for t in heard.turns if name in t.text and t not in compact.turns]
            assert len(said) == 1 and said[0].speaker == (decider + 1) % len(heard.speakers)
            assert decision["text"] == f"{name} decided to {decision['slots']['verb']} the {decision['slots']['obj']}"


def test_cli_build_removes_what_a_killed_build_of_the_same_out_left(tmp_path, monkeypatch, capsys):
    """A build killed by SIGKILL leaves its temporary folder (named by its pid); the next build to
    that --out removes it, and leaves one of a build still running (here: this process's pid)."""
    import numpy as np

    from speechsum.utils.temp_owner import HOST_TAG
    from tests.utils.test_temp_owner import dead_pid

    monkeypatch.setattr(bench, "synthesize_document", lambda doc, seed: np.zeros(int(bench.MIN_SECONDS + 1) * bench.SAMPLE_RATE, np.float32))
    killed = tmp_path / f".bench.tmp-{dead_pid()}.{HOST_TAG}-k2x9"
    (killed / "audio").mkdir(parents=True)
    (killed / "audio" / "train-000000.wav").write_bytes(b"RIFF half")
    running = tmp_path / f".bench.tmp-{os.getpid()}.{HOST_TAG}-live"
    running.mkdir()
    main(["build", "--out", str(tmp_path / "bench"), "--size", "tiny", "--workers", "1", "--no-progress",
          "--train-docs", "1", "--val-docs", "1", "--test-docs", "1", "--test-unseen-docs", "1",
          "--test-xling-docs", "1"])
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "bench"]


ONE_DOC_EACH = {"train": 1, "val": 1, "test": 1, "test_unseen": 1, "test_xling": 1}


def test_overwrite_replaces_a_build_where_out_points_but_never_a_folder_of_other_files(tmp_path):
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious\n")
    with pytest.raises(FileExistsError, match=r"mydata is not empty and is not a benchmark folder.*--out"):
        bench.build_benchmark(mine, size="tiny", workers=1, documents=ONE_DOC_EACH, overwrite=True, progress=False)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]  # it was deleted with the old folder
    built = tmp_path / "bench"
    bench.build_benchmark(built, size="tiny", seed=0, workers=1, documents=ONE_DOC_EACH, progress=False)
    bench.build_benchmark(built, size="tiny", seed=1, workers=1, documents=ONE_DOC_EACH, overwrite=True,
                          progress=False)
    assert json.loads((built / "benchmark.json").read_text())["seed"] == 1
    (tmp_path / "link").symlink_to(built)  # an --out that links to a build (on a larger disk): rebuilt where it points
    bench.build_benchmark(tmp_path / "link", size="tiny", seed=2, workers=1, documents=ONE_DOC_EACH, overwrite=True,
                          progress=False)
    assert (tmp_path / "link").is_symlink() and json.loads((built / "benchmark.json").read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench", "link", "mydata"]  # no '.link.old-*' left


@pytest.mark.parametrize("out", [".", "..", "sub/.."])
def test_an_out_that_is_or_holds_the_current_folder_is_refused_before_the_build(tmp_path, monkeypatch, out):
    """``--out .`` built every document, then failed with "PosixPath('.') has an empty name"."""
    (tmp_path / "here" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(ValueError, match=rf"^--out {re.escape(out)} is the current folder or holds it: .* --out bench"):
        bench.build_benchmark(out, size="tiny", workers=1, documents=ONE_DOC_EACH, overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["here", "sub"]  # nothing built, nothing left


def test_a_voice_espeak_lacks_is_refused_before_the_first_document(tmp_path, monkeypatch):
    """It stopped at the first document drawing it, advising a voice name no build option takes."""
    from speechsum.benchmark import documents

    monkeypatch.setitem(documents.VOICES, "en", ("en-us", "en-us+nope", "en-us+f3", "en-us+m7"))
    with pytest.raises(FileNotFoundError, match=r"has no voice en-us\+nope, which .* nothing was built: reinstall"):
        bench.build_benchmark(tmp_path / "out", size="tiny", workers=1, documents=ONE_DOC_EACH, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_no_more_worker_processes_than_documents(tmp_path):
    """``--workers 8`` on 5 documents started 8 processes, 3 of them (and, 4 documents at a time, 6) idle."""
    out = tmp_path / "bench"
    bench.build_benchmark(out, size="tiny", seed=0, workers=8, documents={**ONE_DOC_EACH, "kd_train": 0}, progress=False)
    assert json.loads((out / "benchmark.json").read_text())["workers"] == 5
