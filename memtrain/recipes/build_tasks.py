"""``memtrain data build``: sources in, a task set out (shards + ``manifest.json``), for every task kind.

``kind=e2e`` (the self-supervised MemTrain tasks, DESIGN §2), top to bottom:

1. Read the whole passage pool from the corpus (the pool is also where random passages come from), by
   default streaming it into a passage store on disk (``out/pool``, :mod:`memtrain.corpus.store`) that
   the builder memory-maps and reads by row id, so no stage holds every passage as a Python object. A
   resumed build reuses the store when it was read from the same sources with the same settings.
2. Index it once with the retriever (BM25, or MiniLM embeddings cached on disk).
3. Order the pivots: a permutation of the pool drawn from ``e2e.seed``.
4. Build shards, in parallel processes if asked. Shard ``s`` of ``S`` owns the pivots at positions
   ``s, s+S, s+2S, ...`` of the permutation and consumes them until it holds its share of tasks (dropped
   pivots are counted, not retried). Each task's randomness comes from ``(seed, pivot)`` alone, so a shard
   is a pure function of (pool, config, seed, shard index): byte-identical for any ``workers``.
5. Write every shard atomically (temp file + rename): a killed build keeps its finished shards, and a
   re-run with the same configuration (checked through ``manifest.json``'s hash) skips them.
6. Summarise: ``stats.json`` (counts, histograms, drops by reason, timings), a ``README.md`` data card and
   the completed manifest (:mod:`memtrain.tasks.taskset`) that train and eval check their settings against.

``kind=longqa`` (downstream long-document QA, RULER-HQA style, :mod:`memtrain.tasks.longqa`): every
question of the chosen split at every length of ``longqa.n_docs``, in shards, with the same manifest.

``kind=search_corpus`` (passages for search QA, not tasks): :mod:`memtrain.recipes.build_search_corpus`.

``kind=searchqa`` (multi-objective questions for the searching agent, MEM1 setting):
:mod:`memtrain.recipes.build_searchqa`.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import multiprocessing as mp
import os
import queue
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from memtrain.config import option
from memtrain.corpus.store import PassageStore, read_store_meta, write_store
from memtrain.errors import MemtrainError
from memtrain.io import atomic_open, write_json
from memtrain.records import MemTask, Passage
from memtrain.search.corpus import SearchCorpusConfig
from memtrain.seeds import derive_seed
from memtrain.tasks.chunking import resolve_tokenizer, tokenizer_fingerprint
from memtrain.tasks.e2e import DropReason, E2EConfig, PassagePool, build_e2e_task
from memtrain.tasks.longqa import LongQAConfig
from memtrain.tasks.searchqa import SearchQAConfig
from memtrain.tasks.taskset import (
    MANIFEST,
    Manifest,
    SourceFile,
    config_hash,
    read_manifest,
    shard_path,
    source_file,
    write_manifest,
    write_shard,
    write_tasks,
)

log = logging.getLogger(__name__)

# Bump when a change alters the tasks produced for the same config (the config hash changes with it, so
# an old task set is never resumed as if it were new). History:
#   v1  first builder (E2E + IMR candidates, sharded JSONL/Parquet)
#   v2  typed config tree; manifest.json with tokenizer fingerprint, budgets and source hashes
#   v3  masking hides identifying parts of names (bare surnames, unqualified place names)
#   v4  masking hides derived forms too (plurals, demonyms, -ism/-ist: "Algerian" of "Algeria",
#       "cognitive sciences" of "cognitive science"; memtrain.tasks.masking.derived_forms), also in IMR
#       candidates; num_tasks beyond the pool is capped at the pool (shards no longer fill up with empty
#       ones); manifest records source losses (``losses``) and is ``complete`` only without them;
#       title_field/text_field settings for record files
BUILDER_VERSION = 4
SHARD_STATS_DIR = "shard_stats"
# More tasks than any corpus can give (a full English Wikipedia dump has ~40M passages of 200 words): a
# typo, refused before the corpus is read.
MAX_NUM_TASKS = 100_000_000
# A num_tasks this many times the pool is a mistake (wrong corpus or an extra zero), not a cap to apply.
FAR_BEYOND_POOL = 100


@dataclass
class BuildConfig:
    """Everything that determines a task set (``workers`` and ``progress`` only change how it is built)."""

    kind: Literal["e2e", "longqa", "search_corpus", "searchqa"] = option(
        "e2e: MemTrain's self-supervised tasks from a corpus; longqa: long-document QA (RULER-HQA style) "
        "from a QA data file; search_corpus: the local passage corpus for search QA "
        "(memtrain.recipes.build_search_corpus); searchqa: multi-objective search-QA tasks (MEM1 setting, "
        "memtrain.recipes.build_searchqa)", "e2e")
    out: str = option("output folder: shards, manifest.json, stats.json, README.md data card", "data/tasks")
    tokenizer: str = option("tokenizer that counts chunk tokens: the model you will train or evaluate "
                            "(name, HF id or path; smollm2 = the embedded default)", "smollm2")
    corpus: str = option("e2e source: embedded (gensim's enwiki excerpt) | dump .xml/.xml.bz2 | "
                         ".jsonl/.parquet | folder | hf:NAME[:SPLIT]", "embedded")
    entities: str = option("e2e entity extractor: auto (wiki links where present + rules), links, rules, "
                           "spacy (the paper's NER; pip install 'memtrain[spacy]'), or a combination such as "
                           "links+spacy", "auto")
    retriever: Literal["bm25", "tantivy", "dense"] = option(
        "e2e related passages: bm25 (exact BM25, index in memory), tantivy (BM25 from an on-disk index with "
        "sublinear top-k; close to bm25's hits, not the same: benchmarks/results/bm25_index.md), or dense "
        "(all-MiniLM-L6-v2 embeddings, cached on disk)", "bm25")
    retriever_top_terms: int | None = option(
        "e2e, bm25/tantivy: query with only the pivot's N highest-IDF distinct terms found in other passages "
        "(MoreLikeThis style; lower recall, faster with tantivy, not with bm25: "
        "benchmarks/results/bm25_index.md); None: the whole pivot", None)
    limit_pages: int | None = option("e2e: read at most this many corpus pages", None)
    title_field: str = option("e2e, .jsonl/.parquet/hf: sources: the field holding a record's title", "title")
    text_field: str = option("e2e, .jsonl/.parquet/hf: sources: the field holding a record's text", "text")
    strict: bool = option("e2e: stop with an error at the first loss of input (a truncated or corrupt dump, "
                          "a record that is not UTF-8 / not JSON / lacks its fields) instead of counting it "
                          "in manifest.json (`losses`; the task set is then not `complete`)", False)
    max_passage_words: int = option("e2e: split longer paragraphs, in words", 200)
    min_passage_words: int = option("e2e: drop shorter passages, in words", 20)
    num_tasks: int | None = option("e2e tasks to build (None: try every passage once as pivot); at most one "
                                   "per passage of the corpus, so more is capped at the pool's size", None)
    e2e: E2EConfig = option("how each E2E task is built (defaults: the paper's)", factory=E2EConfig)
    longqa: LongQAConfig = option("how long-QA tasks are built", factory=LongQAConfig)
    search_corpus: SearchCorpusConfig = option("what the search corpus holds", factory=SearchCorpusConfig)
    searchqa: SearchQAConfig = option("how search-QA tasks are built", factory=SearchQAConfig)
    shard_size: int = option("tasks per shard file", 1000)
    format: Literal["jsonl", "parquet"] = option("shard file format", "jsonl")
    pool: Literal["disk", "memory"] = option(
        "e2e: where the passage pool lives while tasks are built: disk (a memory-mapped Arrow store in "
        "out/pool, kept for resume) or memory (a list of passages, as before the store). Same tasks either "
        "way",
        "disk")
    workers: int = option("e2e: processes building shards in parallel (and reading a multistream dump whose "
                          "-multistream-index file lies beside it)", 1)
    overwrite: bool = option("replace a task set built with another configuration in `out`", False)
    progress: bool = option("show a progress bar", True)

    def validate(self) -> None:
        if self.num_tasks is not None and self.num_tasks < 1:
            raise MemtrainError(f"BuildConfig.num_tasks must be >= 1, got {self.num_tasks}")
        if self.num_tasks is not None and self.num_tasks > MAX_NUM_TASKS:
            raise MemtrainError(
                f"BuildConfig.num_tasks={self.num_tasks:,} is more tasks than any corpus can give (one per "
                f"passage; a full English Wikipedia has ~40M): at most {MAX_NUM_TASKS:,}, or num_tasks=null "
                "for one task per passage")
        for name in ("shard_size", "workers"):
            if getattr(self, name) < 1:
                raise MemtrainError(f"BuildConfig.{name} must be >= 1, got {getattr(self, name)}")
        top = self.retriever_top_terms
        if top is not None and (top < 1 or self.retriever == "dense"):
            raise MemtrainError(f"BuildConfig.retriever_top_terms={top}: needs >= 1 and retriever=bm25 or "
                                "tantivy (a dense query has no terms); or null for the whole pivot")

    def identity(self) -> dict[str, Any]:
        """What the tasks depend on (for ``kind`` only its own section); its hash guards resume."""
        d = asdict(self)
        for k in ("workers", "out", "overwrite", "progress", "strict", "pool", "search_corpus", "searchqa"):
            d.pop(k)
        if self.kind == "e2e":
            d.pop("longqa")
        else:
            for k in ("corpus", "entities", "retriever", "retriever_top_terms", "limit_pages",
                      "max_passage_words", "min_passage_words", "num_tasks", "e2e", "title_field",
                      "text_field"):
                d.pop(k)
        if d.get("retriever_top_terms") is None:  # added later: absent at its default, so old hashes hold
            d.pop("retriever_top_terms", None)  # (already gone for kinds other than e2e)
        d["builder_version"] = BUILDER_VERSION
        return d


# ---------------------------------------------------------------------------------------------- the recipe


def build(cfg: BuildConfig, after_shard: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Build (or resume) the task set ``cfg.out``; returns the statistics also written to ``stats.json``.

    ``after_shard(s)`` runs after each E2E shard is written (tests use it to simulate a kill mid-build).
    """
    cfg.validate()
    if cfg.kind == "search_corpus":  # passages, not tasks: its own recipe and manifest
        from memtrain.recipes.build_search_corpus import build as build_search_corpus

        return build_search_corpus(cfg)
    if cfg.kind == "searchqa":  # questions, no chunks: its own recipe (memtrain.recipes.build_searchqa)
        from memtrain.recipes.build_searchqa import build as build_searchqa

        return build_searchqa(cfg)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(cfg.out)
    if cfg.kind == "e2e":  # a missing corpus (the embedded one: gensim) first, before any model work
        from memtrain.corpus.sources import resolve_source

        resolve_source(cfg.corpus)
    check_out(out)
    tokenizer = resolve_tokenizer(cfg.tokenizer)  # fail on a bad tokenizer before reading a big input
    sources = source_files(cfg)
    make_out(out)
    manifest = start_manifest(cfg, tokenizer, sources)
    write_json(out / "config.json", asdict(cfg))
    stats = build_e2e(cfg, tokenizer, after_shard) if cfg.kind == "e2e" else build_longqa(cfg, tokenizer)
    losses = stats.get("corpus", {}).get("losses", {})
    manifest.finished, manifest.losses, manifest.n_tasks = True, losses, stats["documents"]
    manifest.complete = not losses  # only a source read to its end without loss gives a complete set
    manifest.longest_task_chunks = max((int(k) for k in stats["chunks_per_doc"]), default=0)
    write_manifest(out, manifest)
    drops = f", {stats['pivots_tried']} pivots tried, drops {stats['drops'] or 'none'}" if "drops" in stats \
        else ""
    wanted = stats.get("requested_tasks")
    capped = f" (of num_tasks={wanted}: one per passage of the pool)" \
        if wanted and wanted > stats["pool_passages"] else ""
    print(f"built {stats['documents']} {cfg.kind} tasks{capped} in {stats['shards']} shard(s) -> {out}"
          f"{drops} ({stats['timings']['total_s']} s){loss_note(losses)}")
    return stats


