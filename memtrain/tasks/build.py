"""``memtrain data build``: a corpus in, sharded E2E tasks out (the recipe of DESIGN §2, top to bottom).

1. Read the whole passage pool from the corpus (the pool is also where random passages come from).
2. Index it once with BM25.
3. Order the pivots: a permutation of the pool drawn from ``seed``.
4. Build shards, in parallel processes if asked. Shard ``s`` of ``S`` owns the pivots at positions
   ``s, s+S, s+2S, ...`` of the permutation and consumes them until it holds its share of tasks (dropped
   pivots are counted, not retried). Each task's randomness comes from ``(seed, pivot)`` alone, so a shard
   is a pure function of (pool, config, seed, shard index): byte-identical for any ``--workers``.
5. Write every shard atomically (temp file + rename): a killed build keeps its finished shards, and a
   re-run with the same configuration (checked through ``manifest.json``'s hash) skips them.
6. Summarise: ``stats.json`` (counts, histograms, drops by reason, timings) and a ``README.md`` data card.
"""

from __future__ import annotations

import hashlib
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from memtrain.errors import MemtrainError
from memtrain.io import atomic_open, read_jsonl, write_json, write_jsonl
from memtrain.models import EMBEDDED_ALIASES, embedded_model_cache, embedded_model_dir
from memtrain.records import MemTask, Passage
from memtrain.tasks.e2e import DropReason, E2EConfig, PassagePool, build_e2e_task

log = logging.getLogger(__name__)

BUILDER_VERSION = 1  # bump when a change alters the tasks produced for the same config
SHARD_STATS_DIR = "shard_stats"


@dataclass
class BuildConfig:
    """Everything that determines the shards (``workers`` only changes speed)."""

    corpus: str = field(
        metadata={"help": "embedded | dump .xml/.xml.bz2 | .jsonl/.parquet | folder | hf:NAME"}
    )
    out: str = field(metadata={"help": "output folder for shards, manifest, stats and data card"})
    task: E2EConfig = field(default_factory=E2EConfig, metadata={"help": "how each E2E task is built"})
    tokenizer: str = field(default="smollm2", metadata={"help": "tokenizer used for token-bounded chunks"})
    num_tasks: int | None = field(
        default=None, metadata={"help": "tasks to build (None: try every passage once as pivot)"}
    )
    shard_size: int = field(default=1000, metadata={"help": "tasks per shard file"})
    format: Literal["jsonl", "parquet"] = field(default="jsonl", metadata={"help": "shard file format"})
    workers: int = field(default=1, metadata={"help": "processes building shards in parallel"})
    entities: str = field(default="auto", metadata={"help": "entity extractor: auto | links | rules | spacy"})
    limit_pages: int | None = field(default=None, metadata={"help": "read at most this many corpus pages"})
    max_passage_words: int = field(default=200, metadata={"help": "passage size bound, in words"})
    min_passage_words: int = field(default=20, metadata={"help": "shorter passages are dropped"})
    wikitext_parser: str = field(
        default="fast",
        metadata={"help": "wikitext renderer for dumps: fast (scanner) | mwparserfromhell (full parse)"},
    )

    def validate(self) -> None:
        self.task.validate()
        if self.num_tasks is not None and self.num_tasks < 1:
            raise MemtrainError(f"--num-tasks must be >= 1, got {self.num_tasks}")
        if self.shard_size < 1:
            raise MemtrainError(f"--shard-size must be >= 1, got {self.shard_size}")
        if self.workers < 1:
            raise MemtrainError(f"--workers must be >= 1, got {self.workers}")
        if self.format not in ("jsonl", "parquet"):
            raise MemtrainError(f"--format must be jsonl or parquet, got {self.format!r}")

    def identity(self) -> dict[str, Any]:
        """What the shards depend on; its hash guards resume against mixing two configurations."""
        d = asdict(self)
        d.pop("workers")
        d.pop("out")
        src = Path(self.corpus).expanduser()
        d["corpus_bytes"] = src.stat().st_size if src.is_file() else None
        d["builder_version"] = BUILDER_VERSION
        return d


