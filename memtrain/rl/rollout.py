"""Rollouts of the MemTrain objective: G1 E2E trajectories per document, G2 IMR answers per trajectory.

For a batch of documents (DESIGN §2–3):

1. Every document is repeated G1 times and the whole batch is read in **one** turn-synchronous memory loop
   (:func:`memtrain.agent.loop.run_memory_agent`), so step t of all B·G1 trajectories is one engine call.
2. For each trajectory that read T chunks, :func:`memtrain.tasks.imr.pick_probe` picks an IMR question
   (the one rule, shared with evaluation: k, an earlier chunk c_l, the hidden entity ỹ as ``[TARGET]``),
   drawn from ``(seed, task id, copy index)``. Trajectories without a probe have an IMR term of 0 and are
   counted (``imr/missing``).
3. All IMR prompts of the batch, each repeated G2 times, go to the engine in **one** call.
4. Rewards (:mod:`memtrain.rl.rewards`): ``R^I`` per IMR answer, ``R^E`` per trajectory (E2E answer reward
   + λ/G2·Σ R^I), both scored by ``rollout.reward``. QA tasks (``kind="qa"``) use the same path, no IMR.
   Metrics are named for what was scored (``reward/e2e_f1`` when the reward is F1); the strict EM of every
   answer is logged beside them (``score/e2e_strict_em``) so runs with different rewards stay comparable.

``imr: false`` removes IMR entirely (the paper's no-IMR ablation); ``imr: true`` with ``lambda_imr: 0``
trains the IMR answers but does not fold their reward into E2E (the paper's "separate IMR branch" ablation).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from memtrain.agent.engine import Engine, Sampling
from memtrain.agent.loop import AgentConfig, run_memory_agent
from memtrain.records import ImrProbe, MemTask, Rollouts
from memtrain.rl import rewards
from memtrain.rl.config import RolloutConfig
from memtrain.scoring import extract_boxed
from memtrain.seeds import derive_seed
from memtrain.tasks.imr import pick_probe, probe_rng


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
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, seed=seed)
    doc_of = [d for d in range(len(tasks)) for _ in range(cfg.g1)]
    t0 = time.perf_counter()
    trajs = run_memory_agent(engine, [tasks[d] for d in doc_of], agent, sampling, progress=progress)
    e2e_seconds = time.perf_counter() - t0

    answer_rewards = [rewards.answer_reward(tr.response, tasks[d].answers, cfg.reward, agent.answer_mode)
                      for d, tr in zip(doc_of, trajs, strict=True)]
    answer_strict = [rewards.answer_reward(tr.response, tasks[d].answers, "strict_em", agent.answer_mode)
                     for d, tr in zip(doc_of, trajs, strict=True)]

    imr: list[ImrProbe | None] = [None] * len(trajs)
    if cfg.imr:
        for i, (d, tr) in enumerate(zip(doc_of, trajs, strict=True)):
            if tasks[d].kind != "qa":
                rng = probe_rng(seed, tasks[d].id, i % cfg.g1)
                imr[i] = pick_probe(tasks[d], tr.memories, rng, agent.prompt_version)
    owners = [i for i, q in enumerate(imr) if q is not None]
    asked = [imr[i] for i in owners]
    t1 = time.perf_counter()
    if asked:
        convs = [q.messages for q in asked for _ in range(cfg.g2)]
        seeds = [derive_seed(seed, "imr", tasks[doc_of[i]].id, i % cfg.g1, j) for i in owners
                 for j in range(cfg.g2)]  # each of the G2 answers samples on its own
        s = dataclasses.replace(sampling, max_new_tokens=agent.answer_tokens, seeds=seeds)
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
                   imr=imr, rewards=coupled, metrics={}, answer_strict=answer_strict)
    out.metrics = rollout_metrics(out, cfg.reward, agent.answer_mode, e2e_seconds, imr_seconds)
    return out


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def rollout_metrics(r: Rollouts, reward: str = "strict_em", answer_mode: str = "boxed",
                    e2e_seconds: float = 0.0, imr_seconds: float = 0.0) -> dict[str, float]:
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
        "time/rollout_e2e_s": e2e_seconds,
        "time/rollout_imr_s": imr_seconds,
        "gen/tokens": float(gen_tokens),
        "gen/tokens_per_s": gen_tokens / (e2e_seconds + imr_seconds) if e2e_seconds + imr_seconds else 0.0,
    }
    return m