def loss_note(losses: dict[str, int]) -> str:
    """What the CLI's last line and the data card say about input lost to damage (empty when none)."""
    if not losses:
        return ""
    what = ", ".join(f"{k} {v}" for k, v in losses.items())
    return (f"; INPUT LOST: {what} (the source was not read whole; manifest.json: complete=false; "
            "strict=true makes this an error)")


def check_out(out: Path) -> None:
    """``out`` must be a folder (or not exist yet): said before any corpus or tokenizer work."""
    if out.exists() and not out.is_dir():
        raise MemtrainError(f"out={out} is a file, not a folder; a task set is a folder of shards and "
                            "manifest.json: choose out=DIR")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise MemtrainError(f"out={out}: {parent} is a file, not a folder; choose out=DIR")


def make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MemtrainError(f"out={out}: cannot create the folder ({e.strerror or e}); choose another "
                            "out=DIR") from None


def source_files(cfg: BuildConfig) -> list[SourceFile]:
    """The input files with sizes and hashes (none for a Hugging Face dataset)."""
    if cfg.kind == "longqa":
        path = cfg.longqa.data_path()
        if not path.is_file():
            raise MemtrainError(f"{cfg.longqa.source} data file not found: {path.resolve()}; set "
                                "longqa.path=FILE (the default is resolved from the current directory)")
        return [source_file(path)]
    from memtrain.corpus.sources import _files, resolve_source

    src = resolve_source(cfg.corpus)
    if src.startswith("hf:"):
        return []
    p = Path(src)
    return [source_file(f) for f in (_files(p) if p.is_dir() else [p])]


