"""The memory loop (DESIGN §1), written once, per trajectory, for every engine.

Step t = 1..T: the prompt holds the problem, the previous memory m_{t-1} (m_0 = "No previous memory") and
chunk c_t; the whole response, cut to ``memory_tokens``, becomes m_t. The final step asks for the answer
from m_T alone. Every step is an independent single-turn conversation, so cost is linear in the number of
chunks and each conversation is trainable on its own.

:func:`read_document` reads **one** document: an ``async`` function over a :class:`Generator` (anything
with ``async complete(conversations, sampling)``), the shape of veRL's ``AgentLoopBase.run``. Batching is
the generator's business, not the loop's: :class:`TurnBatcher` puts a batch engine (HF, vLLM, an
OpenAI-compatible client) behind that interface and coalesces the requests of concurrent trajectories,
flushing when every live trajectory is waiting, so step t of 16 documents is still one engine call;
veRL's server manager is another generator (:mod:`memtrain.integrations.verl`). :func:`run_sessions`
drives any per-trajectory coroutines (the memory loop, the MemTrain rollout, the searching agent) through
one batcher, and :func:`run_memory_agent` is the synchronous entry for a list of tasks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol, TypeVar

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


def cut_memory(engine: Engine | Generator, completion: Completion, memory_tokens: int) -> str:
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


Conversation = list[dict[str, str]]
T = TypeVar("T")


class Generator(Protocol):
    """What a per-trajectory loop generates with: one awaitable call for one or several conversations.

    ``sampling.seeds`` (when set) holds one seed per conversation. A call with several conversations (the G2
    answers of one IMR prompt) is one wait: batchers coalesce calls, never split a trajectory's call.
    """

    tokenizer: Any

    async def complete(
        self, conversations: Sequence[Conversation], sampling: Sampling
    ) -> list[Completion]: ...


class TurnBatcher:
    """A batch engine behind the :class:`Generator` interface, coalescing concurrent trajectories.

    ``live`` trajectories share the batcher; a call waits until every live one is waiting too (or has left),
    then all pending conversations go to ``engine.generate`` at once, one call per distinct sampling setting
    (update and final turns have different budgets). So reading B documents in lock-step costs about T+1
    engine calls, as a hand-written turn-synchronous loop would, while each trajectory stays a plain
    sequential coroutine. The engine runs on the event loop's thread: nothing else needs it meanwhile.
    """

    def __init__(self, engine: Engine, live: int, on_batch: Callable[[int], None] | None = None):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.live = live
        self.on_batch = on_batch
        self.pending: list[tuple[list[Conversation], Sampling, asyncio.Future]] = []

    async def complete(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[Completion]:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((list(conversations), sampling, future))
        self._flush_if_all_waiting()
        return await future

    def leave(self) -> None:
        """A trajectory finished (or failed): stop waiting for it."""
        self.live -= 1
        self._flush_if_all_waiting()

    def _flush_if_all_waiting(self) -> None:
        if not self.pending or len(self.pending) < self.live:
            return
        batch, self.pending = self.pending, []
        groups: dict[tuple, list[tuple[list[Conversation], Sampling, asyncio.Future]]] = {}
        for item in batch:  # same decoding settings, seeds aside
            groups.setdefault(dataclasses.astuple(dataclasses.replace(item[1], seed=None, seeds=None)),
                              []).append(item)
        for items in groups.values():
            convs = [c for conv, _, _ in items for c in conv]
            seeds = [s.seeds[j] if s.seeds else s.seed for conv, s, _ in items for j in range(len(conv))]
            sampling = dataclasses.replace(items[0][1], seed=None,
                                           seeds=None if all(x is None for x in seeds) else seeds)
            try:
                comps = self.engine.generate(convs, sampling)
            except BaseException as e:  # every waiting trajectory sees the engine's error
                for _, _, f in items:
                    f.set_exception(e)
                continue
            at = 0
            for conv, _, f in items:
                f.set_result(comps[at : at + len(conv)])
                at += len(conv)
            if self.on_batch:
                self.on_batch(len(convs))


def run_sessions(
    engine: Engine,
    sessions: Sequence[Callable[[Generator], Awaitable[T]]],
    total: int | None = None,
    desc: str = "memory agent",
    progress: bool = True,
) -> list[T]:
    """Run per-trajectory coroutines concurrently over one :class:`TurnBatcher`; results in input order.

    ``total`` is the number of conversations expected, for the progress bar (one tick per conversation).
    Works from synchronous code and from inside a running event loop (e.g. Jupyter): then it runs on a
    helper thread.
    """
    if not sessions:
        return []
    bar = progress_bar(total=total, desc=desc, unit="conv", disable=not progress, leave=False)

    async def main() -> list[T]:
        batcher = TurnBatcher(engine, live=len(sessions), on_batch=bar.update)

        async def one(session: Callable[[Generator], Awaitable[T]]) -> T:
            try:
                return await session(batcher)
            finally:
                batcher.leave()

        return list(await asyncio.gather(*(one(s) for s in sessions)))

    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(main())
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, main()).result()
    finally:
        bar.close()


async def read_document(
    gen: Generator,
    task: MemTask,
    cfg: AgentConfig,
    sampling: Sampling,
    key: str | None = None,
    trace: IO[str] | None = None,
    on_turn: Callable[[Turn, str | None], None] | None = None,
) -> Trajectory:
    """Read one task's chunks with a bounded memory, then answer: one trajectory.

    ``on_turn(turn, memory)`` is called as each turn completes (``memory`` is the new memory after an
    update, None after the final answer), so a caller can show every memory as it is written.

    ``sampling.max_new_tokens`` is overridden per turn by the memory and answer budgets. When
    ``sampling.seed`` is set, each conversation gets its own seed derived from (seed, ``key``, step); ``key``
    (default: the task id) must tell apart the copies of one document in a GRPO group, so that they sample
    independently on engines that seed each request (vLLM, OpenAI-compatible servers), and reruns are
    identical.
    """
    key = task.id if key is None else key
    chunks = task.chunks[: cfg.max_chunks] if cfg.max_chunks else task.chunks
    memories, turns = [prompts.NO_MEMORY], []

    async def turn(kind: str, t: int, conv: Conversation, budget: int) -> Completion:
        seeds = None if sampling.seed is None else [derive_seed(sampling.seed, key, t)]
        start = time.perf_counter()
        step = dataclasses.replace(sampling, max_new_tokens=budget, seeds=seeds)
        (comp,) = await gen.complete([conv], step)
        turns.append(Turn(kind=kind, step=t, messages=conv, completion=comp,
                          seconds=time.perf_counter() - start))
        if kind == "update":
            memories.append(cut_memory(gen, comp, cfg.memory_tokens))
        if trace is not None:
            _write_trace(trace, task.id, turns[-1], memories[-1] if kind == "update" else None)
        if on_turn is not None:
            on_turn(turns[-1], memories[-1] if kind == "update" else None)
        return comp

    for t, chunk in enumerate(chunks):
        conv = prompts.update_messages(task.problem, memories[-1], chunk, cfg.prompt_version)
        await turn("update", t, conv, cfg.memory_tokens)
    final = await turn("final", len(chunks), prompts.final_messages(task.problem, memories[-1],
                                                                     cfg.prompt_version), cfg.answer_tokens)
    return Trajectory(task_id=task.id, problem=task.problem, turns=turns, memories=memories,
                      response=final.text, answer=extract_answer(final.text, cfg.answer_mode))


def copy_keys(tasks: Sequence[MemTask]) -> list[tuple[str, int]]:
    """(task id, which copy of that task in the list): distinct for the G copies of one document and
    independent of which other tasks share the batch."""
    seen: dict[str, int] = {}
    out = []
    for task in tasks:
        out.append((task.id, seen.get(task.id, 0)))
        seen[task.id] = seen.get(task.id, 0) + 1
    return out


def n_conversations(task: MemTask, cfg: AgentConfig) -> int:
    """Conversations one read of ``task`` costs: one update per chunk read, plus the final answer."""
    return min(len(task.chunks), cfg.max_chunks or len(task.chunks)) + 1


def run_memory_agent(
    engine: Engine,
    tasks: Sequence[MemTask],
    cfg: AgentConfig,
    sampling: Sampling,
    trace: IO[str] | None = None,
    progress: bool = True,
    on_turn: Callable[[Turn, str | None], None] | None = None,
) -> list[Trajectory]:
    """Read every task (:func:`read_document`), all concurrently through one :class:`TurnBatcher`."""
    keys = [f"{tid}|{c}" for tid, c in copy_keys(tasks)]
    sessions = [
        lambda gen, task=task, key=key: read_document(gen, task, cfg, sampling, key, trace, on_turn)
        for task, key in zip(tasks, keys, strict=True)
    ]
    total = sum(n_conversations(t, cfg) for t in tasks)
    return run_sessions(engine, sessions, total=total, progress=progress)


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
