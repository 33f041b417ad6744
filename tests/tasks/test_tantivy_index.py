"""The on-disk BM25 option (tantivy) and the top-IDF query cut, against the exact in-memory BM25."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest

from memtrain.config import load_config
from memtrain.corpus import iter_passages
from memtrain.corpus.store import write_store
from memtrain.errors import MemtrainError
from memtrain.recipes.build_tasks import POOL_DIR, BuildConfig, build
from memtrain.tasks.retrieval import BM25Retriever, TantivyRetriever, top_idf_terms

pytest.importorskip("tantivy")
K = 29


@pytest.fixture(scope="module")
def pool():
    return list(iter_passages("embedded"))


@pytest.fixture(scope="module")
def texts(pool):
    return [f"{p.title} {p.text}" for p in pool]


@pytest.fixture(scope="module")
def exact(texts):
    r = BM25Retriever()
    r.index(texts)
    return r


def recall(ref: list[list[int]], got: list[list[int]]) -> float:
    return sum(len(set(a) & set(b)) / len(a) for a, b in zip(ref, got, strict=True) if a) / len(ref)


def test_tantivy_top29_is_close_to_exact_bm25(texts, exact, tmp_path):
    r = TantivyRetriever(tmp_path / "ix")
    r.index(texts)
    assert len(r) == len(texts) and any((tmp_path / "ix").iterdir())
    pivots = random.Random(0).sample(range(len(texts)), 60)
    got, ref = r.topk_scored(pivots, K), exact.topk(pivots, K)
    for p, row in zip(pivots, got, strict=True):
        ids = [i for i, _ in row]
        assert p not in ids and len(ids) == len(set(ids)) <= K and all(0 <= i < len(texts) for i in ids)
        assert [s for _, s in row] == sorted((s for _, s in row), reverse=True)
    # k1=1.2 vs 1.5 and one-byte length norms reorder close scores; most hits are the same
    assert recall(ref, [[i for i, _ in row] for row in got]) >= 0.85
    assert r.topk(pivots[:3], K, exclude=[{ref[0][0]}, set(), set()])[0][0] != ref[0][0]
    assert r.topk(["zzzzunknownword", "the of and"], 5) == [[], []]  # no indexed term: no hit


def test_text_queries_find_the_passage_they_quote(texts, tmp_path):
    r = TantivyRetriever(tmp_path / "ix")
    r.index(texts)
    for i in random.Random(1).sample(range(len(texts)), 10):
        assert r.topk([texts[i]], 1)[0] == [i]


def test_index_over_a_store_view_equals_index_over_a_list(pool, texts, tmp_path):
    a, b = TantivyRetriever(tmp_path / "a", batch_size=100), TantivyRetriever(tmp_path / "b")
    a.index(texts)
    b.index(write_store(pool, tmp_path / "store").text_view())
    pivots = list(range(0, len(texts), 97))
    assert a.topk(pivots, K) == b.topk(pivots, K)
    again = pickle.loads(pickle.dumps(b))  # a spawned worker: reopens the index by its folder
    assert again.topk(pivots, K) == b.topk(pivots, K)


def test_top_idf_terms_keeps_the_rarest_distinct_terms_in_query_order():
    df = {"a": 5, "b": 2, "c": 3, "d": 3, "e": 1}.__getitem__
    assert top_idf_terms(["a", "b", "a", "c", "d"], df, 2) == ["b", "c"]  # c before d: first to occur
    assert top_idf_terms(["a", "b", "a"], df, 1) == ["b"]
    assert top_idf_terms(["a", "b", "a"], df, None) == ["a", "b", "a"]
    assert top_idf_terms(["a", "b", "a"], df, 10) == ["a", "b", "a"]
    # a term only in the query's own document (df 1) finds nothing else: never kept by the cut
    assert top_idf_terms(["e", "a", "b", "e"], df, 2) == ["a", "b"]
    assert top_idf_terms(["e", "a"], df, 2, min_df=1) == ["e", "a"]


def test_bm25_top_terms_queries_with_the_rarest_terms(texts, exact):
    cut = BM25Retriever(top_terms=8)
    cut.index(texts)
    for p in range(0, len(texts), 211):
        full, kept = exact._query_ids(p), cut._query_ids(p)
        shared = {t for t in full if cut._df[t] >= 2}  # in some other passage than the pivot
        assert len(set(kept)) == min(8, len(shared)) and set(kept) <= shared
        assert all(cut._df[k] <= cut._df[d] for k in kept for d in shared - set(kept))
    pivots = list(range(0, len(texts), 53))
    longer = BM25Retriever(top_terms=64)
    longer.index(texts)
    ref = exact.topk(pivots, K)
    # a real cut: recall falls with fewer terms (measured 0.16 at 8 terms, 0.84 at 64 on this corpus)
    assert recall(ref, cut.topk(pivots, K)) < recall(ref, longer.topk(pivots, K)) < 1.0
    assert recall(ref, longer.topk(pivots, K)) > 0.6


def cfg(out: Path, *extra: str) -> BuildConfig:
    return load_config(BuildConfig, "data", "cpu", [f"out={out}", "num_tasks=20", "shard_size=10",
                                                    "progress=false", "retriever=tantivy", *extra])


def test_tantivy_build_is_the_same_for_any_worker_count(tmp_path):
    build(cfg(tmp_path / "w1"))
    build(cfg(tmp_path / "w2", "workers=2"))
    shards = [{p.name: p.read_bytes() for p in sorted(d.glob("shard-*"))} for d in (tmp_path / "w1",
                                                                                    tmp_path / "w2")]
    assert shards[0] == shards[1] and len(shards[0]) == 2
    assert any((tmp_path / "w1" / POOL_DIR / "tantivy").iterdir())
    assert json.loads((tmp_path / "w1" / "manifest.json").read_text())["config"]["retriever"] == "tantivy"


def test_top_terms_is_in_the_config_hash_only_when_set(tmp_path):
    assert "retriever_top_terms" not in cfg(tmp_path).identity()  # old task sets keep their hash
    assert cfg(tmp_path, "retriever_top_terms=16").identity()["retriever_top_terms"] == 16
    for bad in ("retriever_top_terms=0", "retriever=dense retriever_top_terms=8"):
        with pytest.raises(MemtrainError, match="retriever_top_terms"):
            cfg(tmp_path, *bad.split()).validate()