def start_manifest(cfg: BuildConfig, tokenizer: Any, sources: list[SourceFile]) -> Manifest:
    """The manifest of this build (written incomplete now), after checking ``out`` holds no other build.

    A folder with the same config hash is resumed; another hash needs ``overwrite=true``, which deletes
    the old shards first. Temp files of a build killed mid-write are removed.
    """
    out = Path(cfg.out)
    identity = cfg.identity()
    h = config_hash({**identity, "sources": [asdict(s) for s in sources]})
    old_shards = [*out.glob("shard-*.*"), *(out / SHARD_STATS_DIR).glob("shard-*.json")]
    if (out / MANIFEST).exists() or old_shards:
        try:
            old_hash = read_manifest(out).config_hash
        except MemtrainError:
            old_hash = None
        if old_hash != h:
            if not cfg.overwrite:
                what = f"a build with another configuration (hash {old_hash} != {h})" if old_hash else \
                    "shard files but no readable manifest.json"
                raise MemtrainError(f"{out} holds {what}; choose another out=DIR, or set overwrite=true "
                                    "to replace it")
            for f in old_shards:
                f.unlink()
    for f in out.glob(".shard-*.tmp"):
        f.unlink()
    if cfg.kind == "e2e":
        chunk_tokens, max_chunks, seed, lengths = cfg.e2e.chunk_tokens, cfg.e2e.max_chunks, cfg.e2e.seed, []
    else:
        lq = cfg.longqa
        chunk_tokens, max_chunks, seed, lengths = lq.chunk_tokens, None, lq.seed, list(lq.n_docs)
    m = Manifest(kind=cfg.kind, tokenizer=cfg.tokenizer,
                 tokenizer_fingerprint=tokenizer_fingerprint(tokenizer), chunk_tokens=chunk_tokens,
                 max_chunks=max_chunks, seed=seed, config_hash=h, config=identity,
                 builder_version=BUILDER_VERSION, sources=sources, lengths=lengths,
                 split=cfg.longqa.split if cfg.kind == "longqa" else "all")
    write_manifest(out, m)
    return m


