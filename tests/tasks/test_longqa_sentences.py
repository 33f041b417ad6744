"""Sentence-level long-document QA (`longqa.unit=sentence`, the micro-scale downstream task), real SQuAD."""

from __future__ import annotations

import pytest

from memtrain.errors import MemtrainError
from memtrain.tasks.longqa import (
    LongQAConfig,
    build_from_config,
    footprint,
    load_squad,
    render_documents,
    sentences,
    to_sentences,
)

SQUAD = "squad/squad_v2.0_dev_rebuilt.json"


def test_sentences_cut_at_end_marks_before_a_capital_or_digit():
    text = 'It rained in 1990. Then it stopped! Was it dry? "Yes." 1991 was dry. e.g. not here. U.S. law'
    assert sentences(text) == ["It rained in 1990.", "Then it stopped!", "Was it dry?", '"Yes."',
                               "1991 was dry. e.g. not here.", "U.S. law"]


@pytest.fixture(scope="module")
def built(shared_data, tokenizer):
    cfg = LongQAConfig(source="squad", path=str(shared_data / SQUAD), unit="sentence", n_docs=[4, 16],
                       num_questions=40, chunk_tokens=24, split="eval")
    train = LongQAConfig(**{**cfg.__dict__, "split": "train", "n_docs": [4], "num_questions": 200})
    return build_from_config(cfg, tokenizer), build_from_config(train, tokenizer), cfg


def test_the_gold_sentence_holds_an_answer_and_every_document_is_one_short_sentence(built, shared_data):
    eval_tasks, _, cfg = built
    assert len(eval_tasks) == 80
    items, pool = load_squad(shared_data / SQUAD)
    items, pool = to_sentences(items, pool, cfg.min_sentence_words, cfg.max_sentence_words)
    by_key = {d.key: d for d in pool} | {it.gold[0].key: it.gold[0] for it in items}
    for t in eval_tasks:
        docs = [by_key[k] for k in t.meta["doc_keys"]]
        assert len(docs) == t.meta["n_docs"] and all(k.count("#s") == 1 for k in t.meta["doc_keys"])
        gold = docs[t.meta["gold_positions"][0] - 1].text
        assert any(a.lower() in gold.lower() for a in t.answers), (t.id, gold)
        assert all(cfg.min_sentence_words <= len(d.text.split()) <= cfg.max_sentence_words for d in docs)
        # the chunks are exactly the rendered documents (only whitespace at cut points dropped)
        assert "".join("".join(t.chunks).split()) == "".join(render_documents(docs).split())


def test_longer_contexts_cost_more_chunks_and_the_split_stays_paragraph_disjoint(built):
    eval_tasks, train_tasks, _ = built
    chunks = {n: sum(len(t.chunks) for t in eval_tasks if t.meta["n_docs"] == n) for n in (4, 16)}
    assert chunks[16] > 3 * chunks[4]
    paragraphs = {k.rsplit("#s", 1)[0] for k in footprint(eval_tasks).gold_keys}
    read_in_training = {k.rsplit("#s", 1)[0] for k in footprint(train_tasks).doc_keys}
    assert not paragraphs & read_in_training  # no eval answer paragraph is read in training, even as noise
    assert not footprint(eval_tasks).question_ids & footprint(train_tasks).question_ids


def test_sentence_bounds_that_keep_no_question_are_a_clear_error(shared_data, tokenizer):
    cfg = LongQAConfig(source="squad", path=str(shared_data / SQUAD), unit="sentence", n_docs=[4],
                       max_sentence_words=1, min_sentence_words=1, chunk_tokens=24)
    with pytest.raises(MemtrainError, match="max_sentence_words"):
        build_from_config(cfg, tokenizer)
