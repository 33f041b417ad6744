"""The memory agent: one loop (``loop.py``) over a small generation interface (``engine.py``).

Engines: :class:`HFEngine` (``engine.py``), :class:`OpenAIEngine` (``openai_engine.py``),
:class:`VLLMEngine` (``vllm_engine.py``); :func:`build_engine` builds one from an :class:`EngineConfig`.
Names are resolved lazily so that ``import memtrain.agent`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Sampling": "memtrain.agent.engine",
    "Completion": "memtrain.records",
    "Engine": "memtrain.agent.engine",
    "HFEngine": "memtrain.agent.engine",
    "render": "memtrain.agent.engine",
    "OpenAIEngine": "memtrain.agent.openai_engine",
    "VLLMEngine": "memtrain.agent.vllm_engine",
    "build_engine": "memtrain.agent.engines",
    "EngineConfig": "memtrain.agent.engines",
    "AgentConfig": "memtrain.agent.loop",
    "Trajectory": "memtrain.records",
    "Turn": "memtrain.records",
    "make_task": "memtrain.agent.loop",
    "run_memory_agent": "memtrain.agent.loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