def build_longqa(cfg: BuildConfig, tokenizer: Any) -> dict[str, Any]:
    """Long-QA tasks of every length, written in shards (fast enough to rebuild whole on resume)."""
    from memtrain.tasks.longqa import build_from_config

    t0 = time.perf_counter()
    tasks = build_from_config(cfg.longqa, tokenizer, progress=cfg.progress)
    if not tasks:
        raise MemtrainError(f"no long-QA task could be built from {cfg.longqa.data_path()} "
                            f"(split={cfg.longqa.split}); check the file and longqa.num_questions")
    out = Path(cfg.out)
    n_shards = write_tasks(out, tasks, cfg.shard_size, cfg.format)
    tokens = [t.meta["n_tokens"] for t in tasks]
    stats = {
        "documents": len(tasks),
        "shards": n_shards,
        "questions": len({t.meta["question_id"] for t in tasks}),
        "lengths": {str(n): sum(1 for t in tasks if t.meta["n_docs"] == n) for n in cfg.longqa.n_docs},
        "tokens_per_doc": {str(n): round(sum(t.meta["n_tokens"] for t in tasks if t.meta["n_docs"] == n)
                                         / max(1, sum(1 for t in tasks if t.meta["n_docs"] == n)), 1)
                           for n in cfg.longqa.n_docs},
        "chunks_per_doc": {str(k): v for k, v in sorted(Counter(len(t.chunks) for t in tasks).items())},
        "max_tokens": max(tokens),
        "timings": {"total_s": round(time.perf_counter() - t0, 3)},
    }
    write_json(out / "stats.json", stats)
    with atomic_open(out / "README.md") as f:
        f.write(longqa_card(cfg, stats))
    return stats


POOL_DIR = "pool"  # the passage store inside a task-set folder (pool=disk)


