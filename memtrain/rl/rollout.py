"""Rollouts of the MemTrain objective: G1 E2E trajectories per document, G2 IMR answers per trajectory.

One trajectory is :func:`rollout_trajectory`, an ``async`` function over a
:class:`~memtrain.agent.loop.Generator` — the same code runs inside memtrain's trainer (all B·G1
trajectories of a batch concurrently through one turn batcher, :func:`collect`) and inside veRL's agent loop
(:mod:`memtrain.integrations.verl`). Per trajectory (DESIGN §2–3):

1. Read the document (:func:`memtrain.agent.loop.read_document`): T memory updates and the final answer.
2. :func:`memtrain.tasks.imr.pick_probe` picks an IMR question (the one rule, shared with evaluation: k, an
   earlier chunk c_l, the hidden entity ỹ as ``[TARGET]``), drawn from ``(seed, task id, copy index)``.
   Trajectories without a probe have an IMR term of 0 and are counted (``imr/missing``).
3. The IMR prompt's G2 answers are one generator call (each with its own seed); concurrent trajectories'
   IMR calls coalesce into one engine call.
4. Rewards (:mod:`memtrain.rl.rewards`): ``R^I`` per IMR answer, ``R^E`` per trajectory (E2E answer reward
   + λ/G2·Σ R^I), both scored by ``rollout.reward``. QA tasks (``kind="qa"``) use the same path, no IMR.
   Metrics are named for what was scored (``reward/e2e_f1`` when the reward is F1); the strict EM of every
   answer is logged beside them (``score/e2e_strict_em``) so runs with different rewards stay comparable.

``imr: false`` removes IMR entirely (the paper's no-IMR ablation); ``imr: true`` with ``lambda_imr: 0``
trains the IMR answers but does not fold their reward into E2E (the paper's "separate IMR branch" ablation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from memtrain.agent.engine import Engine, Sampling
from memtrain.agent.loop import (
    AgentConfig,
    Generator,
    copy_keys,
    n_conversations,
    read_document,
    run_sessions,
)
from memtrain.records import MemTask, Rollouts, ScoredTrajectory
from memtrain.rl import rewards
from memtrain.rl.config import RolloutConfig
from memtrain.scoring import extract_boxed
from memtrain.seeds import derive_seed
from memtrain.tasks.imr import maskable_chunks, pick_probe, probe_rng


async def rollout_trajectory(
    gen: Generator, task: MemTask, copy: int, agent: AgentConfig, cfg: RolloutConfig, seed: int
) -> ScoredTrajectory:
    """One trajectory of the MemTrain objective (or of QA post-training), with its IMR answers and rewards.

    ``copy`` numbers the G1 reads of one document: with ``seed`` it fixes this trajectory's sampling seeds
    and its IMR draw, independently of the batch it runs in.
    """
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, seed=seed)
    traj = await read_document(gen, task, agent, sampling, key=f"{task.id}|{copy}")
    answer = rewards.answer_reward(traj.response, task.answers, cfg.reward, agent.answer_mode)
    strict = rewards.answer_reward(traj.response, task.answers, "strict_em", agent.answer_mode)
    probe = None
    if cfg.imr and task.kind != "qa":
        probe = pick_probe(task, traj.memories, probe_rng(seed, task.id, copy), agent.prompt_version)
    if probe is not None:
        seeds = [derive_seed(seed, "imr", task.id, copy, j) for j in range(cfg.g2)]  # each answer on its own
        probe.completions = await gen.complete(
            [probe.messages] * cfg.g2, dataclasses.replace(sampling, max_new_tokens=agent.answer_tokens,
                                                           seeds=seeds))
        cand = probe.candidate
        probe.rewards = [rewards.imr_reward(c.text, cand.answer, cand.forms, agent.answer_mode, cfg.reward)
                         for c in probe.completions]
    coupled = rewards.coupled_reward(answer, probe.rewards if probe else [], cfg.lambda_imr, cfg.g2)
    return ScoredTrajectory(trajectory=traj, imr=probe, answer_reward=answer, answer_strict=strict,
                            reward=coupled)


def imr_conversations(task: MemTask, agent: AgentConfig, cfg: RolloutConfig) -> int:
    """IMR answers one read of ``task`` costs: G2 when the chunks it reads give a probe, else none (whether
    a probe exists depends on the task and the chunks read alone, not on what the memory says)."""
    if not cfg.imr or task.kind == "qa":
        return 0
    n_read = min(len(task.chunks), agent.max_chunks or len(task.chunks))
    return cfg.g2 if maskable_chunks(task, n_read) else 0


def collect(
    engine: Engine,
    tasks: Sequence[MemTask],
    agent: AgentConfig,
    cfg: RolloutConfig,
    seed: int = 0,
    progress: bool = False,
) -> Rollouts:
    """Sample trajectories, IMR answers and rewards for a batch of documents (see module docstring).

    ``seed`` fixes the IMR draws and the engine's sampling seed: a function of (run seed, step) in
    training, the run seed in evaluation.
    """
    tasks = list(tasks)
    doc_of = [d for d in range(len(tasks)) for _ in range(cfg.g1)]
    reads = [tasks[d] for d in doc_of]
    sessions = [
        lambda gen, task=task, copy=copy: rollout_trajectory(gen, task, copy, agent, cfg, seed)
        for task, (_, copy) in zip(reads, copy_keys(reads), strict=True)
    ]
    total = sum(n_conversations(t, agent) + imr_conversations(t, agent, cfg) for t in reads)
    scored = run_sessions(engine, sessions, total=total, desc="rollout", progress=progress)
    out = Rollouts(tasks=tasks, g1=cfg.g1, trajectories=[s.trajectory for s in scored], doc_of=doc_of,
                   answer_rewards=[s.answer_reward for s in scored], imr=[s.imr for s in scored],
                   rewards=[s.reward for s in scored], metrics={},
                   answer_strict=[s.answer_strict for s in scored])
    out.metrics = rollout_metrics(out, cfg.reward, agent.answer_mode)
    return out


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def rollout_metrics(r: Rollouts, reward: str = "strict_em", answer_mode: str = "boxed") -> dict[str, float]:
    """Every reward component and length statistic, logged separately and named for what was scored."""
    updates = [t.completion for tr in r.trajectories for t in tr.turns if t.kind == "update"]
    finals = [t.completion for tr in r.trajectories for t in tr.turns if t.kind == "final"]
    imr_comps = [c for q in r.imr if q for c in q.completions]
    every = updates + finals + imr_comps
    gen_tokens = sum(len(c.completion_ids) for c in every)
    m = {
        f"reward/e2e_{reward}": _mean(r.answer_rewards),
        f"reward/imr_{reward}": _mean([x for q in r.imr if q for x in q.rewards]),
        "reward/coupled": _mean(r.rewards),
        "score/e2e_strict_em": _mean(r.answer_strict),
        "score/imr_strict_em": _mean([rewards.imr_reward(c.text, q.candidate.answer, q.candidate.forms,
                                                         answer_mode, "strict_em")
                                      for q in r.imr if q for c in q.completions]),
        "reward/no_boxed_final": _mean([float(extract_boxed(tr.response) is None) for tr in r.trajectories]),
        "reward/no_boxed_imr": _mean([float(extract_boxed(c.text) is None) for c in imr_comps]),
        "imr/asked": float(sum(q is not None for q in r.imr)),
        "imr/missing": float(sum(q is None for q in r.imr)),
        "len/update_tokens": _mean([len(c.completion_ids) for c in updates]),
        "len/final_tokens": _mean([len(c.completion_ids) for c in finals]),
        "len/imr_tokens": _mean([len(c.completion_ids) for c in imr_comps]),
        "len/prompt_tokens": _mean([len(c.prompt_ids) for c in every]),
        "len/chunks_read": _mean([len(tr.memories) - 1 for tr in r.trajectories]),
        "truncated/update": _mean([float(c.finish_reason == "length") for c in updates]),
        "truncated/final": _mean([float(c.finish_reason == "length") for c in finals]),
        "truncated/imr": _mean([float(c.finish_reason == "length") for c in imr_comps]),
        "truncated/all": _mean([float(c.finish_reason == "length") for c in every]),
        "gen/tokens": float(gen_tokens),
    }
    return m
