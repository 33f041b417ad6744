"""Search-QA task sets: MEM1's pairing rule, the disjoint per-source split, the NQ answerability filter,
the build recipe and manifest, and scripts/check_overlap.py on real data."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from memtrain.config import load_config
from memtrain.errors import MemtrainError
from memtrain.recipes.build_tasks import BuildConfig, build
from memtrain.tasks.searchqa import SearchQAConfig, build_search_tasks, load_questions, split_ids
from memtrain.tasks.taskset import open_taskset

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import check_overlap  # noqa: E402


def nq_file(tmp_path: Path, n: int = 7) -> Path:
    p = tmp_path / "nq.jsonl"
    rows = [{"question": f"who is person {i}" + ("?" if i == 3 else ""), "answer": [f"P{i}", f"Person {i}"]}
            for i in range(n)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_pairing_rule(tmp_path):
    cfg = SearchQAConfig(sources=["nq"], paths={"nq": str(nq_file(tmp_path))}, split="all", n_objectives=2,
                         corpus=str(tmp_path / "none"))
    tasks, stats = build_search_tasks(cfg)
    assert len(tasks) == 3 and stats["per_source"]["nq"]["dropped_incomplete_group"] == 1
    t = tasks[1]  # rows 2 and 3, consecutive, each ending in exactly one "?"
    assert t.problem == "who is person 2?; who is person 3?"
    assert [o["answers"] for o in t.meta["objectives"]] == [["P2", "Person 2"], ["P3", "Person 3"]]
    assert t.meta["question_ids"] == ["nq:2", "nq:3"] and t.kind == "search" and t.chunks == []
    assert t.to_dict()["reward_model"]["ground_truth"] == {"target": [["P2", "Person 2"], ["P3", "Person 3"]]}
    three = build_search_tasks(replace(cfg, n_objectives=3))[0]
    assert [len(x.meta["objectives"]) for x in three] == [3, 3]


def test_split_is_disjoint_and_eval_only(tmp_path):
    base = SearchQAConfig(sources=["nq"], paths={"nq": str(nq_file(tmp_path, 40))}, n_objectives=1,
                          eval_fraction=0.25, corpus=str(tmp_path / "none"))
    train = build_search_tasks(replace(base, split="train"))[0]
    ev = build_search_tasks(replace(base, split="eval"))[0]
    ids = lambda ts: {q for t in ts for q in t.meta["question_ids"]}  # noqa: E731
    assert not ids(train) & ids(ev) and len(ids(train) | ids(ev)) == 40 and len(ids(ev)) == 10
    assert split_ids(load_questions("nq", base.path("nq")), 0.25, 0) == {q.split(":")[1] for q in ids(ev)}
    only = replace(base, eval_only=["nq"])
    assert build_search_tasks(replace(only, split="train"))[0] == []
    assert len(build_search_tasks(replace(only, split="eval"))[0]) == 40
    other_seed = build_search_tasks(replace(base, split="eval", split_seed=1))[0]
    assert ids(other_seed) != ids(ev)


def test_nq_filter_reads_answerability(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    qs = {f"who is person {i}": {"answers": [f"P{i}"], "in_pool": i < 4, "bm25_rank": 2 if i < 2 else None}
          for i in range(7)}
    (corpus / "answerable_nq.json").write_text(json.dumps({"questions": qs}))
    base = SearchQAConfig(sources=["nq"], paths={"nq": str(nq_file(tmp_path))}, split="all", n_objectives=1,
                          corpus=str(corpus))
    everything = build_search_tasks(base)[0]
    assert len(everything) == 7 and [t.meta["answerable"] for t in everything[:3]] == [True, True, False]
    assert everything[0].meta["objectives"][0]["bm25_rank"] == 2
    assert len(build_search_tasks(replace(base, nq_filter="in_pool"))[0]) == 3  # "person 3?" keeps its "?"
    assert len(build_search_tasks(replace(base, nq_filter="retrieved"))[0]) == 2
    assert len(build_search_tasks(replace(base, nq_filter="retrieved", nq_max_rank=1))[0]) == 0
    both = build_search_tasks(replace(base, nq_answerable_benchmark=True))[0]  # nq, then its answerable part
    assert [t.meta["source"] for t in both] == ["nq"] * 7 + ["nq_answerable"] * 2
    assert both[-1].meta["question_ids"] == ["nq:1"] and both[-1].id == "search-nq_answerable-all-1"
    with pytest.raises(MemtrainError, match="answerable_nq.json"):
        build_search_tasks(replace(base, nq_filter="in_pool", corpus=str(tmp_path / "missing")))


def test_bad_config():
    with pytest.raises(MemtrainError, match="unknown sources"):
        SearchQAConfig(sources=["trivia"]).validate()
    with pytest.raises(MemtrainError, match="n_objectives"):
        SearchQAConfig(n_objectives=0).validate()


def test_build_recipe_writes_a_task_set(tmp_path):
    nq = nq_file(tmp_path, 10)
    cfg = BuildConfig(kind="searchqa", out=str(tmp_path / "set"), progress=False,
                      searchqa=SearchQAConfig(sources=["nq"], paths={"nq": str(nq)}, split="all",
                                              n_objectives=2, corpus=str(tmp_path / "none")))
    stats = build(cfg)
    ts = open_taskset(tmp_path / "set")
    assert ts.manifest.kind == "searchqa" and ts.manifest.complete
    assert ts.manifest.n_tasks == 5 == len(ts.tasks)
    assert stats["per_source"]["nq"]["tasks"] == 5
    assert (tmp_path / "set" / "README.md").is_file()
    build(cfg)  # the same build again: fine
    other = replace(cfg, searchqa=replace(cfg.searchqa, n_objectives=1))
    with pytest.raises(MemtrainError, match="another build"):
        build(other)
    build(replace(other, overwrite=True))
    assert len(open_taskset(tmp_path / "set").tasks) == 10


def test_real_presets_are_disjoint(shared_data, tmp_path, capsys):
    sides = {}
    # the CPU train preset keeps NQ questions answerable from the local corpus; without that corpus built
    # (`memtrain data build search_corpus_cpu`), build it unfiltered
    corpus = load_config(BuildConfig, "data", "searchqa_cpu_train", []).searchqa.answerable_path()
    unfiltered = [] if corpus.is_file() else ["searchqa.nq_filter=none",
                                              "searchqa.nq_answerable_benchmark=false"]
    for preset in ("searchqa_cpu_train", "searchqa_cpu_eval", "searchqa_paper_train", "searchqa_paper_eval"):
        cfg = load_config(BuildConfig, "data", preset, [f"out={tmp_path / preset}",
                                                        f"searchqa.data={shared_data}", "progress=false",
                                                        *unfiltered])
        build(cfg)
        sides[preset] = tmp_path / preset
    ev = open_taskset(sides["searchqa_cpu_eval"]).tasks
    assert {t.meta["source"] for t in ev} - {"nq_answerable"} == {"hotpotqa", "nq", "musique"}
    assert sum(t.meta["source"] == "musique" for t in ev) == 100  # eval-only: every MuSiQue question
    paper = open_taskset(sides["searchqa_paper_eval"]).tasks
    assert all(len(t.meta["objectives"]) == 2 and "?; " in t.problem for t in paper)
    for scale in ("cpu", "paper"):
        a, b = f"searchqa_{scale}_train", f"searchqa_{scale}_eval"
        assert check_overlap.main([str(sides[a]), str(sides[b])]) == 0
    assert "clean" in capsys.readouterr().out
    # a planted leak: one eval question under another id in training is caught by its text
    leak = replace(ev[0], id="planted", meta={**ev[0].meta, "question_ids": ["nq:renamed"]})
    planted = tmp_path / "planted.jsonl"
    planted.write_text(json.dumps(leak.to_dict()) + "\n")
    assert check_overlap.main(["--train", str(sides["searchqa_cpu_train"]), str(planted),
                               "--eval", str(sides["searchqa_cpu_eval"])]) == 1
    out = capsys.readouterr().out
    assert "LEAK" in out and "normalised text" in out and "planted" in out
