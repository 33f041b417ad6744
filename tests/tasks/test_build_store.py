"""The build with its pool on disk (the passage store) writes the same bytes as the build with a list."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from memtrain.config import load_config
from memtrain.corpus import iter_passages
from memtrain.corpus.store import write_store
from memtrain.recipes.build_tasks import POOL_DIR, BuildConfig, build
from memtrain.records import MemTask
from memtrain.seeds import derive_seed
from memtrain.tasks.e2e import PassagePool, build_e2e_task

CPU = load_config(BuildConfig, "data", "cpu").e2e


def shards_digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.glob("shard-*.*")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def cpu_cfg(out: Path, corpus: str, *extra: str) -> BuildConfig:
    return load_config(BuildConfig, "data", "cpu", [f"corpus={corpus}", f"out={out}", "num_tasks=30",
                                                    "shard_size=10", "progress=false", *extra])


def without_timings(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "timings"}


def test_disk_pool_builds_the_same_bytes_as_the_list(tmp_path):
    mem = build(cpu_cfg(tmp_path / "mem", "embedded", "pool=memory"))
    disk = build(cpu_cfg(tmp_path / "disk", "embedded", "workers=2"))  # pool=disk is the default
    assert (tmp_path / "disk" / POOL_DIR / "store.json").is_file()
    assert not (tmp_path / "mem" / POOL_DIR).exists()
    assert shards_digest(tmp_path / "disk") == shards_digest(tmp_path / "mem")
    for name in ("manifest.json", "README.md"):
        assert (tmp_path / "disk" / name).read_bytes() == (tmp_path / "mem" / name).read_bytes()
    assert without_timings(disk) == without_timings(mem) and disk["documents"] == 30


# Digests of the shards built at commit 87189bc, before the passage store existed (cpu preset, 30 tasks in
# shards of 10, SmolLM2 tokenizer, bm25s 0.3.16). They change only when the builder does (BUILDER_VERSION).
BEFORE_THE_STORE = {
    "embedded": "a797d22c44e7f5cda9e3c009c7898c221d09821610867b6923d3df7b32ddfc74",
    "leads-00 workers=2": "439e3da824d8a03fa035a7e1e8773ac60cb8f8dcb49f98d42cf6c9b76912048e",
}


def test_embedded_build_matches_the_digest_from_before_the_store(tmp_path):
    build(cpu_cfg(tmp_path / "e", "embedded"))
    assert shards_digest(tmp_path / "e") == BEFORE_THE_STORE["embedded"]


def test_shared_leads_build_matches_the_digest_from_before_the_store(shared_data, tmp_path):
    src = shared_data / "wikipedia" / "enwiki_vital_articles_lead_extracts-00.jsonl"
    build(cpu_cfg(tmp_path / "w", str(src), "workers=2"))
    assert shards_digest(tmp_path / "w") == BEFORE_THE_STORE["leads-00 workers=2"]


def test_resume_reuses_the_store_and_a_new_corpus_setting_rereads_it(tmp_path):
    out = tmp_path / "r"
    build(cpu_cfg(out, "embedded"))
    store_files = {p: p.stat().st_mtime_ns for p in (out / POOL_DIR).iterdir()}
    first = shards_digest(out)
    (out / "shard-00001.jsonl").unlink()
    stats = build(cpu_cfg(out, "embedded"))
    assert stats["timings"]["shards_built"] == 1 and shards_digest(out) == first
    assert {p: p.stat().st_mtime_ns for p in (out / POOL_DIR).iterdir()} == store_files  # not re-read
    stats = build(cpu_cfg(out, "embedded", "limit_pages=20", "overwrite=true"))
    assert stats["corpus"]["pages"] == 20
    meta = json.loads((out / POOL_DIR / "store.json").read_text())
    assert meta["meta"]["corpus"]["pages"] == 20  # read again: the old store held another pool


def test_tasks_from_a_store_pool_equal_tasks_from_a_list(tmp_path, tokenizer):
    passages = list(iter_passages("embedded", limit_pages=40))
    mem, disk = PassagePool(passages), PassagePool(write_store(passages, tmp_path / "s"), cache_rows=16)
    assert len(disk) == len(mem) and disk.has_entities()
    built = 0
    for pivot in random.Random(0).sample(range(len(mem)), 25):
        hits = random.Random(pivot).sample(range(len(mem)), CPU.n_related)
        a, b = (build_e2e_task(pivot, pool, hits, random.Random(derive_seed(CPU.seed, pivot)), tokenizer, CPU)
                for pool in (mem, disk))
        assert a == b
        assert disk[pivot] == mem[pivot]
        built += isinstance(a, MemTask)
    assert built >= 5  # tasks compared, not only drop reasons
    assert len(disk._rows._rows) <= max(16, 1 + CPU.n_related + CPU.n_random)  # bounded, not the pool


@pytest.mark.parametrize("pool", ["disk", "memory"])
def test_corpus_without_entities_is_refused_either_way(tmp_path, pool):
    src = tmp_path / "plain.jsonl"
    src.write_text("".join(json.dumps({"title": f"t{i}", "text": "word " * 30}) + "\n" for i in range(5)))
    with pytest.raises(Exception, match="found nothing to mask"):
        build(cpu_cfg(tmp_path / "o", str(src), "entities=links", f"pool={pool}"))
