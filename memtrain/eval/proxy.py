"""Accuracy on the self-supervised proxy tasks (E2E and IMR), to track what MemTrain optimises.

Both the held-out evaluation inside training and ``memtrain eval`` on an E2E task set call
:func:`proxy_rollouts`: the training rollout path with one trajectory and one IMR answer per task
(G1 = G2 = 1), so the IMR probes are the training rule's (:mod:`memtrain.tasks.imr`), drawn from the seed and
the task id alone, and the two evaluations produce the same probes for the same tasks and seed.

- **E2E**: the final answer against the masked entity (and its aliases), scored by the configured reward
  and by strict EM.
- **IMR**: one probe per trajectory (memory m_k, an earlier chunk c_l with ỹ hidden as ``[TARGET]``),
  scored the same two ways. Trajectories without a probe (e.g. a single chunk) count in ``n_no_probe``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memtrain.agent.engine import Engine
from memtrain.agent.loop import AgentConfig
from memtrain.io import write_json
from memtrain.records import MemTask, Rollouts
from memtrain.rl.config import RolloutConfig
from memtrain.rl.rewards import imr_reward
from memtrain.rl.rollout import collect
from memtrain.scoring import extract_answer, score_all

from .results import check_run_info, run_resumable, timed

RESULTS = "proxy_results.jsonl"


def proxy_rollouts(engine: Engine, tasks: Sequence[MemTask], agent: AgentConfig, reward: str = "strict_em",
                   temperature: float = 0.0, seed: int = 0, progress: bool = False) -> Rollouts:
    """One trajectory and one IMR answer per task (greedy unless ``temperature`` > 0)."""
    rc = dataclasses.replace(RolloutConfig(), g1=1, g2=1, imr=True, reward=reward, temperature=temperature)
    return collect(engine, tasks, agent, rc, seed=seed, progress=progress)


def proxy_rows(r: Rollouts, answer_mode: str) -> list[dict[str, Any]]:
    """One results row per task of :func:`proxy_rollouts`."""
    rows = []
    for i, (task, tr) in enumerate(zip(r.tasks, r.trajectories, strict=True)):
        row: dict[str, Any] = {
            "id": task.id,
            "answers": list(task.answers),
            "n_chunks": len(task.chunks),
            "prediction": tr.answer,
            "response": tr.response,
            "reward": r.answer_rewards[i],
            "metrics": score_all(tr.response, task.answers, answer_mode),
            "imr": None,
        }
        q = r.imr[i]
        if q is not None:
            text = q.completions[0].text
            pred = extract_answer(text, answer_mode)
            row["imr"] = {"k": q.k, "l": q.l, "answer": q.candidate.answer, "response": text,
                          "prediction": pred, "reward": q.rewards[0],
                          "strict_em": imr_reward(text, q.candidate.answer, q.candidate.forms, answer_mode,
                                                  "strict_em")}
        rows.append(row)
    return rows


def evaluate_proxy(
    engine: Engine,
    e2e_tasks: Sequence[MemTask],
    agent_cfg: AgentConfig,
    out_dir: str | Path,
    reward: str = "strict_em",
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    resume: bool = True,
    label: str | None = None,
    run_info: dict[str, Any] | None = None,
    on_batch: Callable[[int, list[dict[str, Any]]], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """E2E and IMR scores on built E2E tasks; writes ``proxy_results.jsonl`` and ``metrics.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_run_info(out, run_info, resume)

    def process(batch: list[MemTask]) -> list[dict[str, Any]]:
        r, secs = timed(lambda: proxy_rollouts(engine, batch, agent_cfg, reward, temperature, seed, progress))
        rows = proxy_rows(r, agent_cfg.answer_mode)
        for row in rows:
            row["seconds"] = round(secs / len(batch), 3)
        return rows

    rows = run_resumable(out / RESULTS, e2e_tasks, lambda t: t.id, process, batch_size, resume, on_batch,
                         desc=label or "proxy", progress=progress)
    metrics = {
        "label": label or "proxy",
        "method": "proxy",
        "agent": dataclasses.asdict(agent_cfg),
        "reward": reward,
        "temperature": temperature,
        "seed": seed,
        **(run_info or {}),
        **proxy_summary(rows, reward),
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def proxy_summary(rows: Sequence[dict[str, Any]], reward: str = "strict_em") -> dict[str, Any]:
    """E2E and IMR scores (the reward and strict EM) over result rows.

    ``e2e_accuracy`` / ``imr_accuracy`` are strict EM; the names predate MemAgent's two-way "accuracy" of
    long-document QA and are kept so earlier results files stay readable.
    """
    probes = [r["imr"] for r in rows if r.get("imr")]
    n = len(rows)

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    return {
        "n": n,
        f"e2e_{reward}": mean([r["reward"] for r in rows]),
        "e2e_accuracy": mean([r["metrics"]["strict_em"] for r in rows]),
        "e2e_no_boxed": mean([1 - r["metrics"]["boxed"] for r in rows]),
        "n_imr": len(probes),
        "n_no_probe": n - len(probes),
        f"imr_{reward}": mean([p["reward"] for p in probes]),
        "imr_accuracy": mean([p["strict_em"] for p in probes]),
        "imr_no_boxed": mean([p["prediction"] is None for p in probes]),
    }
