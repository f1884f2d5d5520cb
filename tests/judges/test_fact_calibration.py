"""Calibration of the offline fact judge on real benchmark documents (text only, no speech): the gold
reference scores 7, another document's reference 1, and hand-made partial summaries spread over 2–6 in
the order of their quality. The table in docs/evaluation.md is this test's output."""

from __future__ import annotations

import pytest

from speechsum.benchmark.build import GENRE_NOUN, doc_language_and_genre, make_records
from speechsum.benchmark.documents import generate_document
from speechsum.benchmark.instructions import render_reference
from speechsum.judges.fact import FactJudge

STYLE_OF_DOC = ("bullets", "email", "one_sentence", "title_abstract")  # test documents 0-3, one style each
WRONG_STYLE = {"bullets": "question", "email": "bullets", "one_sentence": "bullets", "title_abstract": "bullets"}
INVENTED = "Zelda Quist will join the team"  # a name no benchmark document holds
LADDER = ("gold", "wrong_style", "plus_invented", "repeated", "half", "half_invented", "half_invented_wrong_style",
          "other_document")
# score per variant (LADDER order) for documents 0-3; recall of "half" = floor(n/2)/n with n = 5, 5, 6, 7
EXPECTED = {
    "bullets": (7.0, 5.5, 5.0, 4.3244, 3.4, 2.6, 2.2, 1.0),
    "email": (7.0, 5.5, 5.0, 4.793, 3.4, 2.6, 2.2, 1.0),
    "one_sentence": (7.0, 5.5, 5.0, 4.4803, 4.0, 3.0, 2.5, 1.0),  # "repeated" is also over 60 words here
    "title_abstract": (7.0, 5.5, 5.0, 4.5775, 3.5714, 2.7143, 2.2857, 1.0),
}


def add_invented(text: str, style: str) -> str:
    """``text`` in ``style`` with one more statement naming an invented person, in the style's form."""
    if style == "bullets":
        return f"{text}\n- {INVENTED}."
    if style == "one_sentence":
        return f"{text.rstrip('.')}, and {INVENTED}."
    if style == "email":
        return text.replace("\n\nBest regards", f" {INVENTED}.\n\nBest regards")
    return f"{text} {INVENTED}."


def variants(record: dict, other: dict) -> dict[str, str]:
    """The hand-made summaries of one benchmark record, best first (``other``: a record of another document)."""
    meta, style = record["meta"], record["meta"]["style"]
    required, wrong = meta["required_facts"], WRONG_STYLE[style]

    def render(form: str, indices: list[int], m: dict = meta) -> str:
        return render_reference(form, m["facts"], indices, genre_noun=GENRE_NOUN[m["genre"]], topic=m["topic"],
                                recipient=m.get("recipient"))

    half = required[: len(required) // 2]
    return {
        "gold": record["summary"],
        "wrong_style": render(wrong, required),  # all facts, the form of another style
        "plus_invented": add_invented(record["summary"], style),
        "repeated": render(style, required + required),  # every fact said twice
        "half": render(style, half),
        "half_invented": add_invented(render(style, half), style),
        "half_invented_wrong_style": add_invented(render(wrong, half), wrong),
        "other_document": render(style, other["meta"]["required_facts"], other["meta"]),
    }


@pytest.fixture(scope="module")
def records() -> list[dict]:
    chosen = []
    for index, style in enumerate(STYLE_OF_DOC):
        lang, genre = doc_language_and_genre("test", index)
        doc = generate_document(f"test-{index:06d}", "test", 0, genre, lang)
        chosen.append(next(r for r in make_records(doc, 0, 6, "audio/x.wav", 30.0) if r["meta"]["style"] == style))
    return chosen


def calibration_table(records: list[dict], judge: FactJudge) -> dict[str, tuple[float, ...]]:
    table = {}
    for index, record in enumerate(records):
        texts = variants(record, records[(index + 1) % len(records)])
        table[record["meta"]["style"]] = tuple(judge.score(texts[name], record["meta"], record["instruction"]).score
                                               for name in LADDER)
    return table


def test_calibration_on_benchmark_documents(records):
    table = calibration_table(records, FactJudge())
    assert table == EXPECTED
    for style, scores in table.items():
        assert scores[0] == 7.0 and scores[-1] == 1.0, style
        assert all(2.0 <= s <= 6.0 for s in scores[1:-1]), style  # partial answers use the middle of the scale
        assert all(a > b for a, b in zip(scores, scores[1:])), style  # strictly in the order of quality


def test_each_variant_has_exactly_its_defect(records):
    judge = FactJudge()
    record = records[0]  # bullets, 5 required facts
    texts = variants(record, records[1])
    verdicts = {name: judge.score(text, record["meta"], record["instruction"]) for name, text in texts.items()}
    assert (verdicts["gold"].recall, verdicts["gold"].hallucinated, verdicts["gold"].style_ok) == (1.0, [], True)
    assert not verdicts["wrong_style"].style_ok and verdicts["wrong_style"].recall == 1.0
    assert verdicts["plus_invented"].hallucinated == ["zelda quist"] and verdicts["plus_invented"].style_ok
    assert "5 repeated sentence(s)" in verdicts["repeated"].reasons and verdicts["repeated"].recall == 1.0
    assert (verdicts["half"].recall, verdicts["half"].hallucinated) == (0.4, [])
    assert verdicts["other_document"].recall == 0.0


def test_pairwise_judge_ranks_down_the_ladder(records):
    """The DPO pair judge (FactJudge.compare, tie margin 0.25) never prefers the worse rung, and prefers a
    rung over every rung two or more steps below it (neighbours may tie: email's "repeated" is 0.21 below
    "plus_invented")."""
    judge = FactJudge()
    for index, record in enumerate(records):
        texts = variants(record, records[(index + 1) % len(records)])
        for i, better in enumerate(LADDER):
            for j, worse in enumerate(LADDER[i + 1:], start=i + 1):
                preference = judge.compare(texts[better], texts[worse], record["meta"], record["instruction"])
                assert preference == 1 or (preference == 0 and j == i + 1), (record["meta"]["style"], better, worse)
