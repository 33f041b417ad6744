"""``memtrain data build kind=longqa`` -> ``memtrain eval`` -> ``memtrain report`` end to end with the tiny
model on real HotpotQA, and the proxy evaluation on an E2E task set."""

from __future__ import annotations

import json

import pytest
from helpers import write_taskset

from memtrain.cli import main
from memtrain.io import read_jsonl

HOTPOT = "hotpotqa/ircot_hotpotqa_dev_subsampled500.jsonl"


@pytest.fixture(scope="module")
def hotpot_eval_set(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("hq") / "eval"
    argv = ["data", "build", "hotpotqa_cpu_eval", f"longqa.path={shared_data / HOTPOT}",
            "longqa.n_docs=[2,4]", "longqa.num_questions=2", "longqa.chunk_tokens=256", f"out={out}",
            "progress=false"]
    assert main(argv) == 0
    return out


def _args(tasks, out, *extra):
    return ["eval", "model=tiny", f"tasks_dir={tasks}", "agent.memory_tokens=6", "agent.answer_tokens=6",
            "batch_size=4", "progress=false", f"out={out}", *extra]


def test_eval_cli_writes_outputs_and_resumes(hotpot_eval_set, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _args(hotpot_eval_set, out, "baseline=full-context", "max_context_tokens=2048")
    assert main(argv) == 0
    for name in ("results.jsonl", "metrics.json", "results.md", "accuracy_vs_length.png", "run.json",
                 "config.json", "full_context/results.jsonl", "full_context/metrics.json"):
        assert (out / name).is_file(), name
    rows = list(read_jsonl(out / "results.jsonl"))
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["by_length"]) == {"2", "4"} and metrics["model"] == "tiny"
    assert json.loads((out / "config.json").read_text())["agent"]["chunk_tokens"] == 256  # adopted
    printed = capsys.readouterr().out
    assert "tiny memory agent" in printed and "tiny full context" in printed
    assert main(argv) == 0  # same command again: resumes, nothing duplicated
    assert len(list(read_jsonl(out / "results.jsonl"))) == 4
    assert main(["report", f"metrics=[{out},{out / 'full_context'}]", f"out={tmp_path / 'rep'}"]) == 0
    assert (tmp_path / "rep" / "accuracy_vs_length.png").is_file()


def test_eval_cli_missing_task_set_is_exit_2(tmp_path, capsys):
    assert main(_args(tmp_path / "missing", tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "missing" in err and "memtrain data build" in err
    assert main(["eval", "model=tiny", f"out={tmp_path / 'p'}"]) == 2
    assert "tasks_dir is required" in capsys.readouterr().err


def test_task_rl_reads_the_long_qa_task_set(hotpot_eval_set, shared_data, tmp_path):
    """The same long-QA task sets feed task RL: one step on the train side, held-out eval on the eval side."""
    train_set = tmp_path / "train"
    assert main(["data", "build", "hotpotqa_cpu_train", f"longqa.path={shared_data / HOTPOT}",
                 "longqa.num_questions=4", "longqa.n_docs=[3]", "longqa.chunk_tokens=256", f"out={train_set}",
                 "progress=false"]) == 0
    run = tmp_path / "run"
    assert main(["train", "cpu_task_hotpotqa", "model.name=tiny", f"data.tasks_dir={train_set}",
                 f"data.eval_tasks_dir={hotpot_eval_set}", "steps=1", "eval_docs=2", "agent.memory_tokens=6",
                 "agent.answer_tokens=4", "log.progress=false", "log.tensorboard=false",
                 "gradient_checkpointing=false", f"out_dir={run}"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1] and "eval/e2e_sub_em" in rows[0]
    assert "reward/e2e_sub_em" in rows[1] and "reward/e2e_em" not in rows[1]


def test_eval_cli_proxy_on_e2e_task_set(tmp_path, capsys):
    from memtrain.prompts import E2E_PROBLEM
    from memtrain.records import ImrCandidate, MemTask

    chunks = ["Alice Smith met the [MASK] delegation.", "The [MASK] bridge was built by Carl Jones."]
    imr = [[ImrCandidate("Alice Smith", ["Alice Smith"])], [ImrCandidate("Carl Jones", ["Carl Jones"])]]
    tasks = [MemTask(id=f"e2e-{i}", kind="e2e", problem=E2E_PROBLEM, chunks=chunks, answers=["Paris"],
                     imr=imr) for i in range(3)]
    write_taskset(tmp_path / "tasks", tasks, max_chunks=2)
    out = tmp_path / "proxy"
    assert main(_args(tmp_path / "tasks", out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["n_imr"] == 3
    assert len(list(read_jsonl(out / "proxy_results.jsonl"))) == 3
    assert "IMR strict EM" in (out / "results.md").read_text() and "IMR strict EM" in capsys.readouterr().out


def test_sampled_evaluation_reports_the_spread_over_samples(hotpot_eval_set, tmp_path):
    out = tmp_path / "sampled"
    assert main(_args(hotpot_eval_set, out, "temperature=0.7", "top_p=0.95", "samples=2")) == 0
    rows = list(read_jsonl(out / "results.jsonl"))
    assert len(rows) == 8 and {r["sample"] for r in rows} == {0, 1}  # 4 tasks x 2 samples
    m = json.loads((out / "metrics.json").read_text())
    assert (m["temperature"], m["top_p"], m["samples"]) == (0.7, 0.95, 2)  # recorded with the results
    import statistics

    for n, g in m["by_length"].items():  # the spread is the stdev of the per-sample accuracies
        per = [statistics.fmean(r["metrics"]["accuracy"] for r in rows if str(r["n_docs"]) == n
                                and r["sample"] == k) for k in (0, 1)]
        assert g["samples"] == 2 and g["n"] == 4 and g["accuracy_sd"] == pytest.approx(statistics.stdev(per))
    assert main(_args(hotpot_eval_set, tmp_path / "g", "samples=2")) == 2  # greedy samples are identical
