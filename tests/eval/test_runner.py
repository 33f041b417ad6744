"""The resumable eval runner and the full-context baseline, on the tiny random model (scores ~0)."""

from __future__ import annotations

import json

import pytest

from memtrain.errors import MemtrainError
from memtrain.eval.baselines import SKIPPED_TOO_LONG, evaluate_full_context, full_context_messages
from memtrain.eval.results import aggregate
from memtrain.eval.runner import evaluate
from memtrain.io import read_jsonl


class Killed(Exception):
    pass


def _rows(path):
    return list(read_jsonl(path))


def test_evaluate_writes_rows_and_metrics(tiny_engine, qa_tasks, agent_cfg, greedy, tmp_path):
    m = evaluate(tiny_engine, qa_tasks, agent_cfg, greedy, tmp_path, batch_size=4, progress=False)
    rows = _rows(tmp_path / "results.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(t.id for t in qa_tasks)  # each question exactly once
    for r, t in zip(sorted(rows, key=lambda r: r["id"]), sorted(qa_tasks, key=lambda t: t.id), strict=True):
        assert r["n_docs"] == t.meta["n_docs"] and r["n_chunks"] == len(t.chunks)
        assert r["answers"] == t.answers and r["question"] == t.problem
        assert set(r["metrics"]) == {"boxed", "accuracy", "strict_em", "em", "f1", "sub_em"}
        assert isinstance(r["response"], str) and r["seconds"] >= 0
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    assert set(m["by_length"]) == {"3", "6"}
    assert m["headline_metric"] == "accuracy"
    for g in m["by_length"].values():
        assert g["n"] == 3 and g["n_scored"] == 3
        assert g["no_boxed"] == pytest.approx(1 - g["boxed"])
    assert m["by_length"]["3"]["mean_tokens"] < m["by_length"]["6"]["mean_tokens"]
    for n, g in m["by_length"].items():  # the headline accuracy is the mean of that length's rows
        scored = [r["metrics"]["accuracy"] for r in rows if str(r["n_docs"]) == n]
        assert g["accuracy"] == pytest.approx(sum(scored) / len(scored))
    assert m["overall"]["n"] == 6


def test_resume_after_a_kill_gives_the_same_rows(tiny_engine, qa_tasks, agent_cfg, greedy, tmp_path):
    full = tmp_path / "full"
    evaluate(tiny_engine, qa_tasks, agent_cfg, greedy, full, batch_size=2, progress=False)

    def kill(i, rows):
        if i == 0:
            raise Killed

    part = tmp_path / "part"
    with pytest.raises(Killed):
        evaluate(tiny_engine, qa_tasks, agent_cfg, greedy, part, batch_size=2, on_batch=kill, progress=False)
    assert len(_rows(part / "results.jsonl")) == 2
    seen = []
    evaluate(tiny_engine, qa_tasks, agent_cfg, greedy, part, batch_size=2,
             on_batch=lambda i, rows: seen.extend(r["id"] for r in rows), progress=False)
    assert len(seen) == 4  # only the unfinished questions ran
    rows = _rows(part / "results.jsonl")
    assert len(rows) == len({r["id"] for r in rows}) == 6

    def key(r):
        return (r["id"], r["response"], r["prediction"])

    assert sorted(map(key, rows)) == sorted(map(key, _rows(full / "results.jsonl")))


def test_torn_last_line_is_tolerated(tiny_engine, qa_tasks, agent_cfg, greedy, tmp_path):
    evaluate(tiny_engine, qa_tasks[:2], agent_cfg, greedy, tmp_path, batch_size=2, progress=False)
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"id": "' + qa_tasks[2].id + '", "respo')  # killed mid-write
    m = evaluate(tiny_engine, qa_tasks[:3], agent_cfg, greedy, tmp_path, batch_size=2, progress=False)
    rows = _rows(tmp_path / "results.jsonl")  # strict reader: the file is clean again
    assert [r["id"] for r in rows] == [t.id for t in qa_tasks[:3]]
    assert m["overall"]["n"] == 3


def test_resume_with_other_settings_is_refused(tiny_engine, qa_tasks, agent_cfg, greedy, tmp_path):
    args = (tiny_engine, qa_tasks[:1], agent_cfg, greedy, tmp_path)
    evaluate(*args, run_info={"model": "a"}, progress=False)
    with pytest.raises(MemtrainError, match="different settings"):
        evaluate(*args, run_info={"model": "b"}, progress=False)
    evaluate(*args, run_info={"model": "b"}, resume=False, progress=False)
    assert json.loads((tmp_path / "run.json").read_text()) == {"model": "b"}


def test_full_context_skips_documents_that_do_not_fit(tiny_engine, qa_tasks, greedy, tmp_path):
    from memtrain.agent.engine import render

    lengths = {t.id: len(render(tiny_engine.tokenizer, full_context_messages(t))) for t in qa_tasks}
    short = max(n for t, n in lengths.items() if t.endswith("-n3"))
    long = min(n for t, n in lengths.items() if t.endswith("-n6"))
    assert short < long
    limit = short + 6  # every 3-doc prompt fits with the 6-token answer, no 6-doc prompt does
    m = evaluate_full_context(tiny_engine, qa_tasks, greedy, tmp_path, answer_tokens=6,
                              max_context_tokens=limit, batch_size=4, progress=False)
    rows = {r["id"]: r for r in _rows(tmp_path / "results.jsonl")}
    assert len(rows) == 6
    for tid, r in rows.items():
        assert r["prompt_tokens"] == lengths[tid]
        if tid.endswith("-n6"):
            assert r["skipped"] == SKIPPED_TOO_LONG and r["metrics"] is None and r["response"] is None
        else:
            assert "skipped" not in r and r["metrics"] is not None
    assert m["by_length"]["6"]["n_skipped"] == 3 and m["by_length"]["6"]["accuracy"] is None
    assert m["by_length"]["3"]["n_scored"] == 3 and m["by_length"]["3"]["accuracy"] is not None
    assert m["average_over_lengths"] == m["by_length"]["3"]["accuracy"]  # skipped lengths are not zeros


def test_aggregate_by_hand():
    def row(n, sub, boxed):
        return {"n_docs": n, "n_tokens": 10 * n, "n_chunks": 1, "seconds": 1.0,
                "metrics": {"accuracy": sub, "sub_em": sub, "em": 0.0, "f1": 0.5, "strict_em": 0.0,
                            "boxed": boxed}}

    rows = [row(5, 1.0, 1.0), row(5, 0.0, 0.0), row(10, 1.0, 1.0), {**row(10, 0, 0), "metrics": None}]
    m = aggregate(rows)
    assert m["by_length"]["5"]["accuracy"] == 0.5 and m["by_length"]["5"]["no_boxed"] == 0.5
    assert m["by_length"]["10"]["accuracy"] == 1.0 and m["by_length"]["10"]["n_skipped"] == 1
    assert m["average_over_lengths"] == 0.75
    assert list(m["by_length"]) == ["5", "10"]  # numeric, not string, order


def test_a_log_line_torn_inside_a_multibyte_character_keeps_the_rows_before_it(tmp_path):
    """A run killed mid-write can cut a line inside a UTF-8 character; resume keeps every whole row."""
    from memtrain.io import read_jsonl_tolerant

    path = tmp_path / "results.jsonl"
    whole = [{"id": "a", "answer": "Zürich"}, {"id": "b", "answer": "Kraków"}]
    torn = json.dumps({"id": "c", "answer": "Łódź"}, ensure_ascii=False).encode("utf-8")
    cut = torn[: torn.index("Ł".encode()) + 1]  # the first byte of a two-byte character
    path.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in whole) + cut)
    assert read_jsonl_tolerant(path) == whole


