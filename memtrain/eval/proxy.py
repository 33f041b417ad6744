"""Accuracy on the self-supervised proxy tasks (E2E and IMR), to track what MemTrain optimises.

- **E2E accuracy**: strict EM (the training reward's normalisation) of the final boxed answer against the
  masked entity (and its aliases).
- **IMR accuracy**: for each E2E trajectory one IMR probe, chosen deterministically from ``seed`` and the
  task id: a memory m_k (k chunks read) and an earlier chunk c_l with ``k - l >= min_gap`` (1-based; the
  paper's "earlier chunk", so the memory must have kept c_l through at least ``min_gap`` overwrites) that
  has an IMR candidate. Among all valid (k, l) pairs we draw k uniformly among the ks that have one, then
  l, then the candidate. The candidate's forms are masked as ``[TARGET]`` in c_l and the model answers in
  one step from m_k and the masked chunk; strict EM against the candidate's forms (aliases of one entity).
  Trajectories with no valid pair (e.g. a single chunk) get no probe and are counted in ``n_no_probe``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memtrain.agent.engine import Engine, Sampling
from memtrain.agent.loop import AgentConfig, run_memory_agent
from memtrain.errors import MemtrainError
from memtrain.io import write_json
from memtrain.prompts import TARGET, imr_messages
from memtrain.records import ImrCandidate, MemTask
from memtrain.scoring import extract_answer, score_all, strict_em

from .results import check_run_info, run_resumable, timed

RESULTS = "proxy_results.jsonl"


@dataclasses.dataclass
class ImrProbe:
    """One IMR question: memory index k (chunks read), 1-based chunk l, and the hidden entity."""

    k: int
    l: int  # noqa: E741 - the paper's name
    candidate: ImrCandidate


def pick_imr(n_read: int, imr: Sequence[Sequence[ImrCandidate]], rng: random.Random, min_gap: int = 1
             ) -> ImrProbe | None:
    """A (k, l, candidate) with 1 <= l, l + min_gap <= k <= n_read and a candidate in chunk l, or None."""
    valid_k = [k for k in range(1, n_read + 1)
               if any(imr[l - 1] for l in range(1, k - min_gap + 1) if l - 1 < len(imr))]  # noqa: E741
    if not valid_k:
        return None
    k = rng.choice(valid_k)
    ls = [l for l in range(1, k - min_gap + 1) if l - 1 < len(imr) and imr[l - 1]]  # noqa: E741
    l = rng.choice(ls)  # noqa: E741
    return ImrProbe(k, l, rng.choice(list(imr[l - 1])))


def imr_prompt(task: MemTask, memories: Sequence[str], probe: ImrProbe, version: str = "v1"
               ) -> list[dict[str, str]]:
    """The one-step IMR conversation: memory m_k and chunk c_l with the candidate masked as ``[TARGET]``."""
    from memtrain.tasks.masking import mask_entity

    masked, n = mask_entity(task.chunks[probe.l - 1], probe.candidate.forms, TARGET)
    if n == 0:
        raise MemtrainError(f"task {task.id}: IMR answer {probe.candidate.answer!r} not in chunk {probe.l}")
    return imr_messages(memories[probe.k], masked, version)


def evaluate_proxy(
    engine: Engine,
    e2e_tasks: Sequence[MemTask],
    agent_cfg: AgentConfig,
    sampling: Sampling,
    out_dir: str | Path,
    seed: int = 0,
    min_gap: int = 1,
    batch_size: int = 16,
    resume: bool = True,
    label: str | None = None,
    run_info: dict[str, Any] | None = None,
    on_batch: Callable[[int, list[dict[str, Any]]], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """E2E and IMR accuracy on built E2E tasks; writes ``proxy_results.jsonl`` and ``metrics.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_run_info(out, run_info, resume)
    imr_sampling = dataclasses.replace(sampling, max_new_tokens=agent_cfg.answer_tokens)

    def process(batch: list[MemTask]) -> list[dict[str, Any]]:
        trajs, secs = timed(lambda: run_memory_agent(engine, batch, agent_cfg, sampling, progress=progress))
        probes = []
        for task, tr in zip(batch, trajs, strict=True):
            rng = random.Random(f"{seed}|imr|{task.id}")
            probes.append(pick_imr(len(tr.memories) - 1, task.imr, rng, min_gap))
        todo = [i for i, p in enumerate(probes) if p is not None]
        convs = [imr_prompt(batch[i], trajs[i].memories, probes[i], agent_cfg.prompt_version) for i in todo]
        comps, imr_secs = timed(lambda: engine.generate(convs, imr_sampling) if convs else [])
        imr_by_row = dict(zip(todo, comps, strict=True))
        rows = []
        for i, (task, tr) in enumerate(zip(batch, trajs, strict=True)):
            row: dict[str, Any] = {
                "id": task.id,
                "answers": list(task.answers),
                "n_chunks": len(task.chunks),
                "prediction": tr.answer,
                "response": tr.response,
                "metrics": score_all(tr.response, task.answers, agent_cfg.answer_mode),
                "seconds": round((secs + imr_secs) / len(batch), 3),
                "imr": None,
            }
            if i in imr_by_row:
                p, text = probes[i], imr_by_row[i].text
                golds = [p.candidate.answer, *p.candidate.forms]
                pred = extract_answer(text, agent_cfg.answer_mode)
                row["imr"] = {"k": p.k, "l": p.l, "answer": p.candidate.answer, "response": text,
                              "prediction": pred, "strict_em": strict_em(pred, golds)}
            rows.append(row)
        return rows

    rows = run_resumable(out / RESULTS, e2e_tasks, lambda t: t.id, process, batch_size, resume, on_batch,
                         desc=label or "proxy", progress=progress)
    metrics = {
        "label": label or "proxy",
        "method": "proxy",
        "agent": dataclasses.asdict(agent_cfg),
        "sampling": dataclasses.asdict(sampling),
        "seed": seed,
        "min_gap": min_gap,
        **(run_info or {}),
        **proxy_summary(rows),
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def proxy_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """E2E and IMR accuracies (strict EM) over result rows."""
    probes = [r["imr"] for r in rows if r.get("imr")]
    n = len(rows)
    return {
        "n": n,
        "e2e_accuracy": sum(r["metrics"]["strict_em"] for r in rows) / n if n else None,
        "e2e_no_boxed": sum(1 - r["metrics"]["boxed"] for r in rows) / n if n else None,
        "n_imr": len(probes),
        "n_no_probe": n - len(probes),
        "imr_accuracy": sum(p["strict_em"] for p in probes) / len(probes) if probes else None,
        "imr_no_boxed": sum(p["prediction"] is None for p in probes) / len(probes) if probes else None,
    }