def read_pool(cfg: BuildConfig) -> tuple[list[Passage] | PassageStore, dict[str, Any]]:
    """All passages of the corpus (the pool) and the reader's statistics.

    ``pool=memory``: a list. ``pool=disk``: a :class:`PassageStore` in ``out/pool``, streamed from the
    reader, or the one already there when it was read from the same sources with the same settings (a
    resumed build; a store with losses is re-read under ``strict``, so the error is raised).
    """
    from memtrain.corpus import CorpusStats, iter_passages

    stats = CorpusStats(strict=cfg.strict)
    stream = iter_passages(cfg.corpus, entities=cfg.entities, max_passage_words=cfg.max_passage_words,
                           min_passage_words=cfg.min_passage_words, limit_pages=cfg.limit_pages,
                           stats=stats, title_field=cfg.title_field, text_field=cfg.text_field,
                           workers=cfg.workers)
    passages: list[Passage] | PassageStore
    if cfg.pool == "memory":
        passages = list(stream)
        cstats = {**stats.as_dict(), "losses": stats.losses()}
    else:
        folder, key = Path(cfg.out) / POOL_DIR, pool_key(cfg)
        old = read_store_meta(folder)
        if old and old["meta"].get("key") == key and not (cfg.strict and old["meta"]["corpus"]["losses"]):
            stream.close()
            passages, cstats = PassageStore(folder), old["meta"]["corpus"]
        else:
            passages = write_store(stream, folder, meta=lambda: {
                "key": key, "corpus": {**stats.as_dict(), "losses": stats.losses()}})
            cstats = passages.meta["corpus"]
    if cstats["losses"]:
        log.warning("corpus %r: input lost to damage (%s); building from what was read; the task set will "
                    "not be marked complete (strict=true makes this an error)", cfg.corpus, cstats["losses"])
    if not passages:
        raise MemtrainError(f"corpus {cfg.corpus!r} yielded no passages (read: {cstats}); check the path and "
                            "format, or lower min_passage_words")
    return passages, cstats


def pool_key(cfg: BuildConfig) -> str:
    """What the passages depend on: a store with another key is read again, not reused."""
    read = {k: getattr(cfg, k) for k in ("corpus", "entities", "limit_pages", "max_passage_words",
                                         "min_passage_words", "title_field", "text_field")}
    # the sources as hashed into this build's manifest (written before the pool is read): not hashed twice
    sources = read_manifest(cfg.out).sources if (Path(cfg.out) / MANIFEST).is_file() else source_files(cfg)
    return config_hash({**read, "sources": [asdict(s) for s in sources], "builder_version": BUILDER_VERSION})


