"""Search-QA tasks in the MEM1 setting (DESIGN §10): multi-objective questions answered by searching.

Sources (``../shared/data`` copies; ``searchqa.paths`` points at other files of the same layouts):

- ``hotpotqa``: the 500 HotpotQA dev questions (IRCoT layout), answers = the record's answer spans;
- ``nq``: NQ-open dev (3,610 questions, every answer string an alias; FlashRAG's ``golden_answers``
  JSONL reads too);
- ``musique``: the 100 MuSiQue-Ans questions (train split), answer + ``answer_aliases``.

**Split** (per source, on single questions, before pairing): the question ids sorted, shuffled with
``split_seed``, the first ``eval_fraction`` go to ``eval`` and the rest to ``train``; sources in
``eval_only`` (MuSiQue by default: MEM1 trains on NQ + HotpotQA only) put every question on the eval side.
The two sides never share a question id; ``scripts/check_overlap.py`` checks built task sets (ids and
normalised question texts).

**Pairing** (MEM1's rule, its multi-objective data scripts): on one side of one source, in file order,
every question gets a "?" appended when it does not end in one, and consecutive groups of
``n_objectives`` questions form one task, joined by "; " (a trailing incomplete group is dropped and
counted). The answer of objective i is scored against objective i's aliases only
(:func:`memtrain.scoring.multi_objective_score`).

``nq_filter`` (a CPU knob beyond the paper) keeps only NQ questions answerable in the local corpus
(``in_pool``: an answer string occurs in some passage; ``retrieved``: BM25 with the question as query ranks
a passage holding an answer within ``nq_max_rank``), read from the corpus' ``answerable_nq.json``;
whatever the filter, each NQ objective records ``in_pool`` and ``bm25_rank`` in the task when that file
exists, so evaluations report NQ unfiltered and on the answerable subset; ``nq_answerable_benchmark``
also builds that subset as a benchmark of its own (``nq_answerable``), so that evaluating the first N tasks
of every benchmark covers it.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from memtrain.config import option
from memtrain.errors import MemtrainError
from memtrain.records import MemTask

log = logging.getLogger(__name__)

SEARCH_SOURCES = ("hotpotqa", "nq", "musique")
DEFAULT_FILES = {
    "hotpotqa": "hotpotqa/ircot_hotpotqa_dev_subsampled500.jsonl",
    "nq": "nq_open/NQ-open.dev.jsonl",
    "musique": "musique/musique_ans_train_sample100_hipporag.json",
}


@dataclass
class SearchQAConfig:
    """How search-QA tasks are built (``memtrain data build kind=searchqa``)."""

    sources: list[str] = option(f"benchmarks to include: {list(SEARCH_SOURCES)}", list(SEARCH_SOURCES))
    data: str = option("the shared data folder holding the default files (relative to the current "
                       "directory)", "../shared/data")
    paths: dict[str, str] = option("per-source data files replacing the defaults, e.g. {nq: FILE}", {})
    split: Literal["train", "eval", "all"] = option("which side of the question split to build", "eval")
    eval_fraction: float = option("share of each source's questions on the eval side", 0.2)
    eval_only: list[str] = option("sources whose every question is on the eval side (MEM1 trains on NQ + "
                                  "HotpotQA only)", ["musique"])
    split_seed: int = option("seed of the train/eval split; keep it fixed so eval questions never train",
                             0)
    n_objectives: int = option("questions per task, joined by '; ' (MEM1: 2 in training and evaluation)", 2)
    num_tasks: int = option("tasks per source, the first in file order (0 = all)", 0)
    nq_filter: Literal["none", "in_pool", "retrieved"] = option(
        "keep only NQ questions answerable in the local corpus (CPU knob beyond the paper): in_pool = an "
        "answer string occurs in some passage; retrieved = BM25 ranks one within nq_max_rank", "none")
    nq_max_rank: int = option("nq_filter=retrieved, and the answerable subset evaluations report: the "
                              "largest BM25 rank that counts as retrieved (MEM1's topk: 3)", 3)
    corpus: str = option("search corpus folder with answerable_nq.json (`memtrain data build "
                         "search_corpus_cpu`)", "data/search_corpus_cpu")
    nq_answerable_benchmark: bool = option(
        "also build the side's NQ questions answerable from the corpus (BM25 rank <= nq_max_rank) as a "
        "benchmark of their own, `nq_answerable` (the same questions as in `nq`), so that evaluating the "
        "first N tasks per benchmark covers that subset too", False)

    def validate(self) -> None:
        bad = [s for s in [*self.sources, *self.eval_only, *self.paths] if s not in SEARCH_SOURCES]
        if bad:
            raise MemtrainError(f"SearchQAConfig: unknown sources {bad}; known: {list(SEARCH_SOURCES)}")
        if not self.sources:
            raise MemtrainError("SearchQAConfig.sources is empty")
        if not 0 < self.eval_fraction < 1:
            raise MemtrainError(f"SearchQAConfig.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.n_objectives < 1:
            raise MemtrainError(f"SearchQAConfig.n_objectives must be >= 1, got {self.n_objectives}")
        if self.num_tasks < 0 or self.nq_max_rank < 1:
            raise MemtrainError("SearchQAConfig: need num_tasks >= 0 and nq_max_rank >= 1")

    def path(self, source: str) -> Path:
        return Path(self.paths[source]) if source in self.paths else Path(self.data) / DEFAULT_FILES[source]

    def answerable_path(self) -> Path:
        return Path(self.corpus) / "answerable_nq.json"


@dataclass
class Question:
    """One single-objective question of a source."""

    source: str
    qid: str
    question: str
    answers: list[str]


# ---------------------------------------------------------------------------------------------- loading


def _need(path: Path, source: str) -> Path:
    if not path.is_file():
        raise MemtrainError(f"{source} data file not found: {path.resolve()}; set searchqa.data=DIR or "
                            f"searchqa.paths.{source}=FILE")
    return path


def load_questions(source: str, path: Path) -> list[Question]:
    """The questions of one source file, in file order (records without an answer are skipped)."""
    _need(path, source)
    out: list[Question] = []
    try:
        if source == "hotpotqa":
            from memtrain.tasks.longqa import load_hotpotqa

            items, _ = load_hotpotqa(path)
            out = [Question(source, it.qid, it.question, list(it.answers)) for it in items]
        elif source == "nq":
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                if line.strip():
                    r = json.loads(line)  # NQ-open {question, answer}, FlashRAG {question, golden_answers}
                    gold = r["answer"] if "answer" in r else r["golden_answers"]
                    answers = [str(a).strip() for a in gold if str(a).strip()]
                    if answers and r["question"].strip():
                        out.append(Question(source, str(r.get("id", i)), r["question"].strip(), answers))
        elif source == "musique":
            for r in json.loads(path.read_text(encoding="utf-8")):
                answers = [a.strip() for a in [r["answer"], *r.get("answer_aliases", [])] if a and a.strip()]
                if answers and r.get("answerable", True):
                    out.append(Question(source, str(r["id"]), r["question"].strip(),
                                        list(dict.fromkeys(answers))))
        else:
            raise MemtrainError(f"unknown search-QA source {source!r}")
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise MemtrainError(f"{path}: not a {source} file ({type(e).__name__}: {e})") from None
    return out


def as_question(text: str) -> str:
    """MEM1's rule: a question ends in "?" (one is appended when missing)."""
    text = text.strip()
    return text if text.endswith("?") else text + "?"


