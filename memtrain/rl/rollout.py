"""Rollouts of the MemTrain objective: G1 E2E trajectories per document, G2 IMR answers per trajectory.

For a batch of documents (DESIGN §2–3):

1. Every document is repeated G1 times and the whole batch is read in **one** turn-synchronous memory loop
   (:func:`memtrain.agent.loop.run_memory_agent`), so step t of all B·G1 trajectories is one engine call.
2. For each trajectory that read T chunks, :func:`choose_imr` picks an IMR question. Indexing is 1-based
   like the paper: m_k is the memory written after reading chunks c_1..c_k (m_0 is "No previous memory").
   We pick k uniformly in 2..T and then an **earlier** chunk c_l with 1 ≤ l < k — a chunk whose content
   reached m_k only through earlier memories, never the chunk just read — restricted to chunks that have an
   IMR candidate occurring in them. All surface forms of the candidate ỹ are replaced by ``[TARGET]`` in
   c_l, and the IMR prompt is ``prompts.imr_messages(m_k, masked c_l)``. Trajectories with T = 1, or with
   no candidate in c_1..c_{T−1}, get no IMR prompt: their IMR term is 0 and they are counted
   (``imr_missing``).
3. All IMR prompts of the batch, each repeated G2 times, go to the engine in **one** call.
4. Rewards (:mod:`memtrain.rl.rewards`): ``R^I`` per IMR answer, ``R^E`` per trajectory (E2E strict EM +
   λ/G2·Σ R^I). QA tasks (``kind="qa"``) use the same path with an EM / sub-EM reward and no IMR.

``imr: false`` removes IMR entirely (the paper's no-IMR ablation); ``imr: true`` with ``lambda_imr: 0``
trains the IMR answers but does not fold their reward into E2E (the paper's "separate IMR branch" ablation).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from memtrain import prompts
from memtrain.agent.engine import Completion, Engine, Sampling
from memtrain.agent.loop import AgentConfig, Trajectory, run_memory_agent
from memtrain.records import ImrCandidate, MemTask
from memtrain.rl import rewards
from memtrain.rl.config import RolloutConfig
from memtrain.scoring import extract_boxed
from memtrain.tasks.masking import mask_entity


@dataclass
class ImrQuestion:
    """One IMR prompt of a trajectory: recall ỹ of chunk c_l from memory m_k (1-based k, l)."""

    k: int
    l: int  # noqa: E741 - the paper's name
    candidate: ImrCandidate
    messages: list[dict[str, str]]
    completions: list[Completion] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)


@dataclass
class Rollouts:
    """Everything sampled for one batch, aligned by trajectory index (B·G1 trajectories)."""

    tasks: list[MemTask]  # the B documents
    g1: int
    trajectories: list[Trajectory]
    doc_of: list[int]  # document index of each trajectory
    answer_rewards: list[float]  # E2E / QA EM of each trajectory
    imr: list[ImrQuestion | None]
    rewards: list[float]  # R^E (coupled) per trajectory
    metrics: dict[str, float]


def choose_imr(task: MemTask, trajectory: Trajectory, rng: random.Random,
               version: str = "v1") -> ImrQuestion | None:
    """Pick (k, l, ỹ) for one trajectory as described in the module docstring; None when impossible."""
    n_read = len(trajectory.memories) - 1  # T
    maskable: dict[int, list[tuple[ImrCandidate, str]]] = {}
    for l in range(1, n_read):  # noqa: E741 - c_l with l ≤ T−1 so that some k > l exists
        cands = task.imr[l - 1] if l - 1 < len(task.imr) else []
        ok = []
        for c in cands:
            masked, n = mask_entity(task.chunks[l - 1], [c.answer, *c.forms], prompts.TARGET)
            if n > 0:
                ok.append((c, masked))
        if ok:
            maskable[l] = ok
    if not maskable:
        return None
    first = min(maskable)
    k = rng.randint(first + 1, n_read)
    l = rng.choice([x for x in sorted(maskable) if x < k])  # noqa: E741
    cand, masked = rng.choice(maskable[l])
    msgs = prompts.imr_messages(trajectory.memories[k], masked, version)
    return ImrQuestion(k=k, l=l, candidate=cand, messages=msgs)


def collect(
    engine: Engine,
    tasks: Sequence[MemTask],
    agent: AgentConfig,
    cfg: RolloutConfig,
    rng: random.Random,
    seed: int | None = None,
    progress: bool = False,
) -> Rollouts:
    """Sample trajectories, IMR answers and rewards for a batch of documents (see module docstring)."""
    tasks = list(tasks)
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, seed=seed)
    doc_of = [d for d in range(len(tasks)) for _ in range(cfg.g1)]
    t0 = time.perf_counter()
    trajs = run_memory_agent(engine, [tasks[d] for d in doc_of], agent, sampling, progress=progress)
    e2e_seconds = time.perf_counter() - t0

    answer_rewards = [rewards.answer_reward(tr.response, tasks[d].answers, cfg.reward, agent.answer_mode)
                      for d, tr in zip(doc_of, trajs, strict=True)]

    imr: list[ImrQuestion | None] = [None] * len(trajs)
    if cfg.imr:
        for i, (d, tr) in enumerate(zip(doc_of, trajs, strict=True)):
            if tasks[d].kind != "qa":
                imr[i] = choose_imr(tasks[d], tr, rng, agent.prompt_version)
    asked = [q for q in imr if q is not None]
    t1 = time.perf_counter()
    if asked:
        convs = [q.messages for q in asked for _ in range(cfg.g2)]
        s = dataclasses.replace(sampling, max_new_tokens=agent.answer_tokens,
                                seed=None if seed is None else seed + 10_007)
        comps = engine.generate(convs, s)
        for j, q in enumerate(asked):
            q.completions = comps[j * cfg.g2 : (j + 1) * cfg.g2]
            cand = q.candidate
            q.rewards = [rewards.imr_reward(c.text, cand.answer, cand.forms, agent.answer_mode, cfg.reward)
                         for c in q.completions]
    imr_seconds = time.perf_counter() - t1

    coupled = [
        rewards.coupled_reward(a, q.rewards if q else [], cfg.lambda_imr, cfg.g2)
        for a, q in zip(answer_rewards, imr, strict=True)
    ]
    out = Rollouts(tasks=tasks, g1=cfg.g1, trajectories=trajs, doc_of=doc_of, answer_rewards=answer_rewards,
                   imr=imr, rewards=coupled, metrics={})
    out.metrics = rollout_metrics(out, e2e_seconds, imr_seconds)
    return out


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def rollout_metrics(r: Rollouts, e2e_seconds: float = 0.0, imr_seconds: float = 0.0) -> dict[str, float]:
    """Every reward component and length statistic, logged separately."""
    updates = [t.completion for tr in r.trajectories for t in tr.turns if t.kind == "update"]
    finals = [t.completion for tr in r.trajectories for t in tr.turns if t.kind == "final"]
    imr_comps = [c for q in r.imr if q for c in q.completions]
    every = updates + finals + imr_comps
    gen_tokens = sum(len(c.completion_ids) for c in every)
    m = {
        "reward/e2e_em": _mean(r.answer_rewards),
        "reward/imr_em": _mean([x for q in r.imr if q for x in q.rewards]),
        "reward/coupled": _mean(r.rewards),
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
        "time/rollout_e2e_s": e2e_seconds,
        "time/rollout_imr_s": imr_seconds,
        "gen/tokens": float(gen_tokens),
        "gen/tokens_per_s": gen_tokens / (e2e_seconds + imr_seconds) if e2e_seconds + imr_seconds else 0.0,
    }
    return m