def build_e2e(cfg: BuildConfig, tokenizer: Any, after_shard: Callable[[int], None] | None = None
              ) -> dict[str, Any]:
    """Steps 1-6 of the module docstring."""
    from memtrain.progress import progress_bar
    from memtrain.tasks.retrieval import make_retriever

    out = Path(cfg.out)
    t_start = time.perf_counter()
    with _collector_paused():
        passages, corpus_stats = read_pool(cfg)
        t_read = time.perf_counter()
        pool = PassagePool(passages)
        if not pool.has_entities():
            raise MemtrainError(
                f"no task could be built: {len(pool)} pivots dropped (no_entity: {len(pool)}); "
                f"corpus {cfg.corpus!r}: the {cfg.entities!r} extractor found nothing to mask; try other "
                "entities="
            )
        kw: dict[str, Any] = {"top_terms": cfg.retriever_top_terms} if cfg.retriever_top_terms else {}
        if cfg.retriever == "tantivy" and cfg.pool == "disk":
            kw["folder"] = Path(cfg.out) / POOL_DIR / "tantivy"  # beside the store it indexes
        retriever = make_retriever(cfg.retriever, progress=cfg.progress, **kw)
        texts = passages.text_view() if isinstance(passages, PassageStore) else \
            [f"{p.title} {p.text}" for p in passages]
        retriever.index(texts)
        del texts
    t_index = time.perf_counter()

    n_total = min(cfg.num_tasks or len(pool), len(pool))  # each passage is a pivot at most once
    if cfg.num_tasks and cfg.num_tasks > FAR_BEYOND_POOL * len(pool):
        raise MemtrainError(
            f"num_tasks={cfg.num_tasks:,} is far beyond what corpus {cfg.corpus!r} can give: each of its "
            f"{len(pool):,} passages is a pivot at most once, so at most {len(pool):,} tasks; lower "
            "num_tasks (or num_tasks=null for one per passage), or use a larger corpus")
    if cfg.num_tasks and cfg.num_tasks > len(pool):
        log.warning("num_tasks=%d exceeds the %d passages; each is a pivot once, so at most %d tasks",
                    cfg.num_tasks, len(pool), n_total)
    n_shards = math.ceil(n_total / cfg.shard_size)
    targets = [min(cfg.shard_size, n_total - s * cfg.shard_size) for s in range(n_shards)]
    perm = list(range(len(pool)))
    random.Random(derive_seed("pivots", cfg.e2e.seed)).shuffle(perm)

    todo = [s for s in range(n_shards) if not shard_path(out, s, cfg.format).exists()]
    done_stats = [_read_shard_stats(out, s) for s in range(n_shards) if s not in todo]

    state = _State(pool=pool, retriever=retriever, perm=perm, cfg=cfg, targets=targets)
    bar = progress_bar(total=n_total, initial=sum(d["tasks"] for d in done_stats), unit="task",
                       desc="data build", disable=not cfg.progress)
    new_stats = []
    gc.freeze()  # the pool and index live until the end: the collector leaves them alone (see below)
    try:
        if cfg.workers == 1 or len(todo) <= 1:
            state.tokenizer, state.progress = tokenizer, bar.update
            _init_worker(state)
            for s in todo:
                new_stats.append(build_shard(s))
                if after_shard:
                    after_shard(s)
        else:
            for res in _run_parallel(state, tokenizer, todo, min(cfg.workers, len(todo)), bar):
                new_stats.append(res)
                if after_shard:
                    after_shard(res["shard"])
    finally:
        gc.unfreeze()
        bar.close()
    t_build = time.perf_counter()

    all_stats = sorted(done_stats + new_stats, key=lambda d: d["shard"])
    timings = {
        "read_corpus_s": round(t_read - t_start, 3),
        "index_s": round(t_index - t_read, 3),
        "build_s": round(t_build - t_index, 3),
        "total_s": round(t_build - t_start, 3),
        "shards_built": len(new_stats),
        "shards_resumed": len(done_stats),
        "workers": cfg.workers,
    }
    stats = summarise(all_stats, corpus_stats, len(pool), cfg, timings)
    if cfg.num_tasks:
        stats["requested_tasks"] = cfg.num_tasks
    write_json(out / "stats.json", stats)
    with atomic_open(out / "README.md") as f:
        f.write(data_card(cfg, stats))
    if stats["documents"] == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in stats["drops"].items())
        raise MemtrainError(
            f"no task could be built: {stats['pivots_tried']} pivots dropped ({reasons}); relax the entity "
            "filters (e2e.entity_labels, e2e.min_mentions, e2e.min_answer_chars) or use a corpus with entity "
            "annotations"
        )
    if stats["documents"] < n_total:
        log.warning("built %d of %d tasks (drops: %s)", stats["documents"], n_total, stats["drops"])
    return stats


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while the pool and index are built, then on again.

    Reading allocates millions of small objects that live until the build ends (passages, entity spans,
    postings), and every pass of the collector walks all of them, so reading, and then the first tasks
    built, slowed down as the pool grew (benchmarks/results/data_scale.md). They hold no reference
    cycles, so nothing leaks while it is off; once they are built, ``gc.freeze()`` moves them out of the
    collector's reach for the build, which also keeps forked workers from copying the pages they share
    with the parent (a collection writes to every object it walks).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# ---------------------------------------------------------------------------------------------- shards


@dataclass
class _State:
    """What a worker needs; inherited by fork, pickled once per worker by spawn."""

    pool: PassagePool
    retriever: Any
    perm: list[int]
    cfg: BuildConfig
    targets: list[int]
    tokenizer: Any = None
    progress: Any = None  # a multiprocessing queue, or a callable in-process


_STATE: _State | None = None


def _init_worker(state: _State) -> None:
    global _STATE
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if state.tokenizer is None:
        state.tokenizer = resolve_tokenizer(state.cfg.tokenizer)
    _STATE = state


def _tick(n: int = 1) -> None:
    prog = _STATE.progress if _STATE else None
    if prog is None:
        return
    if callable(prog):
        prog(n)
    else:
        prog.put(n)


