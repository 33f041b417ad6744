"""The searching memory agent (MEM1 setting, DESIGN §10), one async function per trajectory.

Each turn is an **independent conversation**: the instruction with the question(s) (objectives joined by
"; "), and from the second turn on the agent's previous response as it was kept and the latest results —
nothing older. The ``<think>`` block is the memory::

    turn 1   user:      instruction + questions
             assistant: <think>memory</think><search>query</search>      (generation stops at </search>)
    turn t   user:      instruction + questions
             assistant: <think>m_{t-1}</think>\\n<search>q_{t-1}</search>   (as kept: memory cut to budget)
             user:      <information>[HINT]You have k turns left.[/HINT]
                        Doc 1(Title: "…") text
                        Doc 2(Title: "…") text …</information>
             assistant: <think>m_t</think><answer>a1; a2</answer>            (the episode ends)

Budgets (:class:`SearchAgentConfig`; MEM1's at paper scale): at most ``max_turns`` = 6 turns including
the answer, ``response_tokens`` = 1,000 generated per turn, the memory (``<think>`` content) cut to
``memory_tokens`` and the retrieved text to ``info_tokens`` tokens, ``topk`` passages from the retriever
(``retriever.topk``, 3). The hint counts the turns left after the one that searched (MEM1's training
rollout wording; with 1 left it says the next turn must answer).

**Stop sequences, emulated.** The engines' :class:`~memtrain.agent.engine.Sampling` has no ``stop``
field, so a turn generates up to its budget and the loop cuts the completion at the first ``</search>`` or
``</answer>``: the text ends with that tag and ``completion_ids`` become the shortest prefix whose decoding
contains it (log-probs cut alike), ``finish_reason = "stop"``. What was generated after the tag is
dropped (``SearchStep.cut``) — exactly what a real stop sequence would have prevented — so training rows
hold what a stopping engine would have sampled (the tag, no EOS, as in MEM1). The cost is the wasted
tokens; an engine with stop sequences saves them without changing any result.

**Actions and malformed ones** (:func:`parse_action`): the action is the first closed ``<search>…</search>``
or ``<answer>…</answer>`` (MEM1's rule; after the cut there is at most one). Outcomes:

- ``search`` with a non-empty query: the retriever runs, its hits become the next turn's information;
- ``answer``: the episode ends; its content is the answer (scored by :mod:`memtrain.scoring`);
- two searches in one response: only the first runs (generation stops at its ``</search>``); a query with
  a second ``<search>`` inside (``<search>a<search>b</search>``) runs the text after the last opening tag
  (answers alike);
- ``invalid`` — no closed action tag (``no_action``, also when the budget ran out: ``truncated``), an empty
  query (``empty_query``), or a search on the last turn (``turn_limit``, nothing would read its results).
  With ``on_invalid=end`` (MEM1's training rollout) the episode ends without an answer (reward 0); with
  ``on_invalid=retry`` (Search-R1's) the turn counts, and the next one gets an ``<information>`` block
  saying the action was invalid (an invalid last turn ends the episode either way).

The memory of a turn is the content of its first ``<think>…</think>`` before the action; without one, the
text before the action tag (tags removed), so notes written without tags are still carried. Every turn is
one training conversation (:class:`~memtrain.records.Turn` of kind ``search``, ``answer`` or ``invalid``)
and gets the trajectory's broadcast advantage (:mod:`memtrain.rl.rows`); MEM1 instead masks the
``<information>`` tokens of one packed sequence, of which these independent conversations are the exact
form. Retrieval is a plain synchronous call inside the coroutine, so it never holds a
:class:`~memtrain.agent.loop.TurnBatcher` flush waiting.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal, Protocol

from memtrain import prompts
from memtrain.agent.engine import Engine, Sampling
from memtrain.agent.loop import Generator, run_sessions
from memtrain.config import option
from memtrain.errors import MemtrainError
from memtrain.records import Completion, Hit, MemTask, SearchStep, Trajectory, Turn
from memtrain.scoring import OBJECTIVE_METRICS
from memtrain.seeds import derive_seed


@dataclass
class SearchAgentConfig:
    """Budgets and rules of the searching agent; the defaults are MEM1's (DESIGN §10)."""

    max_turns: int = option("turns per episode, the answer included (MEM1: 6)", 6)
    response_tokens: int = option("tokens generated per turn (MEM1: 1,000)", 1000)
    memory_tokens: int = option("the <think> memory carried to the next turn is cut to this many tokens",
                                1000)
    info_tokens: int = option("retrieved text of one <information> block is cut to this many tokens "
                              "(MEM1: 1,000)", 1000)
    prompt_version: str = option("search prompt set (prompts.py): mem1 (the paper's instruction) or micro "
                                 "(a short one with examples, for the embedded 135M model)", "mem1")
    on_invalid: Literal["end", "retry"] = option(
        "a malformed action: end the episode without an answer (MEM1's training rollout) or retry: the turn "
        "counts and the next one is told the action was invalid (Search-R1's)", "end")
    reward: Literal["em", "sub_em", "accuracy", "f1", "strict_em"] = option(
        "per-objective match, averaged over objectives, for the training reward: em (SQuAD-normalised EM, "
        "the paper's); sub_em (gold inside the answer), accuracy (two-way sub-EM) and f1 are CPU-scale "
        "knobs", "em")

    def validate(self) -> None:
        for name in ("max_turns", "response_tokens", "memory_tokens", "info_tokens"):
            if getattr(self, name) < 1:
                raise MemtrainError(f"SearchAgentConfig.{name} must be >= 1, got {getattr(self, name)}")
        prompts.get_search_prompts(self.prompt_version)
        if self.on_invalid not in ("end", "retry"):
            raise MemtrainError(f"SearchAgentConfig.on_invalid must be end or retry, got {self.on_invalid!r}")
        if self.reward not in OBJECTIVE_METRICS:
            raise MemtrainError(f"SearchAgentConfig.reward must be one of {OBJECTIVE_METRICS}, got "
                                f"{self.reward!r}")


