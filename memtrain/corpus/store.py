"""The passage pool on disk: Arrow IPC files, memory-mapped, read by row id.

Why: a pool held as Python objects costs ~7.8 KB per passage (``benchmarks/results/data_scale.md``), so a
full English dump (~30M passages) would need hundreds of GiB. Here the reader streams passages into
columnar files a batch at a time, and the task builder maps them into memory and converts only the rows it
touches (a pivot, its related and random passages) back into :class:`~memtrain.records.Passage` objects.
The OS page cache holds the hot pages; the process holds a bounded cache of recently used rows.

Layout of a store folder:

- ``passages-00000.arrow`` ... : Arrow IPC *file* format (random access, memory-mappable), at most
  ``rows_per_file`` rows each, written in record batches of ``batch_rows``. Columns: ``pid``, ``title``,
  ``text`` and ``entities`` (a list of ``{start, end, text, label, key}`` structs, as in the record).
- ``store.json``: the row count, the files with their row counts and whatever ``meta`` the writer was
  given (the build keeps the reader's statistics and a key of what was read there, to reuse the store on
  resume). It is written last, so a folder without it is an interrupted write, never a short pool.

A row id is the passage's position in the stream that was written, so ``store[i]`` is the i-th passage
``iter_passages`` yielded: the builder's ids, random draws and outputs are the same as with a list.
"""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from memtrain.errors import MemtrainError
from memtrain.io import write_json
from memtrain.records import Entity, Passage

STORE_META = "store.json"
STORE_VERSION = 1
ENTITY = pa.struct([("start", pa.int64()), ("end", pa.int64()), ("text", pa.string()),
                    ("label", pa.string()), ("key", pa.string())])
SCHEMA = pa.schema([("pid", pa.string()), ("title", pa.string()), ("text", pa.string()),
                    ("entities", pa.list_(ENTITY))])


def _file_name(i: int) -> str:
    return f"passages-{i:05d}.arrow"


def _batch(rows: list[Passage]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "pid": [p.pid for p in rows],
        "title": [p.title for p in rows],
        "text": [p.text for p in rows],
        "entities": [[{"start": e.start, "end": e.end, "text": e.text, "label": e.label, "key": e.key}
                      for e in p.entities] for p in rows],
    }, schema=SCHEMA)


def write_store(passages: Iterable[Passage], folder: str | Path, meta: dict[str, Any] | None = None,
                rows_per_file: int = 1 << 20, batch_rows: int = 4096) -> PassageStore:
    """Stream ``passages`` into a new store at ``folder`` (replacing what is there) and open it.

    At most ``batch_rows`` passages are held as Python objects at once. ``meta`` may be a dict, or a
    callable returning one once the stream is exhausted (e.g. the reader's statistics, known only then).
    """
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    files: list[dict[str, Any]] = []
    writer: pa.ipc.RecordBatchFileWriter | None = None
    sink: Any = None
    buf: list[Passage] = []

    def flush() -> None:
        nonlocal writer, sink
        if not buf:
            return
        if writer is None:
            files.append({"name": _file_name(len(files)), "rows": 0})
            sink = pa.OSFile(str(folder / files[-1]["name"]), "wb")
            writer = pa.ipc.new_file(sink, SCHEMA)
        writer.write_batch(_batch(buf))
        files[-1]["rows"] += len(buf)
        buf.clear()
        if files[-1]["rows"] >= rows_per_file:
            writer.close()
            sink.close()
            writer = None

    try:
        for p in passages:
            buf.append(p)
            # a batch never crosses a file boundary, so every file but the last has rows_per_file rows
            if len(buf) >= min(batch_rows, rows_per_file - (files[-1]["rows"] if writer else 0)):
                flush()
        flush()
    finally:
        if writer is not None:
            writer.close()
            sink.close()
    meta_d = meta() if callable(meta) else (meta or {})
    write_json(folder / STORE_META, {"version": STORE_VERSION, "rows": sum(f["rows"] for f in files),
                                     "files": files, "meta": meta_d})
    return PassageStore(folder)