def build_shard(s: int) -> dict[str, Any]:
    """Build and write shard ``s``; returns its statistics (also written beside the shards)."""
    st = _STATE
    assert st is not None, "worker state not initialised"
    cfg, tcfg = st.cfg, st.cfg.e2e
    n_shards = len(st.targets)
    target = st.targets[s]
    pivots = st.perm[s::n_shards]
    tasks: list[MemTask] = []
    drops: Counter[str] = Counter()
    tried = 0
    t0 = time.perf_counter()
    while len(tasks) < target and tried < len(pivots):
        # retrieve for a batch sized to the tasks still missing (+30% for drops): one BM25 call per batch
        want = max(8, math.ceil((target - len(tasks)) * 1.3))
        batch = pivots[tried : tried + want]
        tried += len(batch)
        hits = st.retriever.topk(batch, tcfg.n_related) if tcfg.n_related else [[] for _ in batch]
        for pivot, h in zip(batch, hits, strict=True):
            if len(tasks) >= target:
                tried -= 1  # unused pivot: not counted as tried
                continue
            rng = random.Random(derive_seed(tcfg.seed, pivot))
            out = build_e2e_task(pivot, st.pool, h, rng, st.tokenizer, tcfg)
            if isinstance(out, DropReason):
                drops[out.reason] += 1
            else:
                tasks.append(out)
                _tick()
    stats = {
        "shard": s,
        "tasks": len(tasks),
        "pivots_tried": tried,
        "drops": dict(sorted(drops.items())),
        "n_tokens": [t.meta["n_tokens"] for t in tasks],
        "n_chunks": [len(t.chunks) for t in tasks],
        "answer_labels": dict(sorted(Counter(t.meta["answer_label"] for t in tasks).items())),
        "imr_per_chunk": [len(c) for t in tasks for c in t.imr],
        "build_s": round(time.perf_counter() - t0, 3),
    }
    out_dir = Path(cfg.out)
    write_json(out_dir / SHARD_STATS_DIR / f"shard-{s:05d}.json", stats)  # before the shard: shard => stats
    write_shard(shard_path(out_dir, s, cfg.format), [t.to_dict() for t in tasks], cfg.format)
    return stats


def _run_parallel(state: _State, tokenizer: Any, todo: list[int], workers: int, bar: Any
                  ) -> Iterator[dict[str, Any]]:
    fork = "fork" in mp.get_all_start_methods()
    ctx = mp.get_context("fork" if fork else "spawn")
    q = ctx.Queue()
    state.progress = q
    if fork:  # forked workers inherit the loaded tokenizer; spawned ones load their own
        state.tokenizer = tokenizer
    try:
        with ctx.Pool(workers, initializer=_init_worker, initargs=(state,)) as pool:
            pending = pool.imap_unordered(build_shard, todo)
            done = 0
            while done < len(todo):
                try:
                    res = pending.next(timeout=0.2)
                except mp.TimeoutError:
                    res = None
                while True:
                    try:
                        bar.update(q.get_nowait())
                    except queue.Empty:
                        break
                if res is not None:
                    done += 1
                    yield res
    finally:
        state.tokenizer = None


def _read_shard_stats(out: Path, s: int) -> dict[str, Any]:
    p = out / SHARD_STATS_DIR / f"shard-{s:05d}.json"
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise MemtrainError(f"{p} is missing or corrupt; re-run with --overwrite to rebuild {out}") from None


