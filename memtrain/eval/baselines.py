"""Baselines the memory agent is compared against.

``full-context``: the same model reads the whole document in one prompt and answers. It shows what the
bounded memory costs (or gains) at lengths the model can still read at once. Documents whose prompt plus
answer budget exceed ``max_context_tokens`` are marked ``skipped: too long`` and excluded from the means,
not scored as wrong, so the baseline is never penalised for a limit it does not claim to beat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memtrain import prompts
from memtrain.agent.engine import Engine, Sampling, render
from memtrain.errors import MemtrainError
from memtrain.records import MemTask
from memtrain.scoring import extract_answer, score_all

from .results import check_run_info, run_resumable, timed, write_metrics
from .runner import RESULTS, length_of, task_row

SKIPPED_TOO_LONG = "skipped: too long"


def full_context_messages(task: MemTask) -> list[dict[str, str]]:
    """One user turn holding the problem and the whole document (its chunks re-joined)."""
    return prompts.full_context_messages(task.problem, "\n".join(task.chunks))


def evaluate_full_context(
    engine: Engine,
    tasks: Sequence[MemTask],
    sampling: Sampling,
    out_dir: str | Path,
    answer_tokens: int = 64,
    max_context_tokens: int = 8192,
    batch_size: int = 8,
    resume: bool = True,
    label: str | None = None,
    run_info: dict[str, Any] | None = None,
    on_batch: Callable[[int, list[dict[str, Any]]], None] | None = None,
    progress: bool = True,
    answer_mode: str = "boxed",
) -> dict[str, Any]:
    """Answer each task from its whole document in one prompt; rows as in :func:`.runner.evaluate`.

    A task runs only when prompt tokens + ``answer_tokens`` <= ``max_context_tokens``; otherwise its row
    has ``skipped="skipped: too long"`` and ``metrics=None``.
    """
    tok = getattr(engine, "tokenizer", None)
    if tok is None:
        raise MemtrainError("the full-context baseline needs the engine's tokenizer to measure prompt length")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_run_info(out, run_info, resume)
    s = dataclasses.replace(sampling, max_new_tokens=answer_tokens)

    def process(batch: list[MemTask]) -> list[dict[str, Any]]:
        convs = [full_context_messages(t) for t in batch]
        lengths = [len(render(tok, c)) for c in convs]
        fits = [i for i, n in enumerate(lengths) if n + answer_tokens <= max_context_tokens]
        comps, secs = timed(lambda: engine.generate([convs[i] for i in fits], s) if fits else [])
        by_row = dict(zip(fits, comps, strict=True))
        rows = []
        for i, task in enumerate(batch):
            row = {**task_row(task), "prompt_tokens": lengths[i]}
            if i in by_row:
                text = by_row[i].text
                row.update(prediction=extract_answer(text, answer_mode), response=text,
                           metrics=score_all(text, task.answers, answer_mode),
                           seconds=round(secs / len(fits), 3), batch_size=len(fits))
            else:
                row.update(prediction=None, response=None, metrics=None, skipped=SKIPPED_TOO_LONG,
                           seconds=None)
            rows.append(row)
        return rows

    rows = run_resumable(out / RESULTS, tasks, lambda t: t.id, process, batch_size, resume, on_batch,
                         desc=label or "full context", progress=progress, group=length_of)
    header = {
        "label": label or "full context",
        "method": "full-context",
        "answer_tokens": answer_tokens,
        "max_context_tokens": max_context_tokens,
        "sampling": dataclasses.asdict(s),
        **(run_info or {}),
    }
    return write_metrics(out, rows, header)