class Searcher(Protocol):
    """What the agent searches through (:class:`memtrain.search.SearchBackend`)."""

    def search(self, queries: list[str], topk: int | None = None) -> list[list[Hit]]: ...


# ------------------------------------------------------------------------------------------- one turn

_CLOSE = re.compile(r"</(?:search|answer)>")
_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_THINK_TAGS = re.compile(r"</?think>")


@dataclass
class Action:
    """A parsed response: ``kind`` is search, answer or invalid (``reason`` says why)."""

    kind: str
    memory: str
    query: str | None = None
    answer: str | None = None
    reason: str | None = None


def parse_action(text: str) -> Action:
    """The action and memory of one (already cut) response; rules in the module docstring."""
    m = _ACTION.search(text)
    before = text[: m.start()] if m else text
    think = _THINK.search(before)
    memory = think.group(1).strip() if think else _THINK_TAGS.sub("", before).strip()
    if m is None:
        return Action("invalid", memory, reason="no_action")
    tag, content = m.group(1), m.group(2)
    content = content.rsplit(f"<{tag}>", 1)[-1].strip()  # "<search>a<search>b</search>": b
    if tag == "answer":
        return Action("answer", memory, answer=content)
    query = content
    if not query:
        return Action("invalid", memory, reason="empty_query")
    return Action("search", memory, query=query)


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def cut_at_action(tokenizer: Any, comp: Completion) -> tuple[Completion, bool]:
    """``comp`` cut after its first ``</search>``/``</answer>`` (the emulated stop sequence), and whether
    anything but whitespace followed the tag. Unchanged when there is no closing tag."""
    m = _CLOSE.search(comp.text)
    if m is None:
        return comp, False
    tag, ids = m.group(0), comp.completion_ids
    lo, hi = 1, len(ids)
    if tokenizer is not None and ids and tag in _decode(tokenizer, ids):
        while lo < hi:  # the shortest prefix whose decoding holds the tag (monotone in the prefix length)
            mid = (lo + hi) // 2
            if tag in _decode(tokenizer, ids[:mid]):
                hi = mid
            else:
                lo = mid + 1
        keep = lo
    else:
        keep = len(ids)
    logprobs = comp.logprobs[:keep] if comp.logprobs is not None else None
    cut = Completion(text=comp.text[: m.end()], prompt_ids=comp.prompt_ids, completion_ids=list(ids[:keep]),
                     finish_reason="stop", logprobs=logprobs)
    return cut, bool(comp.text[m.end():].strip())


def cut_tokens(tokenizer: Any, text: str, budget: int) -> str:
    """``text`` cut to its first ``budget`` tokens (unchanged when it fits or there is no tokenizer)."""
    if tokenizer is None:
        return text
    ids = tokenizer.encode(text, add_special_tokens=False)
    return text if len(ids) <= budget else _decode(tokenizer, ids[:budget]).strip()


def format_hits(hits: Sequence[Hit]) -> str:
    """Search-R1/MEM1's rendering: ``Doc i(Title: <first line of contents>) <rest>`` one per line."""
    lines = []
    for i, h in enumerate(hits, 1):
        title, _, text = h.contents.partition("\n")
        lines.append(f"Doc {i}(Title: {title}) {text}\n")
    return "".join(lines)


def information(tokenizer: Any, hits: Sequence[Hit], turns_left: int, info_tokens: int) -> str:
    """The ``<information>`` block after a search: MEM1's hint, then the hits cut to ``info_tokens``."""
    docs = cut_tokens(tokenizer, format_hits(hits), info_tokens)
    return f"<information>{prompts.search_hint(turns_left)}\n{docs}</information>"


# ------------------------------------------------------------------------------------------- one episode


