"""Group-relative advantages (Dr. GRPO), broadcasting, and the DAPO dynamic-sampling filter (DESIGN §3).

Groups are rows of a ``[n_groups, group_size]`` reward tensor:
- an **E2E group** is the G1 trajectories that read one document;
- an **IMR group** is the G2 answers to one IMR prompt.

Dr. GRPO removes the std division of GRPO (``A = R − mean``): dividing by the group std up-weights groups
that are nearly unanimous and so biases the update toward easy/hard prompts. ``scale="std"`` gives the
original std-normalised GRPO for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from memtrain.errors import MemtrainError


def group_advantages(rewards: torch.Tensor, scale: str = "none", eps: float = 1e-6) -> torch.Tensor:
    """``A[g, i] = R[g, i] − mean_i R[g, :]``, divided by ``std_i R[g, :] + eps`` when ``scale="std"``."""
    if rewards.dim() != 2:
        raise MemtrainError(f"rewards must be [n_groups, group_size], got shape {tuple(rewards.shape)}")
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "none":
        return adv
    if scale == "std":
        return adv / (rewards.std(dim=1, keepdim=True, unbiased=False) + eps)
    raise MemtrainError(f"unknown advantage scale {scale!r}; use 'none' (Dr. GRPO) or 'std'")


def informative_groups(rewards: torch.Tensor, tol: float = 1e-9) -> torch.Tensor:
    """DAPO dynamic sampling: True for groups whose rewards are not all equal.

    A group whose members all score the same (all 0 or all 1) has zero advantage everywhere, so it adds no
    gradient but still dilutes the per-conversation normalisation; dropping it keeps every update useful.
    """
    return (rewards.max(dim=1).values - rewards.min(dim=1).values) > tol


def broadcast(advantages: Sequence[float], n_conversations: Sequence[int]) -> list[float]:
    """Repeat trajectory ``i``'s advantage for each of its ``n_conversations[i]`` conversations.

    A trajectory is several independent conversations (every memory update and the final answer); they
    share one outcome, so each gets the trajectory's advantage (DESIGN §3).
    """
    if len(advantages) != len(n_conversations):
        raise MemtrainError(f"{len(advantages)} advantages for {len(n_conversations)} trajectories")
    return [float(a) for a, n in zip(advantages, n_conversations, strict=True) for _ in range(n)]
