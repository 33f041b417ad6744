"""Task sets on disk: the only hand-off between building tasks and training or evaluating on them.

A task set is a folder of ``shard-*.jsonl`` (or ``.parquet``) files of :class:`~memtrain.records.MemTask`
rows plus ``manifest.json``, which records what the tasks were built with: the kind (``e2e`` or
``longqa``), the source files with their sizes and hashes, the tokenizer (name and vocabulary fingerprint),
``chunk_tokens``, ``max_chunks``, the seed, the context lengths (long QA) and the full build config, and
whether the build is done: ``finished`` (every shard written), ``losses`` (input lost to damage while
reading the source, by reason: ``truncated_stream``, ``malformed_xml``, ``non_utf8``, ``bad_record``,
``missing_field``) and ``complete`` (finished with no loss).

Readers (train, eval) compare the manifest with their own settings (:func:`agent_for`,
:func:`check_tokenizer`). The rule, the same everywhere:

- ``agent.chunk_tokens`` unset (None): adopt the task set's. Set: it must equal the task set's, else an
  error names both values (the chunks are already cut; a different budget would be a different task).
- ``agent.max_chunks`` unset: read every chunk. Set: it must be at least the longest task's number of
  chunks, else an error names both values (chunks would be silently dropped).
- The model's tokenizer must have the vocabulary fingerprint the chunks were counted with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memtrain.errors import MemtrainError
from memtrain.io import atomic_open, read_jsonl, write_json, write_jsonl
from memtrain.records import MemTask

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


@dataclass
class SourceFile:
    """One input file of a build, identified by size and content hash."""

    path: str
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """What a task set was built with (``manifest.json``)."""

    kind: str  # e2e | longqa
    tokenizer: str
    tokenizer_fingerprint: str
    chunk_tokens: int
    max_chunks: int | None  # the builder's bound (None: documents are chunked whole)
    seed: int
    config_hash: str
    config: dict[str, Any]  # the resolved build config, as written beside every output
    builder_version: int
    sources: list[SourceFile] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # long QA: documents per context
    split: str = "all"  # long QA: all | train | eval
    # True once every shard is written *and* the source was read to its end without loss (``losses``
    # empty): a set built from a truncated dump or skipped records is never complete
    complete: bool = False
    n_tasks: int = 0
    longest_task_chunks: int = 0
    finished: bool = False  # every shard is written (whatever the source's losses)
    losses: dict[str, int] = field(default_factory=dict)  # input lost to damage while reading, by reason

    def describe(self) -> str:
        lengths = f", lengths {self.lengths}" if self.lengths else ""
        lost = f", built from a damaged source (lost: {self.losses})" if self.losses else ""
        return (f"{self.kind} task set: {self.n_tasks} tasks, tokenizer {self.tokenizer}, chunk_tokens "
                f"{self.chunk_tokens}, up to {self.longest_task_chunks} chunks{lengths}, seed {self.seed}"
                f"{lost}")


def config_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def source_file(path: str | Path) -> SourceFile:
    p = Path(path)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return SourceFile(str(p), p.stat().st_size, h.hexdigest())


def write_manifest(folder: str | Path, manifest: Manifest) -> None:
    write_json(Path(folder) / MANIFEST, dataclasses.asdict(manifest))


def read_manifest(folder: str | Path) -> Manifest:
    p = Path(folder) / MANIFEST
    if not p.is_file():
        raise MemtrainError(f"{folder} has no {MANIFEST}: not a task set built by `memtrain data build` "
                            "(rebuild it, so train and eval can check its budgets and tokenizer)")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        d["sources"] = [SourceFile(**s) for s in d.get("sources", [])]
        return Manifest(**d)
    except (json.JSONDecodeError, TypeError) as e:
        raise MemtrainError(f"{p}: corrupt or from an older memtrain ({e}); rebuild the task set") from None


# ------------------------------------------------------------------------------------------ shards


def shard_path(out: Path, s: int, fmt: str) -> Path:
    return out / f"shard-{s:05d}.{fmt}"


def write_shard(path: Path, rows: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "jsonl":
        write_jsonl(path, rows)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_open(path, "wb") as f:
        pq.write_table(pa.Table.from_pylist(rows), f)


def load_tasks(path: str | Path) -> list[MemTask]:
    """Tasks from a task-set folder (all ``shard-*.jsonl``/``.parquet`` in order) or from one shard file."""
    p = Path(path)
    if p.is_dir():
        files = sorted([*p.glob("shard-*.jsonl"), *p.glob("shard-*.parquet")])
        if not files:
            raise MemtrainError(f"no shard-*.jsonl or shard-*.parquet in {p}; run `memtrain data build`")
    elif p.is_file():
        files = [p]
    else:
        raise MemtrainError(f"task set not found: {p}; build it with `memtrain data build out={p}`")
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


def write_tasks(folder: str | Path, tasks: list[MemTask], shard_size: int = 1000, fmt: str = "jsonl") -> int:
    """Write ``tasks`` as shards of ``shard_size`` (atomically each); returns the number of shards."""
    n = math.ceil(len(tasks) / shard_size)
    for s in range(n):
        rows = [t.to_dict() for t in tasks[s * shard_size : (s + 1) * shard_size]]
        write_shard(shard_path(Path(folder), s, fmt), rows, fmt)
    return n


@dataclass
class TaskSet:
    path: Path
    manifest: Manifest
    tasks: list[MemTask]


def open_taskset(path: str | Path) -> TaskSet:
    """A finished task set: its manifest and its tasks (an unfinished build is refused, not half-read).

    A set built from a damaged source (``manifest.losses``) is finished but not ``complete``: it opens,
    with a warning naming the losses.
    """
    p = Path(path)
    if not p.is_dir():
        raise MemtrainError(f"task set folder not found: {p}; build it with `memtrain data build out={p}`")
    manifest = read_manifest(p)
    if not (manifest.complete or manifest.finished):
        raise MemtrainError(f"{p}: the build did not finish; re-run the same `memtrain data build` to resume")
    if manifest.losses:
        log.warning("%s was built from a damaged source (input lost: %s); its tasks come from what could be "
                    "read", p, manifest.losses)
    return TaskSet(p, manifest, load_tasks(p))


# ------------------------------------------------------------------------------------------ checks


def agent_for(agent: Any, ts: TaskSet, where: str) -> Any:
    """``agent`` (an :class:`~memtrain.agent.loop.AgentConfig`) made consistent with the task set, or an
    error naming both values (rule in the module docstring). ``where`` names the reader's config."""
    m = ts.manifest
    chunk_tokens = agent.chunk_tokens
    if chunk_tokens is None:
        chunk_tokens = m.chunk_tokens
    elif chunk_tokens != m.chunk_tokens:
        raise MemtrainError(
            f"{where}.agent.chunk_tokens={chunk_tokens} but the task set {ts.path} was built with "
            f"chunk_tokens={m.chunk_tokens}; unset agent.chunk_tokens to adopt it, or rebuild the tasks"
        )
    longest = max((len(t.chunks) for t in ts.tasks), default=0)
    if agent.max_chunks is not None and agent.max_chunks < longest:
        raise MemtrainError(
            f"{where}.agent.max_chunks={agent.max_chunks} but the task set {ts.path} has tasks of up to "
            f"{longest} chunks (built with max_chunks={m.max_chunks}); chunks would be dropped. Unset "
            f"agent.max_chunks to read them all, or rebuild with e2e.max_chunks={agent.max_chunks}"
        )
    return dataclasses.replace(agent, chunk_tokens=chunk_tokens)


def check_tokenizer(tokenizer: Any, ts: TaskSet, model: str, where: str) -> None:
    """Refuse a model whose tokenizer is not the one the task set's chunks were counted with."""
    from memtrain.tasks.chunking import tokenizer_fingerprint

    if tokenizer is None:
        raise MemtrainError(f"{where}: the engine has no tokenizer, so the task set's budgets cannot be "
                            "checked; set engine.tokenizer")
    fp = tokenizer_fingerprint(tokenizer)
    if fp != ts.manifest.tokenizer_fingerprint:
        raise MemtrainError(
            f"{where}: model {model!r} has tokenizer {fp}, but the task set {ts.path} was chunked with "
            f"tokenizer {ts.manifest.tokenizer!r} ({ts.manifest.tokenizer_fingerprint}); rebuild the tasks "
            f"with tokenizer={model}"
        )
