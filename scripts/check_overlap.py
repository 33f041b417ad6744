"""Prove that training data never contains an evaluation question or any of its paragraphs.

    python scripts/check_overlap.py --train DIR_OR_FILE... --eval DIR_OR_FILE... [--data HOTPOTQA.jsonl]
    python scripts/check_overlap.py --headline [--scale cpu] [--seed 0]

Inputs are MemTask shards (a build folder or ``.jsonl``/``.parquet`` files, as written by ``memtrain data
build`` or the long-QA builders) or evaluation ``results.jsonl`` files (rows with ``question_id``), or
folders holding a ``results.jsonl``. An evaluation question's paragraphs are its gold documents (from the
tasks' ``meta``) plus, when the question is found in ``--data``, every paragraph its source record ships
with (gold and the record's own distractors) — the set ``Split.eval_keys`` excludes from training.

Exit status: 0 clean; 1 when a training task is an evaluation question, or reads an evaluation question's
paragraph anywhere in its document (offending ids and titles are printed); 2 on bad input.
``--headline`` builds the headline experiment's resolved train (task-RL stage) and eval sets in process,
without training, and checks them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Side:
    """What one side (train or eval) uses: tasks with document keys, and bare question ids from results."""

    tasks: list[Any] = field(default_factory=list)
    question_ids: set[str] = field(default_factory=set)


def _rows(path: Path) -> list[dict[str, Any]]:
    from memtrain.errors import MemtrainError

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise MemtrainError(f"{path}:{i}: not valid JSON ({e})") from None
    return rows


def _files(spec: str) -> list[Path]:
    from memtrain.errors import MemtrainError

    p = Path(spec)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted([*p.glob("shard-*.jsonl"), *p.glob("shard-*.parquet")])
        files = files or sorted(p.glob("results.jsonl"))
        if files:
            return files
        raise MemtrainError(f"{p}: no shard-*.jsonl/.parquet and no results.jsonl inside")
    raise MemtrainError(f"{p}: no such file or folder")


def load_side(specs: Iterable[str]) -> Side:
    """MemTasks and result rows from files/folders (a row is a task if it has chunks, else a result)."""
    from memtrain.errors import MemtrainError
    from memtrain.records import MemTask

    side = Side()
    for spec in specs:
        for f in _files(spec):
            for i, row in enumerate(_rows(f), 1):
                if "chunks" in row and "problem" in row:
                    side.tasks.append(MemTask.from_dict(row))
                elif "question_id" in row:
                    side.question_ids.add(str(row["question_id"]))
                else:
                    raise MemtrainError(f"{f}:{i}: neither a MemTask (chunks, problem) nor an eval result "
                                        f"row (question_id); keys: {sorted(row)[:8]}")
    return side


def question_paragraphs(data: Path | None) -> dict[str, set[str]]:
    """question id -> keys of every paragraph its HotpotQA record ships with (empty when no data)."""
    if data is None or not data.is_file():
        return {}
    from memtrain.tasks.longqa import load_hotpotqa

    items, _ = load_hotpotqa(data)
    return {it.qid: it.context_keys | {d.key for d in it.gold} for it in items}


def find_leaks(train: Side, evaluation: Side, paragraphs: dict[str, set[str]]) -> dict[str, list[str]]:
    """Shared question ids and evaluation paragraphs read by training (all lists empty = clean)."""
    from memtrain.tasks.longqa import footprint, overlap

    tr, ev = footprint(train.tasks), footprint(evaluation.tasks)
    train_qids = tr.question_ids | train.question_ids
    eval_qids = ev.question_ids | evaluation.question_ids
    eval_keys = set(ev.gold_keys)
    for q in eval_qids:
        eval_keys |= paragraphs.get(q, set())
    basic = overlap(train.tasks, evaluation.tasks)
    shared_q = (train_qids & eval_qids) | basic["question_ids"]
    leaked = (eval_keys & tr.doc_keys) | basic["eval_gold_in_train"]
    offenders = sorted({t.id for t in train.tasks if str(t.meta.get("question_id")) in shared_q
                        or leaked & set(t.meta.get("doc_keys", []))})
    return {"question_ids": sorted(shared_q), "eval_paragraphs_in_train": sorted(leaked),
            "train_tasks": offenders}


def report(leaks: dict[str, list[str]], train: Side, evaluation: Side, out: Any = None) -> int:
    """Print the verdict (to stdout by default); 0 when clean, 1 on any leak."""
    out = out or sys.stdout
    tr = f"{len(train.tasks)} train tasks + {len(train.question_ids)} train result ids"
    ev = f"{len(evaluation.tasks)} eval tasks + {len(evaluation.question_ids)} eval result ids"
    if not any(leaks.values()):
        print(f"check_overlap: clean ({tr} vs {ev}): no shared question and no evaluation paragraph in "
              "training documents", file=out)
        return 0
    print(f"check_overlap: LEAK ({tr} vs {ev})", file=out)
    for key, label in (("question_ids", "evaluation question ids in training"),
                       ("eval_paragraphs_in_train", "evaluation paragraphs (titles/keys) read in training"),
                       ("train_tasks", "offending training tasks")):
        vals = leaks[key]
        if vals:
            shown = ", ".join(vals[:20]) + (f", ... ({len(vals) - 20} more)" if len(vals) > 20 else "")
            print(f"  {label}: {len(vals)}: {shown}", file=out)
    return 1


def headline_sides(scale: str, seed: int = 0) -> tuple[Side, Side, Path]:
    """The headline experiment's task-RL training tasks and evaluation tasks, built in process."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import headline

    from memtrain.models import load_tokenizer

    exp = headline.load_experiment(scale)
    train = headline.task_train_tasks(exp, seed)
    evaluation = headline.eval_tasks(exp, load_tokenizer(exp["model"]))
    return Side(train), Side(evaluation), Path(headline._abs(exp["eval"]["data_file"]))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", nargs="+", default=[], help="training MemTask shards/folders or results")
    ap.add_argument("--eval", nargs="+", default=[], help="evaluation tasks or results.jsonl")
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "hotpotqa" /
                                          "ircot_hotpotqa_dev_subsampled500.jsonl"),
                    help="HotpotQA file to look evaluation question ids up in (their own paragraphs)")
    ap.add_argument("--headline", action="store_true", help="check the headline experiment's resolved sets")
    ap.add_argument("--scale", default="cpu", help="headline scale (experiments/configs/<scale>.yaml)")
    ap.add_argument("--seed", type=int, default=0, help="headline training seed")
    args = ap.parse_args(argv)

    from memtrain.errors import MemtrainError

    try:
        if args.headline:
            train, evaluation, data = headline_sides(args.scale, args.seed)
        else:
            if not args.train or not args.eval:
                ap.error("give --train and --eval, or --headline")
            train, evaluation, data = load_side(args.train), load_side(args.eval), Path(args.data)
        leaks = find_leaks(train, evaluation, question_paragraphs(data))
        return report(leaks, train, evaluation)
    except MemtrainError as e:
        print(f"check_overlap: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