def test_a_length_is_timed_by_its_own_batches(tiny_engine, qa_tasks, agent_cfg, greedy, tmp_path,
                                              monkeypatch):
    """Documents read together share one wall time, so a batch holds one length: the 3-doc questions are
    not charged for the 6-doc ones they used to be batched with."""
    from memtrain.eval import runner

    def timed(fn):  # a turn-synchronous batch takes as long as its longest document: n_docs seconds
        trajs = fn()
        return trajs, float(max(int(tr.task_id.rsplit("-n", 1)[1]) for tr in trajs))

    monkeypatch.setattr(runner, "timed", timed)
    n3 = [t for t in qa_tasks if t.meta["n_docs"] == 3]
    n6 = [t for t in qa_tasks if t.meta["n_docs"] == 6]
    mixed = [t for pair in zip(n3, n6, strict=True) for t in pair]  # question-major, as task sets are
    batches = []
    m = evaluate(tiny_engine, mixed, agent_cfg, greedy, tmp_path, batch_size=2, progress=False,
                 on_batch=lambda i, rows: batches.append({r["n_docs"] for r in rows}))
    assert all(len(lengths) == 1 for lengths in batches)
    # per length: the wall time of its own batches (2 questions, then 1) over its 3 questions
    assert m["by_length"]["3"]["seconds_per_question"] == pytest.approx((3 + 3) / 3)
    assert m["by_length"]["6"]["seconds_per_question"] == pytest.approx((6 + 6) / 3)
    rows = _rows(tmp_path / "results.jsonl")
    assert sorted(r["batch_size"] for r in rows) == [1, 1, 2, 2, 2, 2]
    assert "one length" in m["time_note"]
