"""File helpers: atomic writes and JSONL, so a killed run never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Write to a temp file beside ``path`` and rename it into place only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write("\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True))
            f.write("\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def append_jsonl(f: IO[str], row: dict[str, Any]) -> None:
    """Append one row and flush, for resumable per-item results (a torn last line is ignored on read)."""
    f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    f.flush()


def read_jsonl_tolerant(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a resumable results file; a final line torn by a kill (even inside a multi-byte character)
    is dropped, not fatal. Lines are decoded one by one, so a torn line hides no other row."""
    return read_jsonl_tolerant_counted(path)[0]


def read_jsonl_tolerant_counted(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """:func:`read_jsonl_tolerant` and how many lines it skipped: every line that is not a whole JSON object
    (a torn tail, or a torn line that later appends landed after) is skipped and counted, and reading goes
    on; blank lines are ignored, as :func:`read_jsonl` does (a blank line used to end the rows silently)."""
    rows: list[dict[str, Any]] = []
    skipped = 0
    p = Path(path)
    if not p.exists():
        return rows, skipped
    for raw in p.read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            skipped += 1
    return rows, skipped
