"""Prove that training data never contains an evaluation question or any of its paragraphs.

    python scripts/check_overlap.py TRAIN_DIR EVAL_DIR [--data QA_FILE]
    python scripts/check_overlap.py --train DIR_OR_FILE... --eval DIR_OR_FILE... [--data QA_FILE]
    python scripts/check_overlap.py --headline SCALE [--runs-dir experiments/runs]

Inputs are task sets (folders written by ``memtrain data build``, e.g. long QA with ``split=train`` and
``split=eval``), loose MemTask shards (``.jsonl``/``.parquet`` files or folders of them), evaluation
``results.jsonl`` files (rows with ``question_id``), or folders holding a ``results.jsonl``. An evaluation
question's paragraphs are its gold documents (from the tasks' ``meta``) plus, when the question is found in
the questions file, every paragraph its source record ships with (gold and the record's own distractors) —
the set ``Split.eval_keys`` excludes from training. The questions file is ``--data``, else the one the
evaluation task set's manifest names, else the 500-question HotpotQA file in ../shared/data.

Search-QA task sets (``kind=searchqa``: multi-objective questions, no documents) are compared by every
objective's ``<source>:<id>`` and by its question text (SQuAD-normalised), so a question repeated under
another id is caught too.

Exit status: 0 clean; 1 when a training task is an evaluation question, or reads an evaluation question's
paragraph anywhere in its document (offending ids and titles are printed); 2 on bad input.
``--headline SCALE`` checks the headline experiment's two long-QA task sets on disk, exactly the folders its
task-RL stage trains on and every arm is evaluated on (``runs/<SCALE>/_data/task_train`` and
``task_eval``), building them first (as ``experiments/headline.py run`` would) where they are missing.
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
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "hotpotqa" / "ircot_hotpotqa_dev_subsampled500.jsonl"


@dataclass
class Side:
    """What one side (train or eval) uses: tasks with document keys, and bare question ids from results."""

    tasks: list[Any] = field(default_factory=list)
    question_ids: set[str] = field(default_factory=set)
    manifests: list[Any] = field(default_factory=list)  # of the task sets among the inputs


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


def load_side(specs: Iterable[str | Path]) -> Side:
    """MemTasks and result rows from task sets, files and folders (a row is a task if it has chunks, else a
    result). A folder with a ``manifest.json`` is read as a task set: it must be a complete build."""
    from memtrain.errors import MemtrainError
    from memtrain.records import MemTask
    from memtrain.tasks.taskset import MANIFEST, open_taskset

    side = Side()
    for spec in specs:
        if (Path(spec) / MANIFEST).is_file():
            ts = open_taskset(spec)
            side.tasks.extend(ts.tasks)
            side.manifests.append(ts.manifest)
            continue
        for f in _files(str(spec)):
            for i, row in enumerate(_rows(f), 1):
                if "chunks" in row and "problem" in row:
                    side.tasks.append(MemTask.from_dict(row))
                elif "question_id" in row:
                    side.question_ids.add(str(row["question_id"]))
                else:
                    raise MemtrainError(f"{f}:{i}: neither a MemTask (chunks, problem) nor an eval result "
                                        f"row (question_id); keys: {sorted(row)[:8]}")
    return side


def questions_file(evaluation: Side) -> tuple[Path, str] | None:
    """(questions file, source) named by the evaluation side's long-QA task set, if any."""
    for m in evaluation.manifests:
        lq = m.config.get("longqa") or {}
        if m.kind == "longqa" and m.sources:
            return Path(m.sources[0].path), str(lq.get("source", "hotpotqa"))
    return None


def question_paragraphs(data: Path | None, source: str = "hotpotqa") -> dict[str, set[str]]:
    """question id -> keys of every paragraph its source record ships with (empty when no data)."""
    if data is None or not data.is_file():
        return {}
    from memtrain.tasks.longqa import load_source

    items, _ = load_source(source, data)
    return {it.qid: it.context_keys | {d.key for d in it.gold} for it in items}


def search_questions(tasks: Iterable[Any]) -> tuple[set[str], dict[str, str]]:
    """Search-QA tasks' objective ids (``<source>:<id>``) and normalised question text -> task id."""
    from memtrain.scoring import normalize_answer

    ids: set[str] = set()
    texts: dict[str, str] = {}
    for t in tasks:
        ids.update(str(q) for q in t.meta.get("question_ids", []))
        for o in t.meta.get("objectives", []):
            texts.setdefault(normalize_answer(str(o.get("question", ""))), t.id)
    return ids, texts