def objectives(task: MemTask) -> list[list[str]]:
    """Gold aliases per objective, in question order (a task without objectives has one: its answers)."""
    objs = task.meta.get("objectives")
    return [list(o["answers"]) for o in objs] if objs else [list(task.answers)]


async def search_trajectory(
    gen: Generator,
    searcher: Searcher,
    task: MemTask,
    cfg: SearchAgentConfig,
    sampling: Sampling,
    key: str | None = None,
    trace: IO[str] | None = None,
) -> Trajectory:
    """One search episode for ``task`` (its ``problem`` holds the questions): a trajectory of turns.

    ``sampling.max_new_tokens`` is replaced by ``cfg.response_tokens``. With ``sampling.seed`` set each turn
    gets its own seed from (seed, ``key``, turn): ``key`` (default: the task id) must tell apart the G copies
    of one task in a GRPO group. ``memories`` are m_0 = "" (nothing yet) then each turn's kept memory.
    """
    key = task.id if key is None else key
    tok = gen.tokenizer
    ps = prompts.get_search_prompts(cfg.prompt_version)
    turns: list[Turn] = []
    steps: list[SearchStep] = []
    memories = [""]
    previous = info = None
    answer = None
    for t in range(cfg.max_turns):
        last = t == cfg.max_turns - 1
        conv = prompts.search_messages(task.problem, previous, info, cfg.prompt_version)
        seeds = None if sampling.seed is None else [derive_seed(sampling.seed, key, t)]
        start = time.perf_counter()
        (raw,) = await gen.complete([conv], dataclasses.replace(sampling, max_new_tokens=cfg.response_tokens,
                                                                seeds=seeds))
        comp, cut = cut_at_action(tok, raw)
        act = parse_action(comp.text)
        memory = cut_tokens(tok, act.memory, cfg.memory_tokens)
        truncated = act.kind == "invalid" and raw.finish_reason == "length"
        step = SearchStep(turn=t, action=act.kind, memory=memory, query=act.query, answer=act.answer,
                          reason=act.reason, truncated=truncated, cut=cut)
        if step.action == "search" and last:
            step.action, step.reason = "invalid", "turn_limit"
        if step.action == "search":
            step.hits = list(searcher.search([act.query])[0])  # type: ignore[list-item]
            info = information(tok, step.hits, cfg.max_turns - t - 1, cfg.info_tokens)
            previous = f"<think>{memory}</think>\n<search>{act.query}</search>"
        elif step.action == "invalid":
            previous = f"<think>{memory}</think>"
            info = f"<information>{prompts.search_hint(cfg.max_turns - t - 1)}\n{ps.invalid}</information>"
        turns.append(Turn(kind=step.action, step=t, messages=conv, completion=comp,
                          seconds=time.perf_counter() - start))
        steps.append(step)
        memories.append(memory)
        if trace is not None:
            _write_trace(trace, task.id, turns[-1], step)
        if step.action == "answer":
            answer = step.answer
            break
        if step.action == "invalid" and (cfg.on_invalid == "end" or last):
            break
    return Trajectory(task_id=task.id, problem=task.problem, turns=turns, memories=memories,
                      response=turns[-1].completion.text, answer=answer, steps=steps)


def run_search_agent(
    engine: Engine,
    searcher: Searcher,
    tasks: Sequence[MemTask],
    cfg: SearchAgentConfig,
    sampling: Sampling,
    trace: IO[str] | None = None,
    progress: bool = True,
    keys: Sequence[str] | None = None,
) -> list[Trajectory]:
    """Every task's episode, all concurrently through one turn batcher (one engine call per turn round)."""
    keys = list(keys) if keys is not None else [t.id for t in tasks]
    sessions = [
        lambda gen, task=task, key=key: search_trajectory(gen, searcher, task, cfg, sampling, key, trace)
        for task, key in zip(tasks, keys, strict=True)
    ]
    return run_sessions(engine, sessions, total=len(tasks) * cfg.max_turns, desc="search agent",
                        progress=progress)


def step_row(step: SearchStep) -> dict[str, Any]:
    """A turn as a trace/results row: action, memory, query, retrieved titles and ids."""
    return {"turn": step.turn, "action": step.action, "reason": step.reason, "memory": step.memory,
            "query": step.query, "answer": step.answer, "titles": [h.title for h in step.hits],
            "hit_ids": [h.id for h in step.hits], "truncated": step.truncated, "cut": step.cut}


def _write_trace(f: IO[str], task_id: str, turn: Turn, step: SearchStep) -> None:
    row = {"task_id": task_id, **step_row(step), "prompt": turn.messages[-1]["content"],
           "response": turn.completion.text, "prompt_tokens": len(turn.completion.prompt_ids),
           "completion_tokens": len(turn.completion.completion_ids),
           "finish_reason": turn.completion.finish_reason, "batch_seconds": round(turn.seconds, 4)}
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()
