"""The passage store: what is read back by row id is what was written, without copying the pool into RAM."""

from __future__ import annotations

import pickle
import random

import pyarrow as pa
import pytest

from memtrain.corpus import iter_passages
from memtrain.corpus.store import PassageStore, RowCache, read_store_meta, write_store
from memtrain.errors import MemtrainError


@pytest.fixture(scope="module")
def embedded():
    return list(iter_passages("embedded"))


def check_same(store: PassageStore, passages) -> None:
    assert len(store) == len(passages)
    assert list(store) == passages  # streaming read, in order
    ids = random.Random(0).choices(range(len(passages)), k=200)
    assert store.take(ids) == [passages[i] for i in ids]  # one gather, ids repeated and unordered
    assert [store[i] for i in range(len(passages))] == passages
    assert store[-1] == passages[-1]
    assert list(store.texts()) == [f"{p.title} {p.text}" for p in passages]
    assert list(store.entity_rows()) == [(e.key, e.text, e.label) for p in passages for e in p.entities]


def test_embedded_corpus_round_trips_by_row_id(embedded, tmp_path):
    # small files and batches, so rows cross record batches and files
    store = write_store(iter(embedded), tmp_path / "s", meta={"why": "test"}, rows_per_file=100,
                        batch_rows=16)
    assert len(embedded) > 300 and any(p.entities for p in embedded)
    files = sorted(p.name for p in (tmp_path / "s").glob("passages-*.arrow"))
    assert len(files) == -(-len(embedded) // 100)
    meta = read_store_meta(tmp_path / "s")
    assert meta["rows"] == len(embedded) and meta["meta"] == {"why": "test"}
    assert [f["rows"] for f in meta["files"]][:-1] == [100] * (len(files) - 1)
    check_same(store, embedded)
    with pytest.raises(IndexError):
        store[len(embedded)]
    again = pickle.loads(pickle.dumps(store))  # what a spawned worker gets: the path, mapped again
    assert again.folder == store.folder and again.take([3, 1]) == [embedded[3], embedded[1]]


def test_shared_wikipedia_leads_round_trip(shared_data, tmp_path):
    src = shared_data / "wikipedia" / "enwiki_vital_articles_lead_extracts-00.jsonl"
    passages = list(iter_passages(str(src), limit_pages=400))
    check_same(write_store(passages, tmp_path / "w", batch_rows=64), passages)


def test_opening_maps_the_files_instead_of_reading_them(embedded, tmp_path):
    """The columns point into the memory map: Arrow's allocator holds (almost) nothing after opening."""
    big = [p for _ in range(20) for p in embedded]  # ~20x the embedded dump, so the data dwarfs the footers
    write_store(big, tmp_path / "b")
    on_disk = sum(p.stat().st_size for p in (tmp_path / "b").glob("*.arrow"))
    before = pa.total_allocated_bytes()
    store = PassageStore(tmp_path / "b")
    assert len(store) == len(big)
    assert pa.total_allocated_bytes() - before < on_disk / 100
    assert store.take([len(big) - 1]) == [big[-1]]


def rss_file_mib() -> float | None:
    try:
        line = next(x for x in open("/proc/self/status") if x.startswith("RssFile:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024


def test_a_scan_holds_one_batch_not_the_mapped_pool(embedded, tmp_path):
    """Scans (the form index, the retriever's texts) read batches and free them: neither Arrow memory nor
    mapped file pages of the whole store stay with the process afterwards."""
    big = [p for _ in range(20) for p in embedded]
    store = write_store(big, tmp_path / "b")
    on_disk_mib = sum(p.stat().st_size for p in (tmp_path / "b").glob("*.arrow")) / 2**20
    before, file_before = pa.total_allocated_bytes(), rss_file_mib()
    n_chars = sum(len(t) for t in store.texts())
    n_mentions = sum(1 for _ in store.entity_rows())
    assert n_chars > 0 and n_mentions == 20 * sum(len(p.entities) for p in embedded)
    assert pa.total_allocated_bytes() - before < 2**20
    if file_before is not None:
        assert rss_file_mib() - file_before < on_disk_mib / 4


def test_an_interrupted_write_is_not_a_store(embedded, tmp_path):
    def dies():
        yield from embedded[:50]
        raise RuntimeError("reader killed")

    with pytest.raises(RuntimeError):
        write_store(dies(), tmp_path / "x", batch_rows=16)
    assert read_store_meta(tmp_path / "x") is None
    with pytest.raises(MemtrainError, match="not a finished passage store"):
        PassageStore(tmp_path / "x")
    write_store(embedded[:10], tmp_path / "x")  # a new write replaces the leftovers
    assert list(PassageStore(tmp_path / "x")) == embedded[:10]


def test_row_cache_is_bounded_and_returns_the_rows(embedded, tmp_path):
    store = write_store(embedded, tmp_path / "c")
    cache = RowCache(store, size=4)
    cache.fetch(range(10))  # one task's rows stay together even beyond the bound
    assert len(cache._rows) == 10
    assert cache.get(42) == embedded[42] and len(cache._rows) == 4
    assert [cache.get(i) for i in (9, 42, 0)] == [embedded[9], embedded[42], embedded[0]]
    assert len(cache._rows) == 4
