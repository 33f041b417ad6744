"""Answer extraction and the EM / F1 / sub-EM metrics, on hand-checked cases."""

from __future__ import annotations

import pytest

from memtrain.scoring import (
    em,
    extract_boxed,
    f1,
    normalize_answer,
    normalize_strict,
    score_all,
    strict_em,
    sub_em,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{Paris}", "Paris"),
        ("\\boxed{ Paris }.", "Paris"),
        ("\\boxed{f(x) = {a, {b}}} done", "f(x) = {a, {b}}"),  # nested braces
        ("first \\boxed{A} then \\boxed{B}", "B"),  # the last one wins
        ("\\boxed{A} and an unclosed \\boxed{B", "A"),  # unclosed last: fall back to the closed one
        ("only unclosed \\boxed{B and more", None),
        ("no box at all", None),
        ("", None),
        ("\\boxed{\\text{New York}}", "\\text{New York}"),
        ("\\boxed{}", ""),
        ("\\boxed {Paris}", "Paris"),  # a space before the brace is still a box
        ("\\boxed{a \\boxed{b}}", "a b"),  # the outer box, its inner box unwrapped (not just "b")
        ("\\boxed{x} and \\boxed  {y}", "y"),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_text_macro_is_stripped_by_normalisation():
    assert normalize_answer(extract_boxed("\\boxed{\\text{The New York}}")) == "new york"
    assert strict_em(extract_boxed("\\boxed{\\text{Paris}}"), ["paris"]) == 1.0


@pytest.mark.parametrize(
    ("raw", "squad", "strict"),
    [
        ("The  Eiffel Tower!", "eiffel tower", "the eiffel tower"),
        ('"Paris."', "paris", "paris"),
        ("An apple, a pear", "apple pear", "an apple, a pear"),
        ("Theatre", "theatre", "theatre"),  # 'the' inside a word is not an article
        ("  1,867 ", "1867", "1,867"),
    ],
)
def test_normalisation(raw, squad, strict):
    assert normalize_answer(raw) == squad
    assert normalize_strict(raw) == strict


def test_exact_match_with_aliases():
    golds = ["United States", "USA", "the U.S."]
    assert em("the united states", golds) == 1.0
    assert em("USA!", golds) == 1.0
    assert em("US", golds) == 1.0  # 'the U.S.' normalises to 'us'
    assert em("America", golds) == 0.0
    assert em(None, golds) == 0.0
    assert strict_em("the united states", golds) == 0.0  # strict keeps articles
    assert strict_em("United states.", golds) == 1.0


def test_f1_partial_credit_and_best_alias():
    assert f1("Marie Curie", ["Curie"]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1("Marie Curie", ["Pierre Curie", "Marie Curie"]) == 1.0
    assert f1("Warsaw", ["Paris"]) == 0.0
    assert f1("the", ["the"]) == 0.0  # nothing left after normalisation
    assert f1(None, ["x"]) == 0.0


def test_sub_em_is_word_bounded():
    assert sub_em("born in Warsaw, Poland", ["Warsaw"]) == 1.0
    assert sub_em("Warsawian", ["Warsaw"]) == 0.0
    assert sub_em("anything", ["the"]) == 0.0  # an empty normalised gold never matches
    assert sub_em(None, ["Warsaw"]) == 0.0


def test_score_all():
    s = score_all("I think it is \\boxed{The Warsaw}", ["Warsaw"])
    assert s == {"boxed": 1.0, "accuracy": 1.0, "strict_em": 0.0, "em": 1.0, "f1": 1.0, "sub_em": 1.0}
    none = score_all("Warsaw", ["Warsaw"])
    assert none["boxed"] == 0.0 and sum(none.values()) == 0.0


def test_extract_answer_modes():
    from memtrain.scoring import extract_answer

    text = "The answer is: Paris.\nMore words"
    assert extract_answer(text, "boxed") is None
    assert extract_answer(text, "lenient") == "Paris"
    assert extract_answer("x \\boxed{Rome} y", "lenient") == "Rome"  # boxed wins when present
    assert extract_answer("\n\n  answer: 1969\n", "lenient") == "1969"
    assert extract_answer("   \n", "lenient") is None
    with pytest.raises(ValueError, match="answer mode"):
        extract_answer("x", "loose")


def test_score_all_lenient_counts_no_boxed_but_scores():
    m = score_all("The answer is Ed Wood.", ["Ed Wood"], mode="lenient")
    assert m["boxed"] == 0.0 and m["em"] == 1.0 and m["strict_em"] == 1.0
    assert score_all("The answer is Ed Wood.", ["Ed Wood"])["em"] == 0.0


def test_accuracy_is_memagents_two_way_substring():
    from memtrain.scoring import accuracy

    assert accuracy("President Richard Nixon", ["Richard Nixon"]) == 1.0  # gold in prediction
    assert accuracy("Nixon", ["Richard Nixon"]) == 1.0  # prediction in gold: MemAgent counts it
    assert sub_em("Nixon", ["Richard Nixon"]) == 0.0  # sub-EM does not
    assert accuracy("the", ["Richard Nixon"]) == 0.0  # an empty normalised prediction is never inside
    assert accuracy(None, ["x"]) == 0.0 and accuracy("Ford", ["Richard Nixon", "Nixon"]) == 0.0


def test_paper_prompts_have_memagents_blocks_and_cues():
    from memtrain import prompts

    upd = prompts.update_messages("Who?", "No previous memory", "A chunk.", "paper")[0]["content"]
    assert upd.startswith("You are presented with a problem, a section of an article")
    blocks = "<problem> \nWho?\n</problem>\n\n<memory>\nNo previous memory\n</memory>\n\n<section>\nA chunk."
    assert blocks in upd
    assert upd.endswith("</section>\n\nUpdated memory:\n")  # nothing added after MemAgent's cue
    final = prompts.final_messages("Who?", "m", "paper")[0]["content"]
    assert "put the answer in \\boxed{}" in final and final.endswith("</memory>\n\nYour answer:\n")
    imr = prompts.imr_messages("m", "The [TARGET] bridge.", "paper")[0]["content"]
    assert "[TARGET]" in imr and "<section>\nThe [TARGET] bridge.\n</section>" in imr
    # the paper's own IMR wording (its Appendix A): memory then masked section, no problem block
    assert imr.startswith("You are presented with a memory from previously read sections, and a section "
                          "containing placeholder [TARGET]. Based on the memory, please predict the entity "
                          "marked by [TARGET] and put the answer in \\boxed{}.")
    assert "<problem>" not in imr and imr.index("<memory>\nm\n</memory>") < imr.index("<section>")