# ---------------------------------------------------------------------------------------------- building


def split_ids(questions: list[Question], eval_fraction: float, seed: int) -> set[str]:
    """The eval side's question ids of one source (a seeded shuffle of the sorted ids)."""
    ids = sorted({q.qid for q in questions})
    random.Random(f"{seed}|searchqa-split|{questions[0].source if questions else ''}").shuffle(ids)
    return set(ids[: max(1, round(len(ids) * eval_fraction))]) if ids else set()


def side_of(questions: list[Question], cfg: SearchQAConfig, source: str) -> list[Question]:
    """The configured side of one source's split, in file order."""
    if cfg.split == "all":
        return questions
    if source in cfg.eval_only:
        return questions if cfg.split == "eval" else []
    eval_ids = split_ids(questions, cfg.eval_fraction, cfg.split_seed)
    want = cfg.split == "eval"
    return [q for q in questions if (q.qid in eval_ids) == want]


def nq_answerability(cfg: SearchQAConfig) -> dict[str, dict[str, Any]] | None:
    """``answerable_nq.json`` of the corpus (question text -> in_pool, bm25_rank), None when absent."""
    p = cfg.answerable_path()
    if not p.is_file():
        return None
    from memtrain.search.corpus import load_answerable_nq

    return load_answerable_nq(p)


