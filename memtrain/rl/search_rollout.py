"""Rollouts of search-QA post-training (the MEM1 recipe, DESIGN §3 and §10): G episodes per task.

One trajectory is :func:`search_rollout_trajectory`, an ``async`` function over a
:class:`~memtrain.agent.loop.Generator` (the same shape as :func:`memtrain.rl.rollout.rollout_trajectory`,
so veRL's agent loop can wrap it): the searching agent's episode
(:func:`memtrain.agent.search.search_trajectory`), then its reward — MEM1's: the **sum** over objectives of
the configured per-objective match (``search.reward``; ``em`` is the paper's) on the last ``<answer>`` of
the final turn, a wrong number of parts scoring 0 (:func:`memtrain.scoring.objective_sum`). Evaluation
reports the paper's **mean** over objectives (:func:`memtrain.scoring.multi_objective_score`); with Dr.
GRPO the two differ by the constant factor n_objectives in the advantages.

:func:`collect` returns the same :class:`~memtrain.records.Rollouts` as the MemTrain rollout (no IMR), so
:func:`memtrain.rl.rows.build_rows` turns it into training rows unchanged: the G trajectories of one task
are a group, ``A = R − mean(group)`` (Dr. GRPO), and each trajectory's advantage is **broadcast to every
one of its turns** (search, answer and invalid turns alike); DAPO drops groups whose rewards are all
equal. ``answer_strict`` holds the paper's EM whatever the reward, so runs with different rewards stay
comparable (``score/search_em``).
"""

from __future__ import annotations

from collections.abc import Sequence

from memtrain.agent.engine import Engine, Sampling
from memtrain.agent.loop import Generator, copy_keys, run_sessions
from memtrain.agent.search import SearchAgentConfig, Searcher, objectives, search_trajectory
from memtrain.records import MemTask, Rollouts, ScoredTrajectory, Trajectory
from memtrain.rl.config import RolloutConfig
from memtrain.scoring import extract_tagged_answer, multi_objective_score, objective_sum


def search_rewards(traj: Trajectory, task: MemTask, metric: str, reduce: str = "sum") -> tuple[float, float]:
    """(reward under ``metric``, paper EM) of one episode: 0 when it ended without an ``<answer>``.

    The reward sums the objectives (MEM1's training reward) or, with ``reduce="mean"``, averages them (the
    paper's evaluation); the paper EM is always the mean.
    """
    answer = extract_tagged_answer(traj.response) if traj.answer is not None else None  # == traj.answer
    golds = objectives(task)
    reward = (objective_sum if reduce == "sum" else multi_objective_score)(answer, golds, metric)
    return reward, multi_objective_score(answer, golds, "em")


async def search_rollout_trajectory(
    gen: Generator, searcher: Searcher, task: MemTask, copy: int, agent: SearchAgentConfig,
    cfg: RolloutConfig, seed: int,
) -> ScoredTrajectory:
    """One scored search episode; ``copy`` numbers the G episodes of one task (with ``seed``: its seeds)."""
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, seed=seed)
    traj = await search_trajectory(gen, searcher, task, agent, sampling, key=f"{task.id}|{copy}")
    reward, em = search_rewards(traj, task, agent.reward)
    return ScoredTrajectory(trajectory=traj, imr=None, answer_reward=reward, answer_strict=em, reward=reward)


def collect(
    engine: Engine,
    searcher: Searcher,
    tasks: Sequence[MemTask],
    agent: SearchAgentConfig,
    cfg: RolloutConfig,
    seed: int = 0,
    progress: bool = False,
) -> Rollouts:
    """G1 episodes of every task, all concurrently through one turn batcher; rewards and metrics."""
    tasks = list(tasks)
    doc_of = [d for d in range(len(tasks)) for _ in range(cfg.g1)]
    reads = [tasks[d] for d in doc_of]
    sessions = [
        lambda gen, task=task, copy=copy: search_rollout_trajectory(gen, searcher, task, copy, agent, cfg,
                                                                    seed)
        for task, (_, copy) in zip(reads, copy_keys(reads), strict=True)
    ]
    scored = run_sessions(engine, sessions, total=len(reads) * agent.max_turns, desc="search rollout",
                          progress=progress)
    out = Rollouts(tasks=tasks, g1=cfg.g1, trajectories=[s.trajectory for s in scored], doc_of=doc_of,
                   answer_rewards=[s.answer_reward for s in scored], imr=[None] * len(scored),
                   rewards=[s.reward for s in scored], metrics={},
                   answer_strict=[s.answer_strict for s in scored])
    out.metrics = search_metrics(out, agent.reward)
    return out


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def search_metrics(r: Rollouts, reward: str = "em") -> dict[str, float]:
    """Reward, turn and action statistics of a batch of episodes, named for what was scored.

    ``reward/coupled`` is the reward the turns are trained on (here the answer reward itself), under the
    name every training log and plot uses.
    """
    trajs = r.trajectories
    steps = [s for tr in trajs for s in tr.steps]
    comps = [t.completion for tr in trajs for t in tr.turns]
    m = {
        f"reward/search_{reward}": _mean(r.answer_rewards),
        "reward/coupled": _mean(r.rewards),
        "score/search_em": _mean(r.answer_strict),
        "search/turns": _mean([len(tr.turns) for tr in trajs]),
        "search/searches": _mean([sum(s.action == "search" for s in tr.steps) for tr in trajs]),
        "search/answered": _mean([float(tr.answer is not None) for tr in trajs]),
        "search/invalid_turns": _mean([float(s.action == "invalid") for s in steps]),
        "search/no_action": _mean([float(s.reason == "no_action") for s in steps]),
        "search/empty_query": _mean([float(s.reason == "empty_query") for s in steps]),
        "search/turn_limit": _mean([float(s.reason == "turn_limit") for s in steps]),
        "search/cut_after_action": _mean([float(s.cut) for s in steps]),
        "search/memory_chars": _mean([len(s.memory) for s in steps]),
        "len/response_tokens": _mean([len(c.completion_ids) for c in comps]),
        "len/prompt_tokens": _mean([len(c.prompt_ids) for c in comps]),
        "truncated/all": _mean([float(s.truncated) for s in steps]),
        "gen/tokens": float(sum(len(c.completion_ids) for c in comps)),
    }
    return m
