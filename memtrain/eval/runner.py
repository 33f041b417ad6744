"""Evaluate the memory agent on long-document QA tasks, resumably, with per-length metrics.

The agent path is exactly the one used in training (:func:`memtrain.agent.loop.run_memory_agent`), so
evaluation numbers measure the same prompts and budgets the policy was trained with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memtrain.agent.engine import Engine, Sampling
from memtrain.agent.loop import AgentConfig, open_trace, run_memory_agent
from memtrain.records import MemTask
from memtrain.scoring import score_all

from .results import check_run_info, run_resumable, timed, write_metrics

RESULTS = "results.jsonl"


def task_row(task: MemTask) -> dict[str, Any]:
    """The fields of a results row that come from the task itself."""
    return {
        "id": task.id,
        "question_id": task.meta.get("question_id", task.id),
        "question": task.problem,
        "answers": list(task.answers),
        "n_docs": task.meta.get("n_docs"),
        "n_tokens": task.meta.get("n_tokens"),
        "n_chunks": len(task.chunks),
        "sample": task.meta.get("sample"),
    }


def length_of(task: MemTask) -> Any:
    """The context length a task is reported under (``n_docs``): batches never mix two."""
    return task.meta.get("n_docs")


def evaluate(
    engine: Engine,
    tasks: Sequence[MemTask],
    agent_cfg: AgentConfig,
    sampling: Sampling,
    out_dir: str | Path,
    batch_size: int = 16,
    resume: bool = True,
    label: str | None = None,
    run_info: dict[str, Any] | None = None,
    on_batch: Callable[[int, list[dict[str, Any]]], None] | None = None,
    trace: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the memory agent on ``tasks`` in batches; write ``results.jsonl`` and ``metrics.json``.

    Each row holds: id, question, answers, prediction (the boxed answer or None), response, metrics
    (``score_all``), n_docs, n_tokens, n_chunks, seconds (the batch's wall time divided by its size) and
    batch_size. Documents read together are turn-synchronous, so their time cannot be told apart; batches
    therefore hold one context length each (:func:`length_of`), and a length's ``seconds_per_question`` is
    the wall time of its own batches over its questions. Returns the metrics dict (see
    :mod:`memtrain.eval.results` for the headline metric).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_run_info(out, run_info, resume)
    trace_f = open_trace(out / "trace.jsonl") if trace else None

    def process(batch: list[MemTask]) -> list[dict[str, Any]]:
        trajs, secs = timed(lambda: run_memory_agent(engine, batch, agent_cfg, sampling, trace=trace_f,
                                                     progress=progress))
        rows = []
        for task, tr in zip(batch, trajs, strict=True):
            rows.append({
                **task_row(task),
                "prediction": tr.answer,
                "response": tr.response,
                "final_memory": tr.memories[-1],
                "metrics": score_all(tr.response, task.answers, agent_cfg.answer_mode),
                "seconds": round(secs / len(batch), 3),
                "batch_size": len(batch),
            })
        return rows

    try:
        rows = run_resumable(out / RESULTS, tasks, lambda t: t.id, process, batch_size, resume, on_batch,
                             desc=label or "memory agent", progress=progress, group=length_of)
    finally:
        if trace_f is not None:
            trace_f.close()
    header = {
        "label": label or "memory agent",
        "method": "memory-agent",
        "agent": dataclasses.asdict(agent_cfg),
        "sampling": dataclasses.asdict(sampling),
        **(run_info or {}),
    }
    return write_metrics(out, rows, header)
