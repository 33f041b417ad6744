"""The search-QA reward: multi-objective answers scored by position against each objective's aliases."""

from __future__ import annotations

import pytest

from memtrain.scoring import (
    extract_tagged_answer,
    multi_objective_score,
    objective_scores,
    score_objectives,
    split_objectives,
)

GOLDS = [["William Shakespeare", "Shakespeare"], ["France", "French Republic"]]


def test_last_answer_tag_is_the_answer():
    text = "<answer>wrong; wrong</answer> more <think>x</think><answer> Shakespeare ; France </answer>"
    assert extract_tagged_answer(text) == "Shakespeare ; France"
    assert extract_tagged_answer("no answer <answer>unclosed") is None
    assert extract_tagged_answer("<answer>a<answer>b</answer>") == "b"


def test_order_aliases_and_normalisation():
    assert multi_objective_score("Shakespeare; France", GOLDS) == 1.0
    assert multi_objective_score("the French Republic; ...", GOLDS) == 0.0  # by position, not by content
    assert multi_objective_score("France; Shakespeare", GOLDS) == 0.0  # swapped: both wrong
    assert multi_objective_score("william SHAKESPEARE.; The French Republic", GOLDS) == 1.0  # SQuAD norm
    assert objective_scores("Marlowe; France", GOLDS) == [0.0, 1.0]
    assert multi_objective_score("Marlowe; France", GOLDS) == 0.5  # mean over objectives


def test_wrong_number_of_parts_scores_zero():
    assert split_objectives("Shakespeare", 2) is None
    assert multi_objective_score("Shakespeare", GOLDS) == 0.0
    assert multi_objective_score("Shakespeare; France; Paris", GOLDS) == 0.0
    assert multi_objective_score("Shakespeare; France;", GOLDS) == 0.0  # a trailing ";" is a third part
    assert multi_objective_score(None, GOLDS) == 0.0
    assert multi_objective_score("", [["x"]]) == 0.0
    assert multi_objective_score("x", [["x"]]) == 1.0  # one objective: no ";" needed


@pytest.mark.parametrize("metric, expected", [("em", 0.0), ("sub_em", 0.5), ("accuracy", 0.5),
                                              ("strict_em", 0.0)])
def test_cpu_knobs(metric, expected):
    # "Shakespeare wrote it" holds the gold (sub-EM, two-way sub-EM) but is not an exact match
    assert multi_objective_score("Shakespeare wrote it; Spain", GOLDS, metric) == expected


def test_f1_and_all_scores():
    assert 0 < multi_objective_score("William Shakespeare wrote; France", GOLDS, "f1") < 1
    s = score_objectives("Shakespeare", GOLDS)
    assert s["answered"] == 1.0 and s["parts_ok"] == 0.0 and s["em"] == 0.0
    with pytest.raises(ValueError, match="unknown objective metric"):
        multi_objective_score("x", [["x"]], "bleu")
