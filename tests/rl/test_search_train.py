"""Search QA end to end with the tiny model and a small local BM25 corpus: ``memtrain data build
kind=searchqa`` -> ``memtrain eval task=search`` (per-benchmark EM, traces, resume) -> ``memtrain train``
on a search-QA task set (the same GRPO trainer, rows of every turn, checkpoints), and the presets load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memtrain.cli import main
from memtrain.config import load_config
from memtrain.io import read_jsonl

PASSAGES = [("Hamlet", "Hamlet is a tragedy written by William Shakespeare."),
            ("Paris", "Paris is the capital of France."),
            ("Nile", "The Nile is a river in Africa."),
            ("Everest", "Mount Everest is the highest mountain on Earth.")]


@pytest.fixture(scope="module")
def search_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "passages.jsonl").write_text("".join(
        json.dumps({"id": f"p{i}", "contents": f'"{t}"\n{x}'}) + "\n" for i, (t, x) in enumerate(PASSAGES)))
    nq = root / "nq.jsonl"
    qs = [("who wrote hamlet", ["William Shakespeare"]), ("what is the capital of france", ["Paris"]),
          ("which river is in africa", ["Nile"]), ("what is the highest mountain", ["Mount Everest"])] * 3
    nq.write_text("".join(json.dumps({"question": f"{q} {i}", "answer": a}) + "\n"
                          for i, (q, a) in enumerate(qs)))
    sets = {}
    for split in ("train", "eval"):
        out = root / split
        assert main(["data", "build", "kind=searchqa", f"out={out}", f"searchqa.paths={{nq: {nq}}}",
                     "searchqa.sources=[nq]", f"searchqa.split={split}", "searchqa.n_objectives=1",
                     "searchqa.eval_fraction=0.34", f"searchqa.corpus={corpus}"]) == 0
        sets[split] = out
    return corpus, sets


def agent_args(corpus: Path) -> list[str]:
    return ["search.max_turns=2", "search.response_tokens=8", "search.memory_tokens=4",
            "search.info_tokens=16", "retriever.kind=bm25", f"retriever.corpus={corpus}", "retriever.topk=2"]


def test_eval_search_writes_traces_and_resumes(search_setup, tmp_path, capsys):
    corpus, sets = search_setup
    out = tmp_path / "ev"
    argv = ["eval", "model=tiny", f"tasks_dir={sets['eval']}", "task=search", f"out={out}", "batch_size=2",
            "progress=false", "trace=true", *agent_args(corpus)]
    assert main(argv) == 0
    rows = list(read_jsonl(out / "results.jsonl"))
    assert len(rows) == 4 and all(r["source"] == "nq" for r in rows)
    for r in rows:
        assert 1 <= r["n_turns"] <= 2 and len(r["steps"]) == r["n_turns"]
        assert set(r["metrics"]) >= {"em", "sub_em", "f1", "answered", "parts_ok"}
        assert all({"memory", "query", "titles", "action"} <= set(s) for s in r["steps"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["headline_metric"] == "em" and "nq" in metrics["by_benchmark"]
    assert metrics["by_benchmark"]["nq"]["n"] == 4 and metrics["average_over_benchmarks"] is not None
    assert (out / "trace.jsonl").is_file() and "| nq | 4 |" in (out / "results.md").read_text()
    before = (out / "results.jsonl").read_text()
    assert main(argv) == 0  # resumed: nothing left to run, the same rows
    assert (out / "results.jsonl").read_text() == before
    # a memory-agent evaluation of a search task set is refused with a clear message
    refused = ["eval", "model=tiny", f"tasks_dir={sets['eval']}", "task=memory", f"out={tmp_path / 'x'}"]
    assert main(refused) == 2
    assert "searchqa task set" in capsys.readouterr().err
    assert main([*argv, "baseline=full-context", f"out={tmp_path / 'y'}"]) == 2
    assert "needs documents" in capsys.readouterr().err


def test_train_on_search_tasks(search_setup, tmp_path):
    corpus, sets = search_setup
    out = tmp_path / "run"
    argv = ["train", "cpu_task_search", "model.name=tiny", f"data.tasks_dir={sets['train']}",
            f"data.eval_tasks_dir={sets['eval']}", f"out_dir={out}", "steps=2", "batch_size=2",
            "rollout.g1=2", "rollout.temperature=1.0", "loss.dapo_filter=false", "bf16=false",
            "gradient_checkpointing=false", "eval_docs=2", "save_every=1", "log.tensorboard=false",
            "log.progress=false", "optim.lr=1e-3",
            *agent_args(corpus)]
    assert main(argv) == 0
    rows = list(read_jsonl(out / "metrics.jsonl"))
    steps = [r for r in rows if r["step"] >= 1 and "reward/coupled" in r]
    assert len(steps) == 2
    for r in steps:
        assert r["rows/total"] == r["search/turns"] * 4  # every turn of the 2 x 2 episodes is a row
        assert "reward/search_f1" in r and "score/search_em" in r and r["update/skipped"] == 0.0
    assert any("eval/answered" in r for r in rows)
    assert (out / "final" / "config.json").is_file()
    held = list(read_jsonl(out / "held_out.jsonl"))
    assert held and "steps" in held[0]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["search"]["max_turns"] == 2 and cfg["retriever"]["kind"] == "bm25"


@pytest.mark.parametrize("preset", ["cpu_task_search", "paper_task_search_qwen3_4b",
                                    "paper_task_search_qwen25_7b"])
def test_train_presets_load(preset):
    from memtrain.rl.config import TrainConfig

    cfg = load_config(TrainConfig, "train", preset, [])
    if preset.startswith("paper"):
        assert (cfg.steps, cfg.batch_size, cfg.mini_batch_size, cfg.optim.lr) == (200, 32, 8, 5e-7)
        assert (cfg.rollout.g1, cfg.search.max_turns, cfg.search.response_tokens, cfg.search.info_tokens) == \
            (8, 6, 1000, 1000)
        assert cfg.retriever.kind == "http" and cfg.search.reward == "em"
        assert cfg.search.prompt_version == "mem1"


@pytest.mark.parametrize("preset", ["search_cpu", "search_paper"])
def test_eval_presets_load(preset):
    from memtrain.recipes.evaluate import EvalConfig

    cfg = load_config(EvalConfig, "eval", preset, ["model=tiny"])
    assert cfg.task == "search"
