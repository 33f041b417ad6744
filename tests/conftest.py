"""Shared fixtures: the real data folder beside the repo, and the tiny in-process model."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need real data skip cleanly without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): a random-weight Llama with SmolLM2's tokenizer, built in process."""
    from memtrain.models import tiny_model

    return tiny_model()


@pytest.fixture(scope="session")
def tokenizer():
    from memtrain.models import load_tokenizer

    return load_tokenizer("smollm2")


@pytest.fixture(scope="session")
def tiny_engine(tiny):
    """The HF engine over the tiny model, shared by the loop, eval and serve tests."""
    from memtrain.agent.engine import HFEngine

    model, tok = tiny
    return HFEngine(model, tok, batch_size=8)
