"""The memory loop (DESIGN §1), written once for every engine.

Step t = 1..T: the prompt holds the problem, the previous memory m_{t-1} (m_0 = "No previous memory") and
chunk c_t; the whole response, cut to ``memory_tokens``, becomes m_t. The final step asks for the answer
from m_T alone. Every step is an independent single-turn conversation, so cost is linear in the number of
chunks and each conversation is trainable on its own.

Batching is turn-synchronous: step t of every still-active document goes to the engine in one call, so a
batch of 16 documents costs ~T+1 engine calls instead of 16·(T+1).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from memtrain import prompts
from memtrain.agent.engine import Engine, Sampling
from memtrain.config import option
from memtrain.errors import MemtrainError
from memtrain.progress import progress_bar
from memtrain.records import Completion, MemTask, Trajectory, Turn
from memtrain.scoring import ANSWER_MODES, extract_answer
from memtrain.seeds import derive_seed
from memtrain.tasks.chunking import chunk_text


@dataclass
class AgentConfig:
    """Budgets of the memory agent, in tokens. Paper: chunk 5,120, memory 1,024, ≤ 8 chunks in training.

    On a task set, ``chunk_tokens`` and ``max_chunks`` are checked against what it was built with (or the
    task set's value is adopted when unset): see :mod:`memtrain.tasks.taskset`.
    """

    chunk_tokens: int | None = option("tokens per document chunk (None: the task set's)", None)
    memory_tokens: int = option("max tokens of memory (= update response)", 256)
    answer_tokens: int = option("max tokens of the final answer response (and of IMR answers)", 128)
    max_chunks: int | None = option("read at most this many chunks (None: all; on a task set it may not "
                                    "drop chunks)", None)
    prompt_version: str = option("prompt template version (prompts.py)", "v1")
    answer_mode: Literal["boxed", "lenient"] = option(
        "boxed (paper) or lenient: first-line fallback for tiny models (scoring.py)", "boxed")

    def validate(self) -> None:
        for name in ("chunk_tokens", "memory_tokens", "answer_tokens", "max_chunks"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise MemtrainError(f"AgentConfig.{name} must be positive, got {value}")
        prompts.get_prompts(self.prompt_version)
        if self.answer_mode not in ANSWER_MODES:
            raise MemtrainError(
                f"AgentConfig.answer_mode must be one of {ANSWER_MODES}, got {self.answer_mode!r}"
            )


def cut_memory(engine: Engine, completion: Completion, memory_tokens: int) -> str:
    """The memory a completion yields: its text, cut to the budget if an engine returned more."""
    if len(completion.completion_ids) <= memory_tokens or engine.tokenizer is None:
        return completion.text
    return engine.tokenizer.decode(
        completion.completion_ids[:memory_tokens], skip_special_tokens=True
    ).strip()


def make_task(
    document: str, question: str, tokenizer: Any, cfg: AgentConfig, task_id: str = "doc"
) -> MemTask:
    """A QA task from raw text: chunk by the tokenizer; empty documents are an error, not an empty read."""
    if not document.strip():
        raise MemtrainError(f"document {task_id!r} is empty: nothing to read")
    if not question.strip():
        raise MemtrainError("the question is empty")
    if cfg.chunk_tokens is None:
        raise MemtrainError("agent.chunk_tokens is needed to cut a raw document into chunks")
    return MemTask(
        id=task_id,
        kind="qa",
        problem=question,
        chunks=chunk_text(tokenizer, document, cfg.chunk_tokens),
        answers=[],
    )


def run_memory_agent(
    engine: Engine,
    tasks: Sequence[MemTask],
    cfg: AgentConfig,
    sampling: Sampling,
    trace: IO[str] | None = None,
    progress: bool = True,
) -> list[Trajectory]:
    """Read every task's chunks with a bounded memory, then answer; one engine call per step.

    ``sampling.max_new_tokens`` is overridden per turn by the memory and answer budgets. When
    ``sampling.seed`` is set, every conversation gets its own seed, derived from (seed, task id, which copy
    of that task in the call, step): copies of one document (a GRPO group) sample independently on engines
    that seed each request (vLLM, OpenAI-compatible servers), steps differ, and reruns are identical.
    """
    memories = [[prompts.NO_MEMORY] for _ in tasks]
    turns: list[list[Turn]] = [[] for _ in tasks]
    chunks = [t.chunks[: cfg.max_chunks] if cfg.max_chunks else t.chunks for t in tasks]
    n_steps = max((len(c) for c in chunks), default=0)
    bar = progress_bar(total=n_steps + 1, desc="memory agent", unit="step", disable=not progress, leave=False)

    copy: dict[str, int] = {}
    keys = []  # "task id|copy index": distinct for the G copies of a document, independent of the batch
    for task in tasks:
        keys.append(f"{task.id}|{copy.get(task.id, 0)}")
        copy[task.id] = copy.get(task.id, 0) + 1

    def step(kind: str, t: int, rows: list[int], convs: list[list[dict[str, str]]], budget: int) -> None:
        seeds = None if sampling.seed is None else [derive_seed(sampling.seed, keys[i], t) for i in rows]
        s = dataclasses.replace(sampling, max_new_tokens=budget, seeds=seeds)
        start = time.perf_counter()
        comps = engine.generate(convs, s)
        seconds = time.perf_counter() - start
        for i, conv, comp in zip(rows, convs, comps, strict=True):
            turns[i].append(Turn(kind=kind, step=t, messages=conv, completion=comp, seconds=seconds))
            if kind == "update":
                memories[i].append(cut_memory(engine, comp, cfg.memory_tokens))
            if trace is not None:
                _write_trace(trace, tasks[i].id, turns[i][-1], memories[i][-1] if kind == "update" else None)
        bar.update(1)

    for t in range(n_steps):
        rows = [i for i, c in enumerate(chunks) if t < len(c)]
        convs = [
            prompts.update_messages(tasks[i].problem, memories[i][-1], chunks[i][t], cfg.prompt_version)
            for i in rows
        ]
        step("update", t, rows, convs, cfg.memory_tokens)
    rows = list(range(len(tasks)))
    if rows:
        convs = [prompts.final_messages(tasks[i].problem, memories[i][-1], cfg.prompt_version) for i in rows]
        step("final", n_steps, rows, convs, cfg.answer_tokens)
    bar.close()
    return [
        Trajectory(
            task_id=task.id,
            problem=task.problem,
            turns=turns[i],
            memories=memories[i],
            response=turns[i][-1].completion.text,
            answer=extract_answer(turns[i][-1].completion.text, cfg.answer_mode),
        )
        for i, task in enumerate(tasks)
    ]


def _write_trace(f: IO[str], task_id: str, turn: Turn, memory: str | None) -> None:
    row = {
        "task_id": task_id,
        "kind": turn.kind,
        "step": turn.step,
        "prompt": turn.messages[-1]["content"],
        "response": turn.completion.text,
        "memory": memory,
        "prompt_tokens": len(turn.completion.prompt_ids),
        "completion_tokens": len(turn.completion.completion_ids),
        "finish_reason": turn.completion.finish_reason,
        "batch_seconds": round(turn.seconds, 4),
    }
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()


def open_trace(path: str | Path | None) -> IO[str] | None:
    """Open a JSONL trace file for appending (None disables tracing)."""
    if path is None:
        return None
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return open(p, "a", encoding="utf-8")