def read_store_meta(folder: str | Path) -> dict[str, Any] | None:
    """``store.json`` of a finished store, or None (no store there, an interrupted write, another version)."""
    try:
        d = json.loads((Path(folder) / STORE_META).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return d if d.get("version") == STORE_VERSION else None


class PassageStore(Sequence[Passage]):
    """A finished store, memory-mapped: ``len``, ``store[i]``, :meth:`take` and column batches.

    Opening maps the files and reads only their footers; rows are decoded when asked for. Pickles as its
    path (a spawned worker re-maps the files; a forked one shares the mapping).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        d = read_store_meta(self.folder)
        if d is None:
            raise MemtrainError(f"{self.folder} is not a finished passage store (no readable {STORE_META}); "
                                "rebuild it")
        self.meta: dict[str, Any] = d["meta"]
        # Record batches, not one table: Table.take concatenates each column's chunks first, i.e. copies
        # the whole pool per call (~200 ms at 90k rows); rows are read one by one from their batch instead
        # (:meth:`take`, ~60 us a row whatever the pool's size).
        self._batches: list[pa.RecordBatch] = []
        for f in d["files"]:
            reader = pa.ipc.open_file(pa.memory_map(str(self.folder / f["name"]), "r"))
            # zero-copy: the columns point into the map, pages are read when touched
            self._batches += [reader.get_batch(i) for i in range(reader.num_record_batches)]
        self._starts = np.cumsum([0, *(b.num_rows for b in self._batches)])
        self._cols = [b.columns for b in self._batches]
        if self._starts[-1] != d["rows"]:
            raise MemtrainError(f"{self.folder}: {self._starts[-1]} rows on disk but {STORE_META} says "
                                f"{d['rows']}; rebuild the store")

    def __reduce__(self) -> tuple[Any, ...]:
        return PassageStore, (self.folder,)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> Passage:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"passage {i} out of range (store of {len(self)})")
        return self.take([i % len(self)])[0]

    def __iter__(self) -> Iterator[Passage]:
        for b in self.batches():
            cols = b.to_pydict()
            rows = zip(cols["pid"], cols["title"], cols["text"], cols["entities"], strict=True)
            yield from (Passage(title=t, text=x, entities=[Entity(**e) for e in es], pid=pid)
                        for pid, t, x, es in rows)

    def take(self, ids: Sequence[int]) -> list[Passage]:
        """The passages at rows ``ids``, in that order (one gather, then conversion to records)."""
        rows = np.asarray(ids, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row ids out of range (store of {len(self)})")
        which = np.searchsorted(self._starts, rows, side="right") - 1
        return [self._row(b, r - self._starts[b]) for b, r in zip(which.tolist(), rows.tolist(), strict=True)]

    def _row(self, b: int, i: int) -> Passage:
        pid, title, text, ents = (c[i].as_py() for c in self._cols[b])
        return Passage(title=title, text=text, entities=[Entity(**e) for e in ents], pid=pid)

    def batches(self, columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The rows in order, a record batch at a time (as written), restricted to ``columns``.

        Read with plain file reads, not through the memory map: a scan touches every page, and pages of a
        mapping stay in the process's RSS once touched (clean and reclaimable, but counted), whereas a
        read batch is freed once the caller moves on, so a scan's footprint is one batch.
        """
        fields = [SCHEMA.get_field_index(c) for c in columns] if columns else None
        options = pa.ipc.IpcReadOptions(included_fields=fields)
        for f in read_store_meta(self.folder)["files"]:
            with pa.OSFile(str(self.folder / f["name"]), "r") as src:
                reader = pa.ipc.open_file(src, options=options)
                for i in range(reader.num_record_batches):
                    yield reader.get_batch(i)

    def text_of(self, i: int) -> str:
        """``title + " " + text`` of row ``i`` (what the retrievers index), without decoding its entities."""
        b = int(np.searchsorted(self._starts, i, side="right")) - 1
        if not 0 <= i < len(self):
            raise IndexError(f"passage {i} out of range (store of {len(self)})")
        cols = self._cols[b]
        return f"{cols[1][i - self._starts[b]].as_py()} {cols[2][i - self._starts[b]].as_py()}"

    def text_view(self) -> TextView:
        return TextView(self)

    def texts(self, sep: str = " ") -> Iterator[str]:
        """``title + sep + text`` of every row, in order (what the retrievers index)."""
        for b in self.batches(["title", "text"]):
            titles, texts = b.column(0).to_pylist(), b.column(1).to_pylist()
            yield from (f"{t}{sep}{x}" for t, x in zip(titles, texts, strict=True))

    def entity_rows(self) -> Iterator[tuple[str, str, str]]:
        """``(key, text, label)`` of every entity mention, in row order (what the pool's form index reads)."""
        for b in self.batches(["entities"]):
            ents = b.column(0).flatten()  # the structs of every row of the batch, concatenated
            yield from zip(ents.field("key").to_pylist(), ents.field("text").to_pylist(),
                           ents.field("label").to_pylist(), strict=True)


class TextView(Sequence[str]):
    """The indexed text of every row as a sequence read on demand: retrievers index it by iterating (one
    pass over the batches) and read single rows for queries by example, and nothing is held per row."""

    def __init__(self, store: PassageStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self.store.text_of(j) for j in range(*i.indices(len(self)))]
        return self.store.text_of(i if i >= 0 else i + len(self))

    def __iter__(self) -> Iterator[str]:
        return self.store.texts()


class RowCache:
    """The last ``size`` passages fetched from a store, by row id (a task touches ~150 rows many times)."""

    def __init__(self, store: PassageStore, size: int = 8192) -> None:
        self.store, self.size = store, size
        self._rows: OrderedDict[int, Passage] = OrderedDict()

    def get(self, i: int) -> Passage:
        p = self._rows.get(i)
        if p is None:
            self.fetch([i])
            p = self._rows[i]
        else:
            self._rows.move_to_end(i)
        return p

    def fetch(self, ids: Iterable[int]) -> None:
        """Load the rows of ``ids`` not cached yet with one gather; evict the least recently used."""
        missing = list(dict.fromkeys(i for i in ids if i not in self._rows))
        for i, p in zip(missing, self.store.take(missing), strict=True):
            self._rows[i] = p
        while len(self._rows) > max(self.size, len(missing)):
            self._rows.popitem(last=False)