def config_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def derive_seed(*parts: Any) -> int:
    """A 64-bit seed from any values, stable across processes and Python versions (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def shard_path(out: Path, s: int, fmt: str) -> Path:
    return out / f"shard-{s:05d}.{fmt}"


# ---------------------------------------------------------------------------------------------- inputs


class FastTokenizer:
    """The slice of the HF tokenizer interface that chunking uses, called on the Rust tokenizer directly.

    Loading it takes ~0.1 s instead of ~2.5 s for ``AutoTokenizer`` (which imports transformers and
    torch), which matters when every build worker loads its own. Ids and offsets are the Rust tokenizer's,
    i.e. exactly what the HF fast tokenizer returns with ``add_special_tokens=False``.
    """

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        self.path = str(path)
        self._tok = Tokenizer.from_file(self.path)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def __call__(
        self, text: str | list[str], add_special_tokens: bool = False, return_offsets_mapping: bool = False
    ) -> dict[str, Any]:
        if isinstance(text, list):
            encs = self._tok.encode_batch(text, add_special_tokens=add_special_tokens)
            out: dict[str, Any] = {"input_ids": [e.ids for e in encs]}
            if return_offsets_mapping:
                out["offset_mapping"] = [e.offsets for e in encs]
            return out
        enc = self._tok.encode(text, add_special_tokens=add_special_tokens)
        out = {"input_ids": enc.ids}
        if return_offsets_mapping:
            out["offset_mapping"] = enc.offsets
        return out


def resolve_tokenizer(name: str) -> Any:
    """The chunking tokenizer; fails clearly (and fast) on a local path that does not exist.

    A folder with a ``tokenizer.json`` (including the embedded default's cache) is read with
    :class:`FastTokenizer`; anything else goes through :func:`memtrain.models.load_tokenizer`.
    """
    path = Path(name).expanduser()
    if name.lower() in EMBEDDED_ALIASES:
        path = embedded_model_cache()
        if not (path / "tokenizer.json").is_file():  # first use: convert the embedded model into the cache
            path = embedded_model_dir()
    elif not path.exists():
        looks_like_path = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name
        if looks_like_path:
            raise MemtrainError(
                f"tokenizer path {name!r} does not exist; pass a folder with tokenizer files, a Hugging Face "
                "model id, or 'smollm2' (the embedded default)"
            )
    tok_json = path / "tokenizer.json" if path.is_dir() else None
    if tok_json is not None and tok_json.is_file():
        try:
            return FastTokenizer(tok_json)
        except Exception as e:  # a corrupt file is a user-input problem; report it without a traceback
            raise MemtrainError(f"cannot read tokenizer {tok_json}: {e}") from None
    from memtrain.models import load_tokenizer

    return load_tokenizer(name)


def read_pool(cfg: BuildConfig) -> tuple[list[Passage], dict[str, Any]]:
    """All passages of the corpus (the pool) and the reader's statistics."""
    from memtrain.corpus import CorpusStats, iter_passages

    stats = CorpusStats()
    passages = list(
        iter_passages(
            cfg.corpus,
            entities=cfg.entities,
            max_passage_words=cfg.max_passage_words,
            min_passage_words=cfg.min_passage_words,
            limit_pages=cfg.limit_pages,
            stats=stats,
            parser=cfg.wikitext_parser,
        )
    )
    cstats = stats.as_dict()
    if not passages:
        raise MemtrainError(
            f"corpus {cfg.corpus!r} yielded no passages (read: {cstats}); check the path and format, or "
            "lower --min-passage-words"
        )
    return passages, cstats


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
    cfg, tcfg = st.cfg, st.cfg.task
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


def write_shard(path: Path, rows: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "jsonl":
        write_jsonl(path, rows)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_open(path, "wb") as f:
        pq.write_table(pa.Table.from_pylist(rows), f)


def load_tasks(path: str | Path) -> list[MemTask]:
    """Tasks from a build folder (all ``shard-*.jsonl``/``.parquet`` in order) or from one shard file."""
    p = Path(path)
    if p.is_dir():
        files = sorted([*p.glob("shard-*.jsonl"), *p.glob("shard-*.parquet")])
        if not files:
            raise MemtrainError(
                f"no shard-*.jsonl or shard-*.parquet files in {p}; run `memtrain data build`"
            )
    elif p.is_file():
        files = [p]
    else:
        raise MemtrainError(f"task file or folder not found: {p}")
    tasks = []
    for f in files:
        if f.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows: Any = pq.read_table(f).to_pylist()
        elif f.suffix == ".jsonl":
            rows = read_jsonl(f)
        else:
            raise MemtrainError(f"{f}: unknown task file type (expected .jsonl or .parquet)")
        try:
            tasks.extend(MemTask.from_dict(r) for r in rows)
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise MemtrainError(f"{f}: not a memtrain task file ({e})") from None
    return tasks


# ---------------------------------------------------------------------------------------------- driver


def _check_manifest(out: Path, identity: dict[str, Any], overwrite: bool) -> None:
    mpath = out / "manifest.json"
    h = config_hash(identity)
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = {}
        if old.get("config_hash") != h:
            if not overwrite:
                raise MemtrainError(
                    f"{out} holds a build with a different configuration (hash {old.get('config_hash')} != "
                    f"{h}); choose a new --out, or pass --overwrite to replace it"
                )
            for f in [*out.glob("shard-*.*"), *(out / SHARD_STATS_DIR).glob("shard-*.json")]:
                f.unlink()
    elif any(out.glob("shard-*.*")):
        if not overwrite:
            raise MemtrainError(
                f"{out} has shard files but no manifest.json; choose a new --out or --overwrite"
            )
        for f in out.glob("shard-*.*"):
            f.unlink()
    for f in out.glob(".shard-*.tmp"):  # temp files of a build that was killed mid-write
        f.unlink()
    write_json(mpath, {"config_hash": h, "config": identity})


def _run_parallel(state: _State, todo: list[int], workers: int, bar: Any) -> Iterator[dict[str, Any]]:
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    q = ctx.Queue()
    state.progress = q
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


def build_dataset(
    cfg: BuildConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
    after_shard: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run the whole build; returns the statistics also written to ``OUT/stats.json``.

    ``after_shard(s)`` is called in the parent after each shard is written (tests use it to simulate a
    kill mid-build).
    """
    from memtrain.progress import progress_bar

    cfg.validate()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(cfg.out)
    t_start = time.perf_counter()
    tokenizer = resolve_tokenizer(cfg.tokenizer)  # fail on a bad tokenizer before reading a big corpus
    out.mkdir(parents=True, exist_ok=True)
    identity = cfg.identity()
    _check_manifest(out, identity, overwrite)

    passages, corpus_stats = read_pool(cfg)
    t_read = time.perf_counter()
    if not any(p.entities for p in passages):
        raise MemtrainError(
            f"no task could be built: {len(passages)} pivots dropped (no_entity: {len(passages)}); corpus "
            f"{cfg.corpus!r}: the {cfg.entities!r} entity extractor found nothing to mask; try another "
            "--entities"
        )
    pool = PassagePool(passages)
    from memtrain.tasks.retrieval import BM25Retriever

    retriever = BM25Retriever()
    retriever.index([f"{p.title} {p.text}" for p in passages])
    t_index = time.perf_counter()

    n_total = cfg.num_tasks or len(pool)
    if cfg.num_tasks and cfg.num_tasks > len(pool):
        log.warning("--num-tasks %d exceeds the %d passages; each pivot is used once", n_total, len(pool))
    n_shards = math.ceil(n_total / cfg.shard_size)
    targets = [min(cfg.shard_size, n_total - s * cfg.shard_size) for s in range(n_shards)]
    perm = list(range(len(pool)))
    random.Random(derive_seed("pivots", cfg.task.seed)).shuffle(perm)

    todo = [s for s in range(n_shards) if not shard_path(out, s, cfg.format).exists()]
    done_stats = [_read_shard_stats(out, s) for s in range(n_shards) if s not in todo]

    state = _State(pool=pool, retriever=retriever, perm=perm, cfg=cfg, targets=targets)
    bar = progress_bar(total=n_total, initial=sum(d["tasks"] for d in done_stats), unit="task",
                       desc="data build", disable=not progress)
    new_stats = []
    try:
        if cfg.workers == 1 or len(todo) <= 1:
            state.tokenizer, state.progress = tokenizer, bar.update
            _init_worker(state)
            for s in todo:
                new_stats.append(build_shard(s))
                if after_shard:
                    after_shard(s)
        else:
            for res in _run_parallel(state, todo, min(cfg.workers, len(todo)), bar):
                new_stats.append(res)
                if after_shard:
                    after_shard(res["shard"])
    finally:
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
    write_json(out / "stats.json", stats)
    with atomic_open(out / "README.md") as f:
        f.write(data_card(cfg, stats, identity))
    if stats["documents"] == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in stats["drops"].items())
        raise MemtrainError(
            f"no task could be built: {stats['pivots_tried']} pivots dropped ({reasons}); relax the entity "
            "filters (entity_labels, min_mentions, min_answer_chars) or use a corpus with entity annotations"
        )
    if stats["documents"] < n_total:
        log.warning("built %d of %d tasks (drops: %s)", stats["documents"], n_total, stats["drops"])
    return stats


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
            "histogram": _histogram(tokens, cfg.task.chunk_tokens * cfg.task.max_chunks),
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


def data_card(cfg: BuildConfig, stats: dict[str, Any], identity: dict[str, Any]) -> str:
    t = stats["tokens_per_doc"]
    return f"""# memtrain E2E tasks

Self-supervised masked-entity reconstruction tasks (MemTrain Task E2E, with IMR candidates), built by
`memtrain data build` (builder v{BUILDER_VERSION}, config hash `{config_hash(identity)}`).

- **Source corpus:** `{cfg.corpus}` (entities: `{cfg.entities}`, pages limit: {cfg.limit_pages}); \
{stats['pool_passages']} passages in the pool.
- **Documents:** {stats['documents']} in {stats['shards']} `{cfg.format}` shard(s); \
{stats['pivots_tried']} pivots tried, drops: {stats['drops'] or 'none'}.
- **Tokens per document** ({cfg.tokenizer} tokenizer): min {t['min']}, mean {t['mean']}, max {t['max']}.
- **Answer entity labels:** {stats['answer_labels']}.
- **IMR candidates per chunk:** mean {stats['imr_candidates_per_chunk']['mean']}.

## Configuration

```json
{json.dumps(identity, indent=2, sort_keys=True)}
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

Load with `memtrain.tasks.build.load_tasks(folder)` or `datasets.load_dataset("json", data_files=...)`.
See `stats.json` for histograms, drop reasons and timings.

## Licence

Text derived from Wikipedia is licensed CC BY-SA (3.0/4.0); these tasks are a derivative work and must be
shared under the same licence with attribution to Wikipedia's contributors.
"""
