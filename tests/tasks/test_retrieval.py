"""BM25 and dense retrieval behind one protocol."""

from __future__ import annotations

import numpy as np
import pytest

from memtrain.errors import MemtrainError
from memtrain.tasks.retrieval import BM25Retriever, DenseRetriever, Retriever

TEXTS = [
    "The cat sat on the mat with another cat.",
    "Dogs are loyal pets and dogs bark.",
    "A cat and a dog shared the mat.",
    "Paris is the capital of France.",
    "France borders Spain; Paris lies on the Seine.",
    "Quantum chromodynamics describes quarks.",
]


def test_bm25_query_by_index_excludes_itself_and_ranks_related():
    r = BM25Retriever()
    r.index(TEXTS)
    assert isinstance(r, Retriever)
    hits = r.topk([3, 0], k=3)
    assert 3 not in hits[0] and hits[0][0] == 4
    assert 0 not in hits[1] and hits[1][0] == 2
    assert 5 not in hits[0]  # no shared word: score 0 is not a hit


def test_bm25_text_queries_exclusion_and_batching():
    r = BM25Retriever(batch_size=1)  # several batches
    r.index(TEXTS)
    hits = r.topk(["capital of France", "barking dogs", "zzz unknown"], k=2, exclude=[{3}, set(), set()])
    assert hits[0] == [4]
    assert hits[1] == [1]
    assert hits[2] == []


def test_bm25_empty_pool_is_a_clear_error():
    with pytest.raises(MemtrainError, match="empty"):
        BM25Retriever().index([])


def _bag_of_words(texts: list[str]) -> np.ndarray:
    vocab = sorted({w.strip(".;").lower() for t in TEXTS for w in t.split()})
    out = np.zeros((len(texts), len(vocab)))
    for i, t in enumerate(texts):
        for w in t.split():
            w = w.strip(".;").lower()
            if w in vocab:
                out[i, vocab.index(w)] += 1
    return out


def test_dense_retriever_with_user_embedding():
    r = DenseRetriever(_bag_of_words, batch_size=4)
    r.index(TEXTS)
    assert isinstance(r, Retriever)
    hits = r.topk([3, "paris france capital"], k=2, exclude=[set(), {3}])
    assert 3 not in hits[0] and hits[0][0] == 4
    assert hits[1][0] == 4 and 3 not in hits[1]


def test_dense_minilm_retriever_finds_related_passages_and_caches(tmp_path, monkeypatch):
    pytest.importorskip("all_minilm_l6_v2")
    from memtrain.tasks import retrieval

    enc = retrieval.MiniLMEncoder(cache_dir=tmp_path / "model")
    calls = []

    def counted(texts):
        calls.append(len(texts))
        return enc(texts)

    counted.name = enc.name
    texts = ["Paris is the capital of France.", "Berlin is the capital of Germany.",
             "The cat sat on the mat.", "France's capital city is Paris."]
    r = retrieval.DenseRetriever(counted, batch_size=2, cache_dir=tmp_path / "emb")
    r.index(texts)
    assert r.topk([0], 1) == [[3]]  # the paraphrase, not the other capital
    assert calls == [2, 2]  # the pool, in batches of 2
    assert r.topk(["the capital of Germany"], 1) == [[1]]  # a free-text query is encoded too
    again = retrieval.DenseRetriever(counted, cache_dir=tmp_path / "emb")
    again.index(texts)  # from the cache: no encoding
    assert calls == [2, 2, 1] and again.topk([0], 1) == [[3]]
