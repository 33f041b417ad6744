"""veRL's custom reward function for memtrain rows scored outside the agent loop.

memtrain's agent loops set ``reward_score`` themselves (veRL then skips its reward step); this function is
for everything else that meets a memtrain row — a stock single-turn loop, a validation run, another agent —
so that such rows are scored exactly as memtrain scores them (:mod:`memtrain.rl.rewards`). Configure with
``reward.custom_reward_function.path=<this file> reward.custom_reward_function.name=compute_score``
(``memtrain verl-config`` writes both). No verl import: veRL loads this file by path.
"""

from __future__ import annotations

from typing import Any

from memtrain.rl.rewards import answer_reward
from memtrain.scoring import extract_tagged_answer, multi_objective_score, objective_sum


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **kwargs: Any) -> dict[str, float]:
    """``{"score": reward, "strict_em"/"em": ...}`` of a response against the row's gold answers.

    Memory-agent rows: the gold answers are ``extra_info["answers"]`` (every accepted alias) or else
    ``ground_truth``; ``extra_info["reward"]`` and ``extra_info["answer_mode"]`` choose the metric and answer
    extraction (defaults: strict EM of the last ``\\boxed{}``, the paper's training reward). Search-QA rows
    (``extra_info["objectives"]``: aliases per objective): MEM1's training reward, the per-objective match of
    the last ``<answer>`` summed over objectives, a wrong number of parts scoring 0; ``em`` is the paper's
    evaluation metric (the mean over objectives).
    """
    extra = extra_info or {}
    if extra.get("objectives"):
        answer = extract_tagged_answer(solution_str)
        golds = [list(o) for o in extra["objectives"]]
        return {"score": objective_sum(answer, golds, extra.get("reward", "em")),
                "em": multi_objective_score(answer, golds, "em")}
    golds = list(extra.get("answers") or ([ground_truth] if isinstance(ground_truth, str) else ground_truth))
    metric, mode = extra.get("reward", "strict_em"), extra.get("answer_mode", "boxed")
    return {"score": answer_reward(solution_str, golds, metric, mode),
            "strict_em": answer_reward(solution_str, golds, "strict_em", mode)}
