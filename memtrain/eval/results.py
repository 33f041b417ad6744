"""Resumable per-question results files and their aggregation into ``metrics.json``.

An evaluation writes one JSON row per question to ``results.jsonl`` and flushes after every batch, so a
killed run loses at most the batch in flight. Re-running with the same output folder skips the ids
already present. The run's settings are kept in ``run.json``; resuming with different settings is refused
rather than silently mixing numbers from two configurations.

Headline metric: **accuracy**, MemAgent's (a normalised gold answer inside the normalised prediction or
the prediction inside the gold, :func:`memtrain.scoring.accuracy`), as it reports RULER-HQA. Sub-EM (gold
inside the prediction only, word-bounded), EM, F1 and strict EM are reported beside it; a missing
``\\boxed{}`` scores 0 and is counted as ``no_boxed``. Questions skipped by a baseline (e.g. too long for
the model's context) are counted in ``n_skipped`` and excluded from every mean, never scored as wrong.

Time: a batch of documents is read turn by turn together, so only a batch's wall time is measured. The
runners cut batches within one context length (``group`` of :func:`run_resumable`), and a length's
``seconds_per_question`` is the wall time of its own batches divided by its questions (:data:`TIME_NOTE`).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from memtrain.errors import MemtrainError
from memtrain.io import append_jsonl, read_jsonl_tolerant, write_json, write_jsonl
from memtrain.progress import progress_bar

T = TypeVar("T")

HEADLINE = "accuracy"
HEADLINE_NOTE = (
    "accuracy = MemAgent's: normalised gold in the normalised answer or the answer in the gold (the "
    "\\boxed{} content; the first line when there is none and agent.answer_mode=lenient); sub_em, em, f1, "
    "strict_em reported beside it"
)
METRIC_KEYS = ("accuracy", "sub_em", "em", "f1", "strict_em", "boxed")
TIME_NOTE = (
    "seconds_per_question = wall time of that length's batches / its questions; documents of a batch are "
    "read together (batch_size each), and a batch holds one length, so no length's time includes another's"
)


def check_run_info(out_dir: Path, run_info: dict[str, Any] | None, resume: bool) -> None:
    """Record the run's settings; refuse to resume into a folder written with different settings."""
    if run_info is None:
        return
    path = out_dir / "run.json"
    info = json.loads(json.dumps(run_info))  # normalise tuples/ints the way JSON will store them
    if resume and path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(old) | set(info) if old.get(k) != info.get(k))
        if diff:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {info.get(k)!r}" for k in diff[:4])
            raise MemtrainError(
                f"{out_dir} holds results of a run with different settings ({details}); use another --out "
                "or pass --no-resume to start over"
            )
        return
    write_json(path, info)


def run_resumable(
    path: Path,
    items: Sequence[T],
    key: Callable[[T], str],
    process: Callable[[list[T]], list[dict[str, Any]]],
    batch_size: int,
    resume: bool = True,
    on_batch: Callable[[int, list[dict[str, Any]]], None] | None = None,
    desc: str = "eval",
    progress: bool = True,
    group: Callable[[T], Any] | None = None,
) -> list[dict[str, Any]]:
    """Process ``items`` in batches, appending each batch's rows (each with ``id``) to ``path``.

    Returns the rows of ``items`` in input order, including rows found from an earlier run. A torn last
    line (a kill mid-write) is dropped and the file rewritten clean before appending. ``on_batch(i, rows)``
    is called after batch i has been flushed (progress hooks; tests use it to simulate a kill).

    With ``group`` (e.g. the context length), a batch never mixes groups: the items still to do are taken
    group by group, in order of first appearance, so a batch's wall time belongs to one group alone.
    """
    if batch_size <= 0:
        raise MemtrainError(f"batch_size must be positive, got {batch_size}")
    ids = [key(it) for it in items]
    if len(set(ids)) != len(ids):
        raise MemtrainError("task ids are not unique; each question/length needs its own id")
    done: dict[str, dict[str, Any]] = {}
    if resume:
        for row in read_jsonl_tolerant(path):
            done.setdefault(str(row.get("id")), row)
    # rewrite what survived so appends never land after a torn line (and old duplicates disappear)
    write_jsonl(path, list(done.values()))
    todo = [it for it, i in zip(items, ids, strict=True) if i not in done]
    by_group: dict[Any, list[T]] = {}
    for it in todo:
        by_group.setdefault(group(it) if group else None, []).append(it)
    batches = [g[b : b + batch_size] for g in by_group.values() for b in range(0, len(g), batch_size)]
    with open(path, "a", encoding="utf-8") as f, progress_bar(
        total=len(items), initial=len(items) - len(todo), desc=desc, unit="q", disable=not progress
    ) as bar:
        for b, batch in enumerate(batches):
            rows = process(batch)
            for row in rows:
                append_jsonl(f, row)
                done[str(row["id"])] = row
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(b, rows)
    return [done[i] for i in ids]


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over the scored rows of one group (skipped rows only counted)."""
    scored = [r for r in rows if r.get("metrics") is not None]
    out: dict[str, Any] = {
        "n": len(rows),
        "n_scored": len(scored),
        "n_skipped": len(rows) - len(scored),
        "accuracy": _mean([r["metrics"][HEADLINE] for r in scored]),
    }
    for k in METRIC_KEYS:
        out[k] = _mean([r["metrics"][k] for r in scored])
    out["no_boxed"] = None if out["boxed"] is None else 1.0 - out["boxed"]
    out["mean_tokens"] = _mean([r["n_tokens"] for r in rows if r.get("n_tokens") is not None])
    out["mean_chunks"] = _mean([r["n_chunks"] for r in rows if r.get("n_chunks") is not None])
    out["seconds_per_question"] = _mean([r["seconds"] for r in scored if r.get("seconds") is not None])
    samples = sorted({r["sample"] for r in scored if r.get("sample") is not None})
    if len(samples) > 1:  # several answers per question: the spread of each score over samples
        out["samples"] = len(samples)
        for k in METRIC_KEYS:
            per = [_mean([r["metrics"][k] for r in scored if r.get("sample") == j]) for j in samples]
            out[f"{k}_sd"] = statistics.stdev(per)  # type: ignore[arg-type]
    return out


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per context length (``n_docs``) and overall; ``average_over_lengths`` is the paper's summary number."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r.get("n_docs", "all")), []).append(r)
    by_length = {k: summarise(v) for k, v in sorted(groups.items(), key=lambda kv: _length_key(kv[0]))}
    accs = [g["accuracy"] for g in by_length.values() if g["accuracy"] is not None]
    return {
        "headline_metric": HEADLINE,
        "headline_note": HEADLINE_NOTE,
        "time_note": TIME_NOTE,
        "by_length": by_length,
        "overall": summarise(rows),
        "average_over_lengths": _mean(accs),
    }


def _length_key(k: str) -> tuple[int, str]:
    return (int(k), "") if k.isdigit() else (1 << 60, k)


def write_metrics(out_dir: Path, rows: Sequence[dict[str, Any]], header: dict[str, Any]) -> dict[str, Any]:
    """Aggregate ``rows`` and write ``metrics.json`` atomically; returns the metrics dict."""
    metrics = {**header, **aggregate(rows)}
    write_json(out_dir / "metrics.json", metrics)
    return metrics
