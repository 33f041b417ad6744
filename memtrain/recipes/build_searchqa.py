"""``memtrain data build kind=searchqa``: a search-QA task set (MEM1 setting, :mod:`memtrain.tasks.searchqa`).

1. Hash the source files (and the corpus' ``answerable_nq.json`` when NQ is included) with the
   ``searchqa`` settings: the identity of the build. A folder holding another build is refused unless
   ``overwrite=true``; the same build is rebuilt (a second or two), so a killed build leaves nothing
   half-read.
2. Load each source, keep the configured side of the split, pair consecutive questions into
   ``n_objectives``-question tasks.
3. Write the shards, ``stats.json``, a ``README.md`` data card, and ``manifest.json`` last (``kind:
   searchqa``; no chunks, so the tokenizer is ``none`` and any model can read the set).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memtrain.errors import MemtrainError
from memtrain.io import atomic_open, write_json
from memtrain.tasks.taskset import (
    MANIFEST,
    Manifest,
    config_hash,
    read_manifest,
    source_file,
    write_manifest,
    write_tasks,
)

if TYPE_CHECKING:
    from memtrain.recipes.build_tasks import BuildConfig

BUILDER_VERSION = 1  # bump when a change alters the tasks produced for the same config
KIND = "searchqa"


def identity(cfg: BuildConfig) -> dict[str, Any]:
    return {"kind": KIND, "searchqa": asdict(cfg.searchqa), "shard_size": cfg.shard_size,
            "format": cfg.format, "builder_version": BUILDER_VERSION}


def build(cfg: BuildConfig) -> dict[str, Any]:
    """Build the task set ``cfg.out``; returns the statistics also written to ``stats.json``."""
    from memtrain.tasks.searchqa import build_search_tasks

    sq = cfg.searchqa
    sq.validate()
    t0 = time.perf_counter()
    out = Path(cfg.out)
    files = [sq.path(s) for s in sq.sources]
    for s, f in zip(sq.sources, files, strict=True):
        if not f.is_file():
            raise MemtrainError(f"{s} data file not found: {f.resolve()}; set searchqa.data=DIR or "
                                f"searchqa.paths.{s}=FILE")
    if "nq" in sq.sources and sq.answerable_path().is_file():
        files.append(sq.answerable_path())
    sources = [source_file(f) for f in files]
    ident = identity(cfg)
    h = config_hash({**ident, "sources": [asdict(s) for s in sources]})
    old_shards = list(out.glob("shard-*.*"))
    if (out / MANIFEST).exists() or old_shards:
        try:
            old_hash = read_manifest(out).config_hash
        except MemtrainError:
            old_hash = None
        if old_hash != h and not cfg.overwrite:
            raise MemtrainError(f"{out} holds another build (hash {old_hash} != {h}); choose another "
                                "out=DIR, or set overwrite=true to replace it")
    out.mkdir(parents=True, exist_ok=True)
    for f in old_shards:
        f.unlink()
    manifest = Manifest(kind=KIND, tokenizer="none", tokenizer_fingerprint="", chunk_tokens=0,
                        max_chunks=None, seed=sq.split_seed, config_hash=h, config=ident,
                        builder_version=BUILDER_VERSION, sources=sources, split=sq.split)
    write_manifest(out, manifest)
    write_json(out / "config.json", asdict(cfg))
    tasks, stats = build_search_tasks(sq)
    if not tasks:
        raise MemtrainError(f"no search-QA task could be built (split={sq.split}, sources={sq.sources}, "
                            f"n_objectives={sq.n_objectives}): {stats['per_source']}")
    stats["shards"] = write_tasks(out, tasks, cfg.shard_size, cfg.format)
    stats["chunks_per_doc"] = {"0": len(tasks)}
    stats["timings"] = {"total_s": round(time.perf_counter() - t0, 3)}
    write_json(out / "stats.json", stats)
    with atomic_open(out / "README.md") as f:
        f.write(data_card(cfg, stats))
    manifest.complete, manifest.n_tasks = True, len(tasks)
    write_manifest(out, manifest)
    print(f"built {len(tasks)} searchqa tasks ({sq.split}, {sq.n_objectives} objective(s) each) in "
          f"{stats['shards']} shard(s) -> {out}: {stats['per_source']} ({stats['timings']['total_s']} s)")
    return stats


def data_card(cfg: BuildConfig, stats: dict[str, Any]) -> str:
    sq = cfg.searchqa
    return f"""# memtrain search-QA tasks (MEM1 setting)

Multi-objective questions for the searching memory agent (`memtrain.agent.search`), built by
`memtrain data build kind=searchqa` (builder v{BUILDER_VERSION}).

- **Side:** `{sq.split}` of the per-source question split (eval fraction {sq.eval_fraction}, split seed
  {sq.split_seed}; eval-only sources {sq.eval_only}).
- **Objectives:** {sq.n_objectives} consecutive questions of one source per task, each ending in "?",
  joined by "; " (MEM1's rule); NQ filter `{sq.nq_filter}` (max BM25 rank {sq.nq_max_rank}).
- **Tasks per source:** {json.dumps(stats['per_source'])}.

## Fields

| field | meaning |
|---|---|
| `id` | `search-<source>-<split>-<i>` |
| `kind` | `search` |
| `problem` | the questions joined by "; " |
| `answers` | the first alias of every objective joined by "; " (display only) |
| `meta.objectives` | per objective: `qid`, `question`, `answers` (all aliases); NQ also `in_pool`, \
`bm25_rank`, `answerable` |
| `meta.question_ids` | `<source>:<qid>` of every objective (for `scripts/check_overlap.py`) |
| `data_source`, `prompt`, `ability`, `reward_model`, `extra_info` | veRL RL-dataset fields \
(`reward_model.ground_truth = {{"target": [aliases per objective]}}`, MEM1's) |

## Configuration

```json
{json.dumps(identity(cfg), indent=2, sort_keys=True)}
```

Question texts and answers keep their upstream licences (HotpotQA CC BY-SA 4.0, Natural Questions CC BY-SA
3.0, MuSiQue CC BY 4.0).
"""