def _histogram(values: list[int], hi: int, bins: int = 10) -> list[dict[str, int]]:
    """Equal-width bins over ``0..hi`` (the last one open-ended), as a list so JSON keeps the order."""
    width = max(1, math.ceil(hi / bins))
    counts: Counter[int] = Counter(min(v // width, bins - 1) for v in values)
    return [{"from": b * width, "to": (b + 1) * width - 1 if b < bins - 1 else None, "count": counts[b]}
            for b in range(bins)]


def summarise(
    shard_stats: list[dict[str, Any]], corpus_stats: dict[str, Any], pool_size: int, cfg: BuildConfig,
    timings: dict[str, Any],
) -> dict[str, Any]:
    tokens = [v for d in shard_stats for v in d["n_tokens"]]
    chunks = [v for d in shard_stats for v in d["n_chunks"]]
    imr = [v for d in shard_stats for v in d["imr_per_chunk"]]
    drops: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    for d in shard_stats:
        drops.update(d["drops"])
        labels.update(d["answer_labels"])
    n = len(tokens)
    return {
        "documents": n,
        "shards": len(shard_stats),
        "pivots_tried": sum(d["pivots_tried"] for d in shard_stats),
        "drops": dict(sorted(drops.items())),
        "pool_passages": pool_size,
        "corpus": corpus_stats,
        "tokens_per_doc": {
            "min": min(tokens, default=0), "mean": round(sum(tokens) / n, 1) if n else 0,
            "max": max(tokens, default=0), "total": sum(tokens),
            "histogram": _histogram(tokens, cfg.e2e.chunk_tokens * cfg.e2e.max_chunks),
        },
        "chunks_per_doc": {str(k): v for k, v in sorted(Counter(chunks).items())},
        "answer_labels": dict(labels.most_common()),
        "imr_candidates_per_chunk": {
            "mean": round(sum(imr) / len(imr), 2) if imr else 0,
            "chunks_without": sum(1 for v in imr if v == 0),
            "counts": {str(k): v for k, v in sorted(Counter(imr).items())},
        },
        "timings": timings,
    }


def data_card(cfg: BuildConfig, stats: dict[str, Any]) -> str:
    t = stats["tokens_per_doc"]
    losses = stats["corpus"].get("losses", {})
    lost = ", ".join(f"{k}: {v}" for k, v in losses.items())
    read = (f"**NOT read whole: input lost to damage** ({lost}); the tasks come from what could be read, "
            "and manifest.json says `complete: false`") if losses else "no input lost to damage"
    return f"""# memtrain E2E tasks

Self-supervised masked-entity reconstruction tasks (MemTrain Task E2E, with IMR candidates), built by
`memtrain data build` (builder v{BUILDER_VERSION}, config hash `{config_hash(cfg.identity())}`).

- **Source corpus:** `{cfg.corpus}` (entities: `{cfg.entities}`, pages limit: {cfg.limit_pages}); \
{stats['pool_passages']} passages in the pool; {read}.
- **Documents:** {stats['documents']} in {stats['shards']} `{cfg.format}` shard(s); \
{stats['pivots_tried']} pivots tried, drops: {stats['drops'] or 'none'}.
- **Tokens per document** ({cfg.tokenizer} tokenizer): min {t['min']}, mean {t['mean']}, max {t['max']}.
- **Answer entity labels:** {stats['answer_labels']}.
- **IMR candidates per chunk:** mean {stats['imr_candidates_per_chunk']['mean']}.

## Configuration

```json
{json.dumps(cfg.identity(), indent=2, sort_keys=True)}
```

## Fields (one JSON object / Parquet row per task)

| field | meaning |
|---|---|
| `id` | `e2e-<seed>-<pivot index>` |
| `kind` | `e2e` |
| `problem` | the fixed question about the `[MASK]` placeholder |
| `chunks` | the masked document, split into chunks of at most `chunk_tokens` tokens |
| `answers` | canonical answer first, then every other surface form of the entity (all accepted) |
| `imr` | per chunk, entities only that chunk mentions: `{{answer, forms}}` to hide as `[TARGET]` |
| `meta` | pivot pid/title, answer key/label, tokens per chunk, window position, passage pids |
| `data_source`, `prompt`, `ability`, `reward_model`, `extra_info` | veRL RL-dataset fields |

Load with `memtrain.tasks.taskset.load_tasks(folder)` or `datasets.load_dataset("json", data_files=...)`.
See `stats.json` for histograms, drop reasons and timings.

## Licence

Text derived from Wikipedia is licensed CC BY-SA (3.0/4.0); these tasks are a derivative work and must be
shared under the same licence with attribution to Wikipedia's contributors.
"""


def longqa_card(cfg: BuildConfig, stats: dict[str, Any]) -> str:
    lq = cfg.longqa
    return f"""# memtrain long-document QA tasks

{lq.source} questions (split `{lq.split}`, eval fraction {lq.eval_fraction}, split seed {lq.split_seed}) with
their gold paragraphs hidden among distractors, RULER-HQA style, built by `memtrain data build kind=longqa`
(builder v{BUILDER_VERSION}, config hash `{config_hash(cfg.identity())}`).

- **Source:** `{lq.data_path()}`; {stats['questions']} questions × lengths {list(lq.n_docs)} (documents per
  context) = {stats['documents']} tasks.
- **Mean tokens per context** ({cfg.tokenizer} tokenizer), by length: {stats['tokens_per_doc']}.
- **Chunks** of ≤ {lq.chunk_tokens} tokens; chunks per task: {stats['chunks_per_doc']}.

Fields as in the E2E data card (`kind` is `qa`, `imr` is empty); `meta` holds the question id, `n_docs`,
`n_tokens`, gold titles and positions and every document key (for `scripts/check_overlap.py`).
"""
