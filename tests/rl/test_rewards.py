from memtrain.rl import rewards


def test_imr_reward_strict_em_on_last_boxed():
    assert rewards.imr_reward("I think \\boxed{Paris}.", "Paris") == 1.0
    assert rewards.imr_reward("\\boxed{paris }", "Paris") == 1.0  # strict normalisation: case/space
    assert rewards.imr_reward("\\boxed{Paris, France}", "Paris") == 0.0
    assert rewards.imr_reward("Paris", "Paris") == 0.0  # no box, no reward
    assert rewards.imr_reward("\\boxed{Lutetia}", "Paris", forms=["Lutetia"]) == 1.0


def test_coupled_reward_hand_computed():
    # R^E = EM + λ/G2 · Σ R^I : 1 + 0.5/4 · 3 = 1.375
    assert rewards.coupled_reward(1.0, [1, 0, 1, 1], 0.5, 4) == 1.375
    assert rewards.coupled_reward(0.0, [1, 1, 0, 0], 0.5, 4) == 0.25
    # no IMR prompt -> the IMR term is 0; λ = 0 -> plain E2E reward
    assert rewards.coupled_reward(1.0, [], 0.5, 4) == 1.0
    assert rewards.coupled_reward(0.0, [1, 1, 1, 1], 0.0, 4) == 0.0


def test_answer_reward_metrics():
    assert rewards.answer_reward("\\boxed{the Eiffel Tower}", ["Eiffel Tower"], "strict_em") == 0.0
    assert rewards.answer_reward("\\boxed{the Eiffel Tower}", ["Eiffel Tower"], "sub_em") == 1.0
    # f1: partial credit for a partly right entity, none for a wrong one
    partial = rewards.answer_reward("\\boxed{Eiffel bridge}", ["Eiffel Tower"], "f1")
    assert partial == 0.5
    assert rewards.answer_reward("\\boxed{Louvre}", ["Eiffel Tower"], "f1") == 0.0


def test_lenient_answer_mode_pays_unboxed_answers():
    assert rewards.answer_reward("The answer is: Ayn Rand", ["Ayn Rand"]) == 0.0
    assert rewards.answer_reward("The answer is: Ayn Rand", ["Ayn Rand"], mode="lenient") == 1.0
    assert rewards.imr_reward("1957.", "1957", mode="lenient") == 1.0
    assert rewards.imr_reward("1957.", "1957") == 0.0
