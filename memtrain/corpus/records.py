"""Readers of record files: JSON lines, Parquet, plain text and Hugging Face ``datasets``.

Each yields ``(title, text)`` documents. A bad record does not stop a read: a line that is not UTF-8
(``non_utf8``), not a JSON object (``bad_record``) or lacks the title/text field (``missing_field``) is
skipped and counted as a loss (or raises at once with ``CorpusStats(strict=True)``, naming the file and
line or record). When *no* record has the fields, the reader raises instead, naming the fields it did
find, because that is a wrong ``title_field``/``text_field`` setting rather than a few bad rows.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from memtrain.corpus.stats import CorpusStats
from memtrain.errors import MemtrainError

# Records without the fields, before any good one, after which the field names are taken to be wrong.
_MISSING_LIMIT = 100
log = logging.getLogger(__name__)
FIELD_SETTINGS = ("set title_field=NAME and text_field=NAME (settings of `memtrain data build`) to the right "
                  "names")


def _documents(
    rows: Iterable[Any], where: str, title_field: str, text_field: str, stats: CorpusStats
) -> Iterator[tuple[str, str]]:
    good = missing = 0
    fields: list[str] = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            stats.where = f"{where}, record {n}"
            stats.skip("bad_record")
            continue
        title, text = row.get(title_field), row.get(text_field)
        if not isinstance(title, str) or not isinstance(text, str):
            missing += 1
            fields = sorted(row)
            if not good and missing >= _MISSING_LIMIT:
                raise MemtrainError(
                    f"{where}: the first {missing} records lack a string {title_field!r} or {text_field!r} "
                    f"field (fields found: {', '.join(fields) or 'none'}); {FIELD_SETTINGS}"
                )
            stats.where = f"{where}, record {n} (fields: {', '.join(fields) or 'none'})"
            stats.skip("missing_field")
            continue
        good += 1
        yield title, text
    if missing and not good:
        raise MemtrainError(
            f"{where}: no record has a string {title_field!r} and {text_field!r} field (fields found: "
            f"{', '.join(fields) or 'none'}); {FIELD_SETTINGS}"
        )


def _json_rows(path: Path, stats: CorpusStats) -> Iterator[Any]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:  # type: ignore[operator]
        first = _first_char(f)
        if first == b"[":  # a .json file holding one array rather than JSON lines
            try:
                rows = json.loads(f.read().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise MemtrainError(
                    f"{path}: not valid UTF-8 JSON ({e}); fix the file or export JSON lines"
                ) from e
            yield from rows
            return
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                stats.where = f"{path}, line {lineno}"
                stats.skip("non_utf8")
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                stats.where = f"{path}, line {lineno}"
                stats.skip("bad_record")


def _first_char(f: IO[bytes]) -> bytes:
    """First non-space byte of a file, leaving the position at the start."""
    head = f.read(4096).lstrip().lstrip(b"\xef\xbb\xbf").lstrip()
    f.seek(0)
    return head[:1]


def iter_json_documents(
    path: Path, title_field: str, text_field: str, stats: CorpusStats
) -> Iterator[tuple[str, str]]:
    stats.files += 1
    try:
        yield from _documents(_json_rows(path, stats), str(path), title_field, text_field, stats)
    except (OSError, EOFError) as e:  # e.g. a truncated .jsonl.gz: keep what was read
        stats.where = str(path)
        stats.skip("truncated_stream")
        log.warning("%s: stream ends early (%s); kept the records read before it", path, e)


def iter_parquet_documents(
    path: Path, title_field: str, text_field: str, stats: CorpusStats
) -> Iterator[tuple[str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    stats.files += 1
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise MemtrainError(f"{path}: not a readable Parquet file ({e})") from e
    names = set(pf.schema_arrow.names)
    absent = [f for f in (title_field, text_field) if f not in names]
    if absent:
        raise MemtrainError(
            f"{path}: no column {', '.join(map(repr, absent))} (columns: {', '.join(sorted(names))}); "
            f"{FIELD_SETTINGS}"
        )

    def rows() -> Iterator[dict[str, Any]]:
        for batch in pf.iter_batches(batch_size=1024, columns=[title_field, text_field]):
            yield from batch.to_pylist()

    yield from _documents(rows(), str(path), title_field, text_field, stats)


def iter_text_document(path: Path, stats: CorpusStats) -> Iterator[tuple[str, str]]:
    """A plain-text file is one document titled by its file name; blank lines separate paragraphs."""
    stats.files += 1
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        stats.where = str(path)
        stats.skip("non_utf8")
        return
    yield path.stem, text


def iter_hf_documents(
    name: str, split: str, title_field: str, text_field: str, stats: CorpusStats
) -> Iterator[tuple[str, str]]:
    """Rows of a Hugging Face dataset, streamed (nothing is downloaded up front)."""
    try:
        import datasets
    except ImportError as e:
        raise MemtrainError(
            "reading hf: sources needs the datasets package: pip install 'memtrain[hf]'"
        ) from e
    errors: list[str] = []
    # Streaming reads a remote dataset without downloading it whole; a dataset already in the local cache
    # (the only option offline) needs the non-streaming loader, so that is the fallback.
    for streaming in (True, False):
        try:
            ds = datasets.load_dataset(name, split=split, streaming=streaming)
            it = iter(ds)
            first = next(it, None)
            break
        except Exception as e:  # offline, unknown name, bad split: all surface as different exception types
            errors.append(f"{type(e).__name__}: {str(e)[:300]}")
    else:
        raise MemtrainError(
            f"hf:{name}:{split}: could not load the dataset ({errors[0]}); check the name and split, that "
            "the machine can reach the Hugging Face Hub (or the dataset is cached), or export it to "
            ".jsonl/.parquet and pass that path"
        )
    stats.files += 1

    def rows() -> Iterator[Any]:
        if first is not None:
            yield first
            yield from it

    yield from _documents(rows(), f"hf:{name}:{split}", title_field, text_field, stats)
