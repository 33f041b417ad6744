"""``memtrain eval`` and ``memtrain report`` end to end with the tiny model on real HotpotQA."""

from __future__ import annotations

import json

from memtrain.cli import main
from memtrain.io import read_jsonl

HOTPOT = "hotpotqa/ircot_hotpotqa_dev_subsampled500.jsonl"


def _args(data, out, *extra):
    return ["eval", "--model", "tiny", "--task", "hotpotqa", "--data", str(data), "--n-docs", "2,4",
            "--num-questions", "2", "--chunk-tokens", "256", "--memory-tokens", "6", "--answer-tokens", "6",
            "--batch-size", "4", "--no-progress", "--out", str(out), *extra]


def test_eval_cli_writes_outputs_and_resumes(shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _args(shared_data / HOTPOT, out, "--baseline", "full-context", "--max-context-tokens", "2048")
    assert main(argv) == 0
    for name in ("results.jsonl", "metrics.json", "results.md", "accuracy_vs_length.png", "run.json",
                 "full_context/results.jsonl", "full_context/metrics.json"):
        assert (out / name).is_file(), name
    rows = list(read_jsonl(out / "results.jsonl"))
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["by_length"]) == {"2", "4"} and metrics["model"] == "tiny"
    printed = capsys.readouterr().out
    assert "tiny memory agent" in printed and "tiny full context" in printed
    assert main(argv) == 0  # same command again: resumes, nothing duplicated
    assert len(list(read_jsonl(out / "results.jsonl"))) == 4
    assert main(["report", str(out), str(out / "full_context"), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "accuracy_vs_length.png").is_file()


def test_eval_cli_missing_data_is_exit_2(tmp_path, capsys):
    assert main(_args(tmp_path / "missing.jsonl", tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "missing.jsonl" in err and "--data" in err
    assert main(["eval", "--task", "proxy", "--model", "tiny", "--out", str(tmp_path / "p")]) == 2
    assert "--tasks-dir" in capsys.readouterr().err


def test_eval_cli_proxy_on_built_shards(tmp_path, capsys):
    from memtrain.io import write_jsonl
    from memtrain.prompts import E2E_PROBLEM
    from memtrain.records import ImrCandidate, MemTask

    chunks = ["Alice Smith met the [MASK] delegation.", "The [MASK] bridge was built by Carl Jones."]
    imr = [[ImrCandidate("Alice Smith", ["Alice Smith"])], [ImrCandidate("Carl Jones", ["Carl Jones"])]]
    tasks = [MemTask(id=f"e2e-{i}", kind="e2e", problem=E2E_PROBLEM, chunks=chunks, answers=["Paris"],
                     imr=imr) for i in range(3)]
    write_jsonl(tmp_path / "tasks" / "shard-00000.jsonl", [t.to_dict() for t in tasks])
    out = tmp_path / "proxy"
    argv = ["eval", "--task", "proxy", "--model", "tiny", "--tasks-dir", str(tmp_path / "tasks"),
            "--memory-tokens", "6", "--answer-tokens", "6", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["n_imr"] == 3
    assert len(list(read_jsonl(out / "proxy_results.jsonl"))) == 3
    assert "IMR acc" in (out / "results.md").read_text() and "IMR acc" in capsys.readouterr().out
