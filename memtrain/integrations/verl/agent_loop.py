"""veRL agent loops that run memtrain's per-trajectory rollout (DESIGN §9).

veRL's v1 trainer starts one agent loop per (prompt, session): ``rollout.n`` sessions of one dataset row
are the G1 trajectories of one document. Each loop here is a thin shell around
:func:`memtrain.rl.rollout.rollout_trajectory` — the very function memtrain's own trainer runs — over
:class:`ServerGenerator`, which turns memtrain's ``complete(conversations, sampling)`` into veRL server
calls. So prompts, chunking, memory cut, the IMR rule and the rewards are memtrain's, byte for byte.

``run`` returns every conversation of the session as its own :class:`AgentLoopOutput`, in this order:
the memory updates, then the IMR answers (``extra_fields["kind"] == "imr"``), then the final answer last,
carrying the coupled reward ``R^E`` (``reward_score``, so veRL's reward loop is skipped) and
``reward_extra_info``. Stock v1 broadcasts the last output's reward and advantage to all of them, IMR
answers included; :mod:`memtrain.integrations.verl.worker` gives IMR answers their own groups instead.

Registered names (the dataset's ``agent_name`` column): ``memtrain_memtrain`` (E2E tasks: updates + G2 IMR
answers + final), ``memtrain_memagent`` (long-document QA post-training: updates + final) and
``memtrain_search`` (search-QA post-training, the MEM1 recipe: one
:func:`memtrain.rl.search_rollout.search_rollout_trajectory` per session, every turn an output). Budgets and
rewards come from the agent-loop registry entry written by ``memtrain verl-config`` (keys ``agent``,
``rollout``, ``search``, ``retriever``, ``seed``: memtrain's :class:`AgentConfig`, :class:`RolloutConfig`,
:class:`SearchAgentConfig`, :class:`SearchConfig`). Sampling temperature and
top-p come from veRL's rollout config (``sampling_params``), which is the source of truth in a veRL run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopBase,
    AgentLoopMetrics,
    AgentLoopOutput,
    _agent_loop_registry,
)

from memtrain.agent.engine import Sampling, render
from memtrain.agent.loop import AgentConfig, Conversation
from memtrain.agent.search import SearchAgentConfig
from memtrain.config import from_dict
from memtrain.errors import MemtrainError
from memtrain.records import Completion, MemTask, ScoredTrajectory
from memtrain.rl.config import RolloutConfig
from memtrain.rl.rollout import rollout_trajectory
from memtrain.rl.search_rollout import search_rollout_trajectory
from memtrain.search import SearchConfig, make_search
from memtrain.seeds import derive_seed

MEMTRAIN_LOOP = "memtrain_memtrain"
MEMAGENT_LOOP = "memtrain_memagent"
SEARCH_LOOP = "memtrain_search"


class ServerGenerator:
    """memtrain's :class:`~memtrain.agent.loop.Generator` over veRL's token-in/token-out server manager.

    Prompts are rendered with the chat template (:func:`memtrain.agent.engine.render`, the ids memtrain's
    own engines send); each conversation is one ``server_manager.generate`` call with veRL's sampling
    parameters and memtrain's per-turn ``max_tokens``. Conversations of one call run concurrently: veRL's
    server batches them. A completion that used its whole budget is reported as ``finish_reason="length"``.

    The weight versions the server reports (``extra_fields`` ``min_global_steps`` / ``max_global_steps``,
    set by veRL's server client) are gathered over every call: :meth:`weight_steps` is the span of
    policy versions the trajectory was sampled from, which veRL's step metrics and staleness control read.
    """

    def __init__(self, server_manager: Any, tokenizer: Any, sampling_params: dict[str, Any]):
        self.server = server_manager
        self.tokenizer = tokenizer
        self.sampling_params = dict(sampling_params)
        self.steps: list[int] = []

    def weight_steps(self, default: int) -> dict[str, int]:
        """``{"min_global_steps", "max_global_steps"}`` over this generator's calls (``default`` if none
        reported one)."""
        return {"min_global_steps": min(self.steps, default=default),
                "max_global_steps": max(self.steps, default=default)}

    async def complete(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[Completion]:
        async def one(conversation: Conversation) -> Completion:
            prompt_ids = render(self.tokenizer, conversation)
            params = dict(self.sampling_params, max_tokens=sampling.max_new_tokens)
            out = await self.server.generate(request_id=uuid.uuid4().hex, prompt_ids=prompt_ids,
                                             sampling_params=params)
            extra = out.extra_fields or {}
            for key in ("min_global_steps", "max_global_steps", "global_steps"):
                if extra.get(key) is not None:
                    self.steps.append(int(extra[key]))
            ids = list(out.token_ids)
            return Completion(text=self.tokenizer.decode(ids, skip_special_tokens=True).strip(),
                              prompt_ids=prompt_ids, completion_ids=ids,
                              finish_reason="length" if len(ids) >= sampling.max_new_tokens else "stop",
                              logprobs=list(out.log_probs) if out.log_probs is not None else None)

        return list(await asyncio.gather(*(one(c) for c in conversations)))


def task_from_row(row: dict[str, Any], kind: str) -> MemTask:
    """The memtrain task a veRL dataset row carries (``extra_info.task``, written by the parquet export)."""
    extra = row.get("extra_info") or {}
    where = f"veRL row index={row.get('index', extra.get('index', '?'))}"
    if "task" not in extra:
        raise MemtrainError(f"{where} has no extra_info.task: export the task set with "
                            "`memtrain verl-config`")
    task = MemTask.from_dict(json.loads(extra["task"]))
    if kind != "search" and (not task.chunks or not any(c.strip() for c in task.chunks)):
        raise MemtrainError(f"{where} (task {task.id!r}) has no chunks: nothing to read")
    if not task.answers or not any(a.strip() for a in task.answers):
        raise MemtrainError(f"{where} (task {task.id!r}) has an empty answer: nothing to score against")
    if task.kind != kind:
        raise MemtrainError(f"{where} (task {task.id!r}) is a {task.kind!r} task, but this agent loop reads "
                            f"{kind!r} tasks: check the agent_name column")
    return task


def to_outputs(scored: ScoredTrajectory, steps: dict[str, int] | None = None, mask_truncated: bool = False
               ) -> list[AgentLoopOutput]:
    """One output per conversation: updates (or search turns), IMR answers, then the last turn (with R^E).

    ``steps`` (:meth:`ServerGenerator.weight_steps`) goes into every output's ``extra_fields``: veRL tags
    each stored row with the policy versions it was sampled from and its step metrics need them.
    ``mask_truncated`` (memtrain's ``loss.mask_truncated``) zeroes the response mask of completions cut at
    their budget: veRL's loss skips fully masked rows, as memtrain's trainer drops them.

    Every output's ``reward_extra_info`` has the same numeric keys (veRL stacks them across rows):
    the trajectory's ``coupled_reward`` (R^E), ``e2e_reward``, ``e2e_strict_em``, ``imr_reward_mean``, and
    ``row_reward`` — what this row is trained on (R^E, or R^I for an IMR answer). ``coupled_reward`` is the
    metric to give veRL's DAPO filter (``algorithm.filter_groups.metric``).
    """
    imr_rewards = scored.imr.rewards if scored.imr else []
    info = {"coupled_reward": scored.reward, "e2e_reward": scored.answer_reward,
            "e2e_strict_em": scored.answer_strict,
            "imr_reward_mean": sum(imr_rewards) / len(imr_rewards) if imr_rewards else 0.0}

    def output(comp: Completion, row_reward: float, **extra: Any) -> AgentLoopOutput:
        keep = 0 if mask_truncated and comp.finish_reason == "length" else 1
        return AgentLoopOutput(
            prompt_ids=list(comp.prompt_ids), response_ids=list(comp.completion_ids),
            response_mask=[keep] * len(comp.completion_ids), response_logprobs=comp.logprobs, num_turns=2,
            metrics=AgentLoopMetrics(),
            extra_fields={**(steps or {}), **extra,
                          "reward_extra_info": {**info, "row_reward": float(row_reward)}})

    *updates, final = scored.trajectory.turns
    outs = [output(t.completion, scored.reward, kind=t.kind, step=t.step) for t in updates]
    if scored.imr is not None:
        outs += [output(c, r, kind="imr", imr_group=0, imr_reward=r)
                 for c, r in zip(scored.imr.completions, scored.imr.rewards, strict=True)]
    last = output(final.completion, scored.reward, kind=final.kind, step=final.step)
    last.reward_score = scored.reward
    outs.append(last)
    return outs


def _plain(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


class _MemoryAgentLoop(AgentLoopBase):
    """Shared body: read the row's task, run one memtrain trajectory, return its conversations."""

    task_kind = "e2e"

    def __init__(self, *args: Any, agent: Any = None, rollout: Any = None, seed: int = 0, search: Any = None,
                 retriever: Any = None, mask_truncated: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.agent = from_dict(AgentConfig, _plain(agent), "agent")
        self.rollout = from_dict(RolloutConfig, _plain(rollout), "rollout")
        self.search = from_dict(SearchAgentConfig, _plain(search), "search")
        self.retriever = from_dict(SearchConfig, _plain(retriever), "retriever")
        self.seed = seed
        self.mask_truncated = mask_truncated

    async def run(self, sampling_params: dict[str, Any], **row: Any) -> list[AgentLoopOutput]:
        task = task_from_row(row, self.task_kind)
        gen = ServerGenerator(self.server_manager, self.tokenizer, sampling_params)
        # IMR draws: a function of (run seed, step, document, session), as in memtrain's trainer
        step = int(row.get("global_steps", 0))
        seed = derive_seed(self.seed, step)
        copy = int(row.get("session_id", 0))
        if self.task_kind == "search":
            scored = await search_rollout_trajectory(gen, searcher(self.retriever), task, copy, self.search,
                                                     self.rollout, seed)
        else:
            scored = await rollout_trajectory(gen, task, copy, self.agent, self.rollout, seed)
        # a server that reports no version sampled from the weights the trainer had before this step
        return to_outputs(scored, gen.weight_steps(default=max(step - 1, 0)), self.mask_truncated)


def register(name: str) -> Any:
    """veRL's ``register``, except that an entry already loaded from ``agent_loops.yaml`` is kept.

    veRL's worker loads the YAML registry first and imports this module later (on the first
    ``hydra.utils.instantiate``); its own decorator would then replace the entry with a bare ``_target_``,
    and every later session would run with default budgets and rewards instead of the run's.
    """

    def decorator(cls: type[AgentLoopBase]) -> type[AgentLoopBase]:
        _agent_loop_registry.setdefault(name, {"_target_": f"{cls.__module__}.{cls.__qualname__}"})
        return cls

    return decorator


_SEARCHERS: dict[str, Any] = {}


def searcher(cfg: SearchConfig) -> Any:
    """One search backend per worker process and config: veRL builds a loop object per session, and a local
    index must not be rebuilt for each (an HTTP client is cheap either way)."""
    key = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
    if key not in _SEARCHERS:
        _SEARCHERS[key] = make_search(cfg)
    return _SEARCHERS[key]


@register(MEMTRAIN_LOOP)
class MemTrainAgentLoop(_MemoryAgentLoop):
    """The MemTrain objective: T memory updates, G2 IMR answers, the final answer; reward R^E set here."""

    task_kind = "e2e"


@register(MEMAGENT_LOOP)
class MemAgentAgentLoop(_MemoryAgentLoop):
    """MemAgent long-document QA post-training: T memory updates and the final answer; reward = answer
    reward (``rollout.reward``: strict EM in the paper's recipe)."""

    task_kind = "qa"


@register(SEARCH_LOOP)
class MemSearchAgentLoop(_MemoryAgentLoop):
    """Search-QA post-training (MEM1 setting): ≤ ``search.max_turns`` turns, each an output; reward = the
    per-objective match of the final answer summed over objectives (MEM1), broadcast to every turn."""

    task_kind = "search"
