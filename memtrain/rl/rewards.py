"""Rewards of the MemTrain objective as pure functions (DESIGN §2).

- IMR: ``R^I = 1[ŷ = ỹ]`` — strict exact match of the last ``\\boxed{}`` of the answer against the hidden
  entity ỹ (any of its masked surface forms counts: they were all hidden as the same entity).
- E2E: ``R^E_i = 1[ŷ_i = y] + (λ/G2)·Σ_j R^I_{i,j}`` — the final reward also pays for how recallable the
  trajectory's own intermediate memory was. With λ = 0 (or IMR disabled) this is the plain E2E reward,
  i.e. the paper's no-IMR ablation. A trajectory that got no IMR prompt (one chunk, or no candidate before
  its step) has an IMR term of 0; callers count such trajectories (``imr_missing``).
- QA (downstream post-training): strict EM, or sub-EM / token F1 when configured, against the gold answers.

Normalisation is :func:`memtrain.scoring.normalize_strict` (lower-case, collapse whitespace, strip
surrounding punctuation): strict, so the policy is paid for the entity and not for a paraphrase.
"""

from __future__ import annotations

from collections.abc import Sequence

from memtrain.errors import MemtrainError
from memtrain.scoring import extract_answer, f1, strict_em, sub_em


def answer_reward(
    response: str, golds: Sequence[str], metric: str = "strict_em", mode: str = "boxed"
) -> float:
    """Score one response's answer against the gold answers (0 when there is none under ``mode``)."""
    pred = extract_answer(response, mode)
    if metric == "strict_em":
        return strict_em(pred, golds)
    if metric == "sub_em":
        return sub_em(pred, golds)
    if metric == "f1":
        return f1(pred, golds)
    raise MemtrainError(f"unknown reward metric {metric!r}; use strict_em, sub_em or f1")


def imr_reward(
    response: str, answer: str, forms: Sequence[str] = (), mode: str = "boxed", metric: str = "strict_em"
) -> float:
    """``R^I``: 1 when the answer matches the hidden entity (or one of its masked forms)."""
    return answer_reward(response, [answer, *forms], metric, mode)


def coupled_reward(e2e_em: float, imr_rewards: Sequence[float], lambda_imr: float, g2: int) -> float:
    """``R^E = e2e_em + (λ/G2)·Σ_j R^I_j``; an empty ``imr_rewards`` (no IMR prompt) adds nothing.

    ``g2`` is the configured group size, not ``len(imr_rewards)``, so the IMR term is always on the same
    scale (at most λ) whatever happened to the trajectory.
    """
    if g2 <= 0:
        raise MemtrainError(f"G2 must be positive, got {g2}")
    return float(e2e_em) + lambda_imr / g2 * float(sum(imr_rewards))
