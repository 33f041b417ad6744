"""Evaluate the searching memory agent on a search-QA task set, resumably, per benchmark.

The agent path is the training one (:func:`memtrain.agent.search.run_search_agent`). Each task's row in
``results.jsonl`` holds the questions, every objective's aliases, the parsed answer and its parts, the
per-objective scores and, per turn, the action, the memory kept, the query and the retrieved titles and
ids (``steps``): the trace of the episode. ``metrics.json`` holds, per benchmark (the task's source) and
overall, the mean over tasks of the **per-objective EM averaged over objectives** (the headline, MEM1's
metric) beside sub-EM, MemAgent's two-way accuracy, F1, strict EM, the share of episodes that answered,
with the right number of parts, turns and searches per episode and invalid turns by reason.
``nq_answerable`` is NQ restricted to tasks whose every objective is answerable from the local corpus
(BM25 top-k holds an answer; :mod:`memtrain.tasks.searchqa`): a benchmark of its own when the task set was
built with ``searchqa.nq_answerable_benchmark``, else the subset of the evaluated ``nq`` tasks.
``average_over_benchmarks`` is the mean of the per-benchmark EMs (NQ unfiltered, ``nq_answerable`` left
out), the paper's summary number.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memtrain.agent.engine import Engine, Sampling
from memtrain.agent.loop import open_trace
from memtrain.agent.search import SearchAgentConfig, Searcher, objectives, run_search_agent, step_row
from memtrain.io import atomic_open, write_json
from memtrain.records import MemTask
from memtrain.scoring import OBJECTIVE_METRICS, objective_scores, score_objectives, split_objectives

from .results import check_run_info, run_resumable, timed

RESULTS = "results.jsonl"
HEADLINE = "em"
HEADLINE_NOTE = ("em = SQuAD-normalised exact match of each ';'-separated part of the last <answer> against "
                 "its objective's aliases, averaged over objectives (a wrong number of parts scores 0)")


def result_row(task: MemTask, traj: Any, seconds: float) -> dict[str, Any]:
    golds = objectives(task)
    answer = traj.answer
    return {
        "id": task.id,
        "source": task.meta.get("source", "search"),
        "question_ids": task.meta.get("question_ids", [task.id]),
        "questions": task.problem,
        "objectives": [{"question": o.get("question"), "answers": o.get("answers")}
                       for o in task.meta.get("objectives", [])] or [{"question": task.problem,
                                                                     "answers": golds[0]}],
        "answerable": task.meta.get("answerable"),
        "sample": task.meta.get("sample"),
        "answer": answer,
        "parts": split_objectives(answer, len(golds)),
        "objective_em": objective_scores(answer, golds, "em"),
        "metrics": score_objectives(answer, golds),
        "n_turns": len(traj.turns),
        "n_searches": sum(s.action == "search" for s in traj.steps),
        "invalid": [s.reason for s in traj.steps if s.action == "invalid"],
        "steps": [step_row(s) for s in traj.steps],
        "response": traj.response,
        "seconds": round(seconds, 3),
    }


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    for k in (*OBJECTIVE_METRICS, "answered", "parts_ok"):
        out[k] = _mean([r["metrics"][k] for r in rows])
    out["turns"] = _mean([r["n_turns"] for r in rows])
    out["searches"] = _mean([r["n_searches"] for r in rows])
    reasons = [x for r in rows for x in r["invalid"]]
    out["invalid_per_episode"] = len(reasons) / len(rows) if rows else None
    out["invalid_reasons"] = {k: reasons.count(k) for k in sorted(set(reasons))}
    out["seconds_per_task"] = _mean([r["seconds"] for r in rows])
    samples = sorted({r["sample"] for r in rows if r.get("sample") is not None})
    if len(samples) > 1:
        per = [_mean([r["metrics"][HEADLINE] for r in rows if r.get("sample") == k]) for k in samples]
        out["samples"] = len(samples)
        out["em_sd"] = statistics.stdev(per)  # type: ignore[arg-type]
    return out


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["source"], []).append(r)
    by = {k: summarise(v) for k, v in groups.items()}
    nq_ok = [r for r in groups.get("nq", []) if r.get("answerable")]
    if "nq_answerable" not in by and "nq" in groups and any(r.get("answerable") is not None
                                                            for r in groups["nq"]):
        by["nq_answerable"] = summarise(nq_ok)  # the subset of the nq tasks evaluated
    ems = [by[k][HEADLINE] for k in groups if k != "nq_answerable" and by[k][HEADLINE] is not None]
    return {"headline_metric": HEADLINE, "headline_note": HEADLINE_NOTE, "by_benchmark": by,
            "overall": summarise(rows), "average_over_benchmarks": _mean(ems)}


def table(metrics: dict[str, Any], label: str) -> str:
    """A markdown table: one row per benchmark, then the average."""
    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    head = ("| benchmark | tasks | EM | sub-EM | accuracy | F1 | answered | parts ok | turns | searches |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for name, g in metrics["by_benchmark"].items():
        turns = "–" if g["turns"] is None else f"{g['turns']:.2f}"
        searches = "–" if g["searches"] is None else f"{g['searches']:.2f}"
        lines.append(f"| {name} | {g['n']} | {pct(g['em'])} | {pct(g['sub_em'])} | {pct(g['accuracy'])} | "
                     f"{pct(g['f1'])} | {pct(g['answered'])} | {pct(g['parts_ok'])} | {turns} | {searches} |")
    avg = metrics["average_over_benchmarks"]
    return (f"### {label}\n\n{head}" + "\n".join(lines) +
            f"\n\nAverage EM over benchmarks (NQ unfiltered): {pct(avg)}. {HEADLINE_NOTE}.\n")


def evaluate_search(
    engine: Engine,
    searcher: Searcher,
    tasks: Sequence[MemTask],
    cfg: SearchAgentConfig,
    sampling: Sampling,
    out_dir: str | Path,
    batch_size: int = 16,
    resume: bool = True,
    label: str | None = None,
    run_info: dict[str, Any] | None = None,
    trace: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the searching agent on ``tasks`` in batches; write ``results.jsonl``, ``metrics.json`` and
    ``results.md``; returns the metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_run_info(out, run_info, resume)
    trace_f = open_trace(out / "trace.jsonl") if trace else None

    def process(batch: list[MemTask]) -> list[dict[str, Any]]:
        trajs, secs = timed(lambda: run_search_agent(engine, searcher, batch, cfg, sampling, trace=trace_f,
                                                     progress=progress))
        return [result_row(t, tr, secs / len(batch)) for t, tr in zip(batch, trajs, strict=True)]

    try:
        rows = run_resumable(out / RESULTS, tasks, lambda t: t.id, process, batch_size, resume,
                             desc=label or "search agent", progress=progress)
    finally:
        if trace_f is not None:
            trace_f.close()
    metrics = {"label": label or "search agent", "method": "search-agent", "search": dataclasses.asdict(cfg),
               "sampling": dataclasses.asdict(sampling), **(run_info or {}), **aggregate(rows)}
    write_json(out / "metrics.json", metrics)
    text = table(metrics, metrics["label"])
    with atomic_open(out / "results.md") as f:
        f.write(text)
    return metrics
