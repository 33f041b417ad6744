"""The memory agent served: a long document and a question in, the chunked memory loop run server-side
through the server's batcher, the answer (and on request every memory and step) out.

The loop is the library's (:func:`memtrain.agent.loop.run_memory_agent`); its engine is a
:class:`~memtrain.serving.batcher.BatcherEngine`, so the steps of concurrent reads and plain requests share
generate calls. Every problem with the input is a :class:`BadRequest` raised before any generation: the
document, the budgets, and whether every step fits the context with a full memory in its prompt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from memtrain.errors import MemtrainError
from memtrain.serving.batcher import Batcher, BatcherEngine
from memtrain.serving.protocol import BadRequest, context_error, number

MEMORY_TASK_ID = "request"  # the task id of a served read: with a seed, its steps' seeds derive from it


AGENT_FIELDS = ("chunk_tokens", "memory_tokens", "answer_tokens", "max_chunks", "prompt_version",
                 "answer_mode")


def agent_config(spec: dict[str, Any], defaults: Any, where: str) -> Any:
    """The request's :class:`AgentConfig`: the server's defaults, overridden by the request's fields."""
    known = {*AGENT_FIELDS, "document", "question", "return_trace"}
    unknown = sorted(set(spec) - known)
    if unknown and where:
        raise BadRequest(f"unknown {where.rstrip('.')} fields {unknown}; known: {sorted(known)}",
                         where.rstrip("."))
    over: dict[str, Any] = {}
    for name in ("chunk_tokens", "memory_tokens", "answer_tokens", "max_chunks"):
        value = number(spec, name, None, int, 1, where)
        if value is not None:
            over[name] = value
    for name in ("prompt_version", "answer_mode"):
        if spec.get(name) is not None:
            if not isinstance(spec[name], str):
                raise BadRequest(f"'{where}{name}' must be a string", where + name)
            over[name] = spec[name]
    cfg = dataclasses.replace(defaults, **over)
    try:
        cfg.validate()
    except MemtrainError as e:
        raise BadRequest(str(e), where.rstrip(".") or None) from None
    return cfg


def trace_rows(traj: Any) -> list[dict[str, Any]]:
    rows = []
    for turn in traj.turns:
        rows.append({
            "kind": turn.kind,
            "step": turn.step,
            "prompt": turn.messages[-1]["content"],
            "response": turn.completion.text,
            "memory": traj.memories[turn.step + 1] if turn.kind == "update" else None,
            "prompt_tokens": len(turn.completion.prompt_ids),
            "completion_tokens": len(turn.completion.completion_ids),
            "finish_reason": turn.completion.finish_reason,
        })
    return rows


def usage(trajs: Sequence[Any]) -> dict[str, int]:
    p = sum(len(t.completion.prompt_ids) for tr in trajs for t in tr.turns)
    c = sum(len(t.completion.completion_ids) for tr in trajs for t in tr.turns)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def read(
    batcher: Batcher,
    tokenizer: Any,
    context_length: int | None,
    defaults: Any,
    spec: dict[str, Any],
    question: str,
    sampling: Any,
    n: int,
    deadline: float | None,
    check: Callable[[list[dict[str, str]], int], None] | None = None,
    where: str = "",
) -> list[Any]:
    """``n`` independent reads of ``spec['document']`` for ``question`` (trajectories, in order).

    ``defaults`` is the server's :class:`AgentConfig`, overridden by ``spec``'s fields; ``where`` prefixes
    field names in errors (``memory_agent.`` on the chat route); ``check(conversation, budget)`` runs
    before each step is queued (the server's context-length check).
    """
    from memtrain.agent.loop import make_task, run_memory_agent

    if tokenizer is None:
        raise BadRequest("this server's engine has no tokenizer, so it cannot chunk documents",
                         "memory_agent")
    document = spec.get("document")
    if not isinstance(document, str):
        raise BadRequest(f"'{where}document' must be a string (the text to read)", f"{where}document")
    cfg = agent_config(spec, defaults, where)
    try:
        task = make_task(document, question, tokenizer, cfg, task_id=MEMORY_TASK_ID)
    except MemtrainError as e:
        raise BadRequest(str(e), f"{where}document") from None
    if context_length is not None:
        check_fits(tokenizer, task, cfg, context_length)
    engine = BatcherEngine(batcher, tokenizer, deadline, check)
    return run_memory_agent(engine, [task] * n, cfg, sampling, progress=False)


def check_fits(tokenizer: Any, task: Any, cfg: Any, limit: int) -> None:
    """Before any generation: every step must fit ``limit`` with a full memory in its prompt."""
    from memtrain import prompts
    from memtrain.agent.engine import render

    chunks = task.chunks[: cfg.max_chunks] if cfg.max_chunks else task.chunks
    chunk = max(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in chunks)
    update = chunk + len(render(tokenizer, prompts.update_messages(task.problem, "", "", cfg.prompt_version)))
    final = len(render(tokenizer, prompts.final_messages(task.problem, "", cfg.prompt_version)))
    for prompt, completion in ((update + cfg.memory_tokens, cfg.memory_tokens),
                               (final + cfg.memory_tokens, cfg.answer_tokens)):
        if prompt + completion > limit:
            err = context_error(limit, prompt, completion)
            raise BadRequest(f"{err} (memory agent: a step's prompt holds the instructions, a chunk and up "
                             "to memory_tokens of memory; lower chunk_tokens, memory_tokens or "
                             "answer_tokens)", "memory_agent", "context_length_exceeded")