def _answerable(info: dict[str, Any] | None, cfg: SearchQAConfig) -> bool:
    if info is None:
        return False
    if cfg.nq_filter == "in_pool":
        return bool(info.get("in_pool"))
    rank = info.get("bm25_rank")
    return rank is not None and rank <= cfg.nq_max_rank


def build_search_tasks(cfg: SearchQAConfig) -> tuple[list[MemTask], dict[str, Any]]:
    """Every task of the configured side, grouped by source (in ``cfg.sources`` order), and statistics."""
    cfg.validate()
    answerable = nq_answerability(cfg) if "nq" in cfg.sources else None
    if cfg.nq_filter != "none" and "nq" in cfg.sources and answerable is None:
        raise MemtrainError(f"searchqa.nq_filter={cfg.nq_filter} needs {cfg.answerable_path().resolve()}; "
                            "build the corpus first (`memtrain data build search_corpus_cpu`)")
    tasks: list[MemTask] = []
    stats: dict[str, Any] = {"per_source": {}}
    n = cfg.n_objectives
    if cfg.nq_answerable_benchmark and answerable is None:
        raise MemtrainError(f"searchqa.nq_answerable_benchmark needs {cfg.answerable_path().resolve()}; "
                            "build the corpus first (`memtrain data build search_corpus_cpu`)")
    benchmarks = [*cfg.sources, *(["nq_answerable"] if cfg.nq_answerable_benchmark and "nq" in cfg.sources
                                  else [])]
    for bench in benchmarks:
        source = "nq" if bench == "nq_answerable" else bench
        qs = side_of(load_questions(source, cfg.path(source)), cfg, source)
        n_side = len(qs)
        if bench == "nq_answerable":
            qs = [q for q in qs if _answerable(answerable.get(q.question),  # type: ignore[union-attr]
                                               replace(cfg, nq_filter="retrieved"))]
        elif source == "nq" and cfg.nq_filter != "none":
            qs = [q for q in qs if _answerable(answerable.get(q.question), cfg)]  # type: ignore[union-attr]
        groups = [qs[i : i + n] for i in range(0, len(qs) - len(qs) % n, n)]
        if cfg.num_tasks:
            groups = groups[: cfg.num_tasks]
        for j, group in enumerate(groups):
            objs = []
            for q in group:
                o: dict[str, Any] = {"qid": q.qid, "question": as_question(q.question), "answers": q.answers}
                if source == "nq" and answerable is not None:
                    info = answerable.get(q.question) or {}
                    o["in_pool"] = bool(info.get("in_pool"))
                    o["bm25_rank"] = info.get("bm25_rank")
                    rank = info.get("bm25_rank")
                    o["answerable"] = rank is not None and rank <= cfg.nq_max_rank  # retrieved in top-k
                objs.append(o)
            tasks.append(MemTask(
                id=f"search-{bench}-{cfg.split}-{j}",
                kind="search",
                problem="; ".join(o["question"] for o in objs),
                chunks=[],
                answers=["; ".join(o["answers"][0] for o in objs)],
                meta={"source": bench, "split": cfg.split, "n_objectives": n, "objectives": objs,
                      "question_ids": [f"{source}:{o['qid']}" for o in objs],
                      **({"answerable": all(o["answerable"] for o in objs)} if source == "nq" and answerable
                         is not None else {})},
            ))
        stats["per_source"][bench] = {
            "questions_on_side": n_side, "questions_kept": len(qs), "tasks": len(groups),
            "dropped_incomplete_group": len(qs) % n,
            **({"answerable_tasks": sum(1 for t in tasks[-len(groups):] if t.meta.get("answerable"))}
               if source == "nq" and answerable is not None and groups else {}),
        }
    stats["documents"] = len(tasks)
    stats["objectives_per_task"] = dict(Counter(len(t.meta["objectives"]) for t in tasks))
    return tasks, stats
