"""scripts/check_overlap.py on real HotpotQA: the headline split is clean, a planted leak is caught."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import check_overlap  # noqa: E402

from memtrain.tasks import longqa  # noqa: E402


@pytest.fixture(scope="module")
def hotpot(shared_data):
    path = shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled500.jsonl"
    items, pool = longqa.load_hotpotqa(path)
    split = longqa.split_questions(items, eval_fraction=0.2, seed=0)
    return path, split, pool


# Leaks are planted with the "disjoint" construction, whose distractors are exactly the list given (the
# MemAgent construction fills short contexts with the record's own paragraphs first).


def _write(path: Path, tasks) -> Path:
    path.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in tasks))
    return path


def _sets(hotpot, tokenizer, tmp_path):
    """Two eval questions and two properly built training questions, written as task shards."""
    path, split, pool = hotpot
    ev_q, tr_q = split.eval[:2], split.train[:2]
    ev = longqa.build_longqa_tasks(ev_q, pool, [4], tokenizer, 256, seed=0)
    tr = longqa.build_longqa_tasks(tr_q, pool, [6], tokenizer, 256, seed=0, exclude=split.eval_keys)
    return ev_q, tr_q, ev, tr


def test_headline_split_is_clean(shared_data, tmp_path, capsys):
    """The headline's two long-QA task sets, on disk where the driver puts them, share nothing."""
    assert check_overlap.main(["--headline", "cpu", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "clean" in out and "200 train tasks" in out
    data = tmp_path / "cpu" / "_data"
    assert all((data / name / "manifest.json").is_file() for name in ("task_train", "task_eval"))
    # the old spelling still works and reads the same (already built) sets
    assert check_overlap.main(["--headline", "--scale", "cpu", "--runs-dir", str(tmp_path)]) == 0
    assert "200 train tasks" in capsys.readouterr().out


def _build(out: Path, split: str, n_docs: list[int], path: Path, num_questions: int = 4) -> Path:
    from memtrain.recipes.build_tasks import BuildConfig, build
    from memtrain.tasks.longqa import LongQAConfig

    lq = LongQAConfig(path=str(path), split=split, n_docs=n_docs, num_questions=num_questions,
                      chunk_tokens=256)
    build(BuildConfig(kind="longqa", out=str(out), longqa=lq, progress=False))
    return out


def test_two_task_sets_on_disk(hotpot, tokenizer, tmp_path, capsys):
    """TRAIN_DIR EVAL_DIR: the two sides of one split are disjoint; an unsplit set is caught."""
    from memtrain.tasks.taskset import load_tasks

    path, split, pool = hotpot
    ev = _build(tmp_path / "eval", "eval", [4], path)
    assert check_overlap.main([str(_build(tmp_path / "train", "train", [6], path)), str(ev)]) == 0
    out = capsys.readouterr().out
    assert "clean" in out and "4 train tasks" in out and "split train" in out and "split eval" in out

    # every question of the file (split=all) holds the evaluation questions: caught by id
    everything = _build(tmp_path / "all", "all", [2], path, num_questions=0)
    assert check_overlap.main([str(everything), str(ev)]) == 1
    out = capsys.readouterr().out
    eval_qids = sorted({t.meta["question_id"] for t in load_tasks(ev)})
    assert "LEAK" in out and eval_qids[0] in out

    # an eval question's own (non-gold) paragraph as a training distractor: only its source record shows
    # it, and the eval set's manifest names that file, so no --data is needed
    ev_q = next(q for q in split.eval if q.qid == eval_qids[0])
    own = sorted(ev_q.context_keys - {d.key for d in ev_q.gold})[0]
    own_doc = next(d for d in pool if d.key == own)
    tr_q = split.train[0]
    distractors = [own_doc, *longqa.distractor_order(tr_q, pool, 0, split.eval_keys)]
    bad = _write(tmp_path / "bad.jsonl", [longqa.build_task(tr_q, distractors, 6, tokenizer, 256, seed=0,
                                                       construction="disjoint")])
    assert check_overlap.main([str(bad), str(ev)]) == 1
    assert own in capsys.readouterr().out


def test_an_unfinished_task_set_is_refused(hotpot, tmp_path, capsys):
    path, _, _ = hotpot
    ev = _build(tmp_path / "eval", "eval", [4], path)
    manifest = json.loads((ev / "manifest.json").read_text())
    (ev / "manifest.json").write_text(json.dumps({**manifest, "finished": False, "complete": False}))
    assert check_overlap.main([str(ev), str(ev)]) == 2
    assert "did not finish" in capsys.readouterr().err


def test_clean_sets_pass_and_a_planted_gold_paragraph_is_caught(hotpot, tokenizer, tmp_path, capsys):
    path, split, pool = hotpot
    ev_q, tr_q, ev, tr = _sets(hotpot, tokenizer, tmp_path)
    ev_file = _write(tmp_path / "eval.jsonl", ev)
    assert check_overlap.main(["--train", str(_write(tmp_path / "train.jsonl", tr)), "--eval", str(ev_file),
                               "--data", str(path)]) == 0
    capsys.readouterr()

    # leak: an evaluation question's gold paragraph used as a distractor of a training question
    gold = ev_q[0].gold[0]
    distractors = [gold, *longqa.distractor_order(tr_q[0], pool, 0, split.eval_keys)]
    leaked = longqa.build_task(tr_q[0], distractors, 6, tokenizer, 256, seed=0,
                                construction="disjoint")
    assert gold.key in leaked.meta["doc_keys"]
    bad = _write(tmp_path / "leaked.jsonl", [leaked, *tr[1:]])
    assert check_overlap.main(["--train", str(bad), "--eval", str(ev_file), "--data", str(path)]) == 1
    out = capsys.readouterr().out
    assert "LEAK" in out and gold.title in out and leaked.id in out
    sides = check_overlap.load_side([str(bad)]), check_overlap.load_side([str(ev_file)])
    leaks = check_overlap.find_leaks(*sides, {})
    assert gold.key in leaks["eval_paragraphs_in_train"]  # caught from the tasks alone, without --data


def test_eval_question_own_distractor_and_results_files(hotpot, tokenizer, tmp_path, capsys):
    path, split, pool = hotpot
    ev_q, tr_q, ev, tr = _sets(hotpot, tokenizer, tmp_path)
    # an eval question's *own* (non-gold) paragraph: only visible through its source record (--data)
    own = sorted(ev_q[0].context_keys - {d.key for d in ev_q[0].gold})[0]
    own_doc = next(d for d in pool if d.key == own)
    distractors = [own_doc, *longqa.distractor_order(tr_q[0], pool, 0, split.eval_keys)]
    leaked = longqa.build_task(tr_q[0], distractors, 6, tokenizer, 256, seed=0,
                                construction="disjoint")
    bad = _write(tmp_path / "train.jsonl", [leaked])
    results = tmp_path / "eval_run"
    results.mkdir()
    (results / "results.jsonl").write_text(
        "".join(json.dumps({"id": t.id, "question_id": t.meta["question_id"]}) + "\n" for t in ev))
    assert check_overlap.main(["--train", str(bad), "--eval", str(results), "--data", str(path)]) == 1
    assert own in capsys.readouterr().out

    # the same evaluation question in training (by id) is caught from results rows too
    same_q = longqa.build_longqa_tasks(ev_q[:1], pool, [3], tokenizer, 256, seed=1)
    same = _write(tmp_path / "same.jsonl", same_q)
    assert check_overlap.main(["--train", str(same), "--eval", str(results), "--data", str(path)]) == 1
    assert ev_q[0].qid in capsys.readouterr().out


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"foo": 1}\n')
    assert check_overlap.main(["--train", str(junk), "--eval", str(junk)]) == 2
    assert "neither a MemTask" in capsys.readouterr().err
    assert check_overlap.main(["--train", str(tmp_path / "missing"), "--eval", str(junk)]) == 2