def find_leaks(train: Side, evaluation: Side, paragraphs: dict[str, set[str]]) -> dict[str, list[str]]:
    """Shared question ids (and search-QA question texts) and evaluation paragraphs read by training (all
    lists empty = clean)."""
    from memtrain.tasks.longqa import footprint, overlap

    tr, ev = footprint(train.tasks), footprint(evaluation.tasks)
    (s_train, t_train), (s_eval, t_eval) = search_questions(train.tasks), search_questions(evaluation.tasks)
    train_qids = tr.question_ids | train.question_ids | s_train
    eval_qids = ev.question_ids | evaluation.question_ids | s_eval
    shared_texts = sorted(set(t_train) & set(t_eval) - {""})
    eval_keys = set(ev.gold_keys)
    for q in eval_qids:
        eval_keys |= paragraphs.get(q, set())
    basic = overlap(train.tasks, evaluation.tasks)
    shared_q = (train_qids & eval_qids) | basic["question_ids"]
    leaked = (eval_keys & tr.doc_keys) | basic["eval_gold_in_train"]
    offenders = {t.id for t in train.tasks if str(t.meta.get("question_id")) in shared_q
                 or leaked & set(t.meta.get("doc_keys", []))
                 or shared_q & set(t.meta.get("question_ids", []))}
    offenders |= {t_train[x] for x in shared_texts}
    return {"question_ids": sorted(shared_q), "question_texts": shared_texts,
            "eval_paragraphs_in_train": sorted(leaked), "train_tasks": sorted(offenders)}


def report(leaks: dict[str, list[str]], train: Side, evaluation: Side, out: Any = None) -> int:
    """Print the verdict (to stdout by default); 0 when clean, 1 on any leak."""
    out = out or sys.stdout
    tr = f"{len(train.tasks)} train tasks + {len(train.question_ids)} train result ids"
    ev = f"{len(evaluation.tasks)} eval tasks + {len(evaluation.question_ids)} eval result ids"
    for name, side in (("train", train), ("eval", evaluation)):
        for m in side.manifests:
            lq = m.config.get("longqa") or {}
            split = (f" (split {m.split} of eval_fraction {lq.get('eval_fraction')}, split_seed "
                     f"{lq.get('split_seed')})" if m.kind == "longqa" else "")
            print(f"check_overlap: {name}: {m.describe()}{split}", file=out)
    if not any(leaks.values()):
        print(f"check_overlap: clean ({tr} vs {ev}): no shared question and no evaluation paragraph in "
              "training documents", file=out)
        return 0
    print(f"check_overlap: LEAK ({tr} vs {ev})", file=out)
    for key, label in (("question_ids", "evaluation question ids in training"),
                       ("question_texts", "evaluation questions (normalised text) in training"),
                       ("eval_paragraphs_in_train", "evaluation paragraphs (titles/keys) read in training"),
                       ("train_tasks", "offending training tasks")):
        vals = leaks[key]
        if vals:
            shown = ", ".join(vals[:20]) + (f", ... ({len(vals) - 20} more)" if len(vals) > 20 else "")
            print(f"  {label}: {len(vals)}: {shown}", file=out)
    return 1


def headline_sides(scale: str, runs: Path | None = None) -> tuple[Side, Side, Path, str]:
    """The headline experiment's task-RL training set and evaluation set, from disk (built if missing)."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import headline

    exp = headline.load_experiment(scale)
    dirs = headline.ensure_tasksets(exp, ["task_train", "task_eval"], runs or headline.RUNS, progress=False)
    sets = headline.data_configs(exp, runs or headline.RUNS)
    lq = sets["task_eval"].longqa
    return load_side([dirs["task_train"]]), load_side([dirs["task_eval"]]), lq.data_path(), lq.source


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="*", metavar="TRAIN_DIR EVAL_DIR",
                    help="a training and an evaluation task set (or shard / results files)")
    ap.add_argument("--train", nargs="+", default=[], help="training task sets, MemTask shards or results")
    ap.add_argument("--eval", nargs="+", default=[], help="evaluation task sets, tasks or results.jsonl")
    ap.add_argument("--data", default=None,
                    help="questions file to look evaluation question ids up in (their own paragraphs); "
                         "default: the evaluation task set's, else " + str(DEFAULT_DATA))
    ap.add_argument("--source", default="hotpotqa", help="format of --data: hotpotqa | squad | narrativeqa")
    ap.add_argument("--headline", nargs="?", const="", default=None, metavar="SCALE",
                    help="check the headline experiment's task sets of SCALE "
                         "(experiments/configs/<SCALE>.yaml)")
    ap.add_argument("--scale", default="cpu", help="headline scale when --headline is given without one")
    ap.add_argument("--runs-dir", default=None, help="headline runs folder (default: experiments/runs)")
    args = ap.parse_args(argv)

    from memtrain.errors import MemtrainError

    try:
        source = args.source
        if args.headline is not None:
            if args.sets or args.train or args.eval:
                ap.error("--headline checks the experiment's own task sets; give no other inputs")
            runs = Path(args.runs_dir) if args.runs_dir else None
            train, evaluation, data, source = headline_sides(args.headline or args.scale, runs)
        else:
            if args.sets and (args.train or args.eval or len(args.sets) != 2):
                ap.error("give TRAIN_DIR EVAL_DIR, or --train ... --eval ...")
            train_specs, eval_specs = (args.sets[:1], args.sets[1:]) if args.sets else (args.train, args.eval)
            if not train_specs or not eval_specs:
                ap.error("give TRAIN_DIR EVAL_DIR, --train ... --eval ..., or --headline SCALE")
            train, evaluation = load_side(train_specs), load_side(eval_specs)
            named = questions_file(evaluation)
            if args.data:
                data = Path(args.data)
            elif named:
                data, source = named
            else:
                data = DEFAULT_DATA
        leaks = find_leaks(train, evaluation, question_paragraphs(data, source))
        return report(leaks, train, evaluation)
    except MemtrainError as e:
        print(f"check_overlap: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
