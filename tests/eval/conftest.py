"""Fixtures for eval tests: an engine around the tiny random model and small real HotpotQA tasks."""

from __future__ import annotations

import pytest

from memtrain.agent.engine import Sampling
from memtrain.agent.loop import AgentConfig

HOTPOT = "hotpotqa/ircot_hotpotqa_dev_subsampled500.jsonl"


@pytest.fixture(scope="session")
def agent_cfg():
    return AgentConfig(chunk_tokens=256, memory_tokens=6, answer_tokens=6)


@pytest.fixture(scope="session")
def greedy():
    return Sampling(temperature=0.0, seed=0)


@pytest.fixture(scope="session")
def qa_tasks(shared_data, tokenizer):
    """3 questions x lengths 3 and 6 docs (6 tasks), chunked at 256 tokens."""
    from memtrain.tasks.longqa import build_longqa_tasks, load_hotpotqa, select_questions

    items, pool = load_hotpotqa(shared_data / HOTPOT)
    return build_longqa_tasks(select_questions(items, 3, seed=0), pool, [3, 6], tokenizer, 256, seed=0)
