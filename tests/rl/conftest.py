"""Fixtures for the rl tests: tiny hand-made E2E tasks and a deterministic stand-in reward.

A random-weight model never writes the right entity, so every group would be all-zero and DAPO would
drop it; tests of the update path instead reward a response by the parity of its length, which is
deterministic given the sampled tokens and varies within groups.
"""

from __future__ import annotations

import pytest
from helpers import make_tasks

from memtrain.records import MemTask


@pytest.fixture
def tiny_tasks() -> list[MemTask]:
    return make_tasks()


@pytest.fixture
def parity_reward(monkeypatch):
    """Answer reward = 1 for an even-length response; IMR reward = 1 when the length is divisible by 3."""
    from memtrain.rl import rewards

    monkeypatch.setattr(rewards, "answer_reward", lambda text, golds, *_: float(len(text) % 2 == 0))
    monkeypatch.setattr(rewards, "imr_reward", lambda text, answer, *_: float(len(text) % 3 == 0))
