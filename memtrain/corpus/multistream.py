"""Parallel reading of multistream MediaWiki dumps (``pages-articles-multistream.xml.bz2``).

Wikimedia publishes every dump also as a *multistream* file: a concatenation of independent bz2 streams
(a header stream with ``<mediawiki><siteinfo>``, then streams of ~100 ``<page>`` elements each, then the
closing tag), with an index ``...-multistream-index.txt.bz2`` of lines ``offset:page_id:title`` giving the
byte offset of the stream that holds each page. bz2 decompression is single-threaded, and so is parsing;
with the index the streams are independent work items, so :func:`iter_pages_parallel` decompresses,
parses and (optionally) renders them in a process pool and yields the pages **in file order**: the same
pages, in the same order, as the sequential :func:`~memtrain.corpus.wikixml.iter_pages`.

Damage is handled as the sequential reader does, so a build's output never depends on ``workers``: the
pages of a damaged stream before its damage are kept, that stream is counted (``truncated_stream`` or
``malformed_xml``), and reading stops there; a dump cut short of the streams its index lists is counted
as ``truncated_stream`` too. (The counted reason can differ: ``bz2.BZ2File`` takes a
corrupt stream that follows a good one for trailing junk and ends the file, so the sequential reader
reports the XML cut short, ``malformed_xml``, where this one reports ``truncated_stream``.) An index
that does not describe the dump (unreadable, not ``offset:id:title`` lines, its first offset past the
end of the dump, offsets not at a stream start) raises
:class:`~memtrain.errors.MemtrainError`: it is a user-input mistake, not data damage.

:func:`find_index` finds the index beside a dump under the names dumps.wikimedia.org uses
(``X-multistream.xml.bz2`` -> ``X-multistream-index.txt.bz2``; ``X-multistream1.xml-p1p41242.bz2`` ->
``X-multistream-index1.txt-p1p41242.bz2``; also uncompressed ``.txt``). :func:`write_multistream`
re-packs any dump as a multistream file with its index (for tests and benchmarks).
"""

from __future__ import annotations

import bz2
import logging
import multiprocessing as mp
import os
import re
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

from memtrain.corpus.stats import CorpusStats
from memtrain.corpus.wikixml import _local, _read_page, iter_pages
from memtrain.errors import MemtrainError
from memtrain.progress import progress_bar

log = logging.getLogger(__name__)

STREAMS_PER_TASK = 8  # streams one worker call reads (~800 pages): amortises pickling and IPC
_FEED = 1 << 15  # bytes fed to the decompressor at a time, so blocks before a damaged one are kept
_PAGE_START = re.compile(rb"<page[\s>]")


def is_index_file(name: str) -> bool:
    """A multistream index (``...multistream-index*.txt[.bz2]``), which is not a corpus file itself."""
    low = name.lower()
    return "multistream-index" in low and ".txt" in low


def find_index(dump: str | Path) -> Path | None:
    """The index published beside a multistream dump, or None (not multistream, or no index there)."""
    dump = Path(dump)
    name = dump.name
    if "multistream" not in name or is_index_file(name):
        return None
    index = name.replace("multistream", "multistream-index", 1).replace(".xml", ".txt", 1)
    for cand in (index, index.removesuffix(".bz2")):
        p = dump.with_name(cand)
        if p != dump and p.is_file():
            return p
    return None


def read_offsets(index: str | Path, dump_size: int | None = None) -> list[int]:
    """The distinct stream offsets of an index, in file order (checked to be increasing)."""
    index = Path(index)
    if not index.is_file():
        raise MemtrainError(f"multistream index {index} not found; pass the ...-multistream-index.txt.bz2 "
                            "file published with the dump, or read the dump without an index")
    with open(index, "rb") as f:
        magic = f.read(3)
    opener: Callable[..., Any] = bz2.open if magic == b"BZh" else open
    offsets: list[int] = []
    last = -1
    try:
        with opener(index, "rb") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                head, _, rest = line.partition(b":")
                if not head.isdigit() or b":" not in rest:
                    raise MemtrainError(
                        f"{index}, line {lineno}: {line[:80]!r} is not an index line offset:page_id:title; "
                        "is this the dump's -multistream-index file?")
                off = int(head)
                if off < last:
                    raise MemtrainError(f"{index}, line {lineno}: offset {off} comes after {last}; the "
                                        "index must list streams in file order")
                if off != last:
                    offsets.append(off)
                    last = off
    except (OSError, EOFError, ValueError) as e:  # a damaged .bz2 index, or a binary file
        raise MemtrainError(f"multistream index {index} is unreadable ({e}); download it again") from None
    if not offsets:
        raise MemtrainError(f"multistream index {index} lists no streams")
    if dump_size is not None and offsets[0] >= dump_size:
        raise MemtrainError(f"multistream index {index} points at byte {offsets[0]}, past the end of the "
                            f"dump ({dump_size} bytes): the index belongs to another dump (or the dump was "
                            "cut before its first page)")
    return offsets


def stream_ranges(offsets: list[int], size: int) -> list[tuple[int, int]]:
    """``(start, end)`` byte ranges covering the whole dump: the header stream, every indexed stream,
    and the last one running to the end of the file (it may hold the closing-tag stream too)."""
    starts = ([0] if offsets[0] > 0 else []) + offsets
    return [(a, b) for a, b in zip(starts, [*starts[1:], size], strict=True) if b > a]


# ------------------------------------------------------------------------------------------ one stream


def _bunzip(raw: bytes) -> tuple[bytes, BaseException | None]:
    """Decompress one or more concatenated bz2 streams; on damage, the bytes before it and the error."""
    out: list[bytes] = []
    while raw:
        d = bz2.BZ2Decompressor()
        try:
            for i in range(0, len(raw), _FEED):
                out.append(d.decompress(raw[i : i + _FEED]))
                if d.eof:
                    break
        except (OSError, EOFError, ValueError) as e:
            return b"".join(out), e
        if not d.eof:
            return b"".join(out), EOFError("compressed stream ended before the end-of-stream marker was "
                                           "reached")
        raw = d.unused_data
    return b"".join(out), None


def _parse_fragment(data: bytes, stats: CorpusStats) -> tuple[list[tuple[str, str]], str | None]:
    """The articles of a run of ``<page>`` elements (header or closing tag around them allowed)."""
    m = _PAGE_START.search(data)
    if m is None:
        return [], None
    body = data[m.start() :].rstrip()
    if body.endswith(b"</mediawiki>"):
        body = body[: -len(b"</mediawiki>")]
    parser = ET.XMLPullParser(events=("end",))
    pages: list[tuple[str, str]] = []
    try:
        parser.feed(b"<fragment>")
        for i in range(0, len(body), 1 << 20):
            parser.feed(body[i : i + (1 << 20)])
            for _, elem in parser.read_events():
                if _local(elem.tag) == "page":
                    page = _read_page(elem, stats)
                    elem.clear()
                    if page is not None:
                        pages.append(page)
        parser.feed(b"</fragment>")
        parser.close()
    except ET.ParseError as e:
        return pages, f"malformed_xml: {e}"
    return pages, None


def _read_streams(
    path: str, ranges: list[tuple[int, int]], render: Callable[[str], Any] | None
) -> tuple[list[tuple[str, Any]], dict[str, int], str | None, int]:
    """Worker: (pages, skip counts, damage or None, bytes read) of consecutive streams of ``path``.

    Stops at the first damaged stream (keeping its pages before the damage), as the sequential reader
    does. ``render(wikitext)`` is applied to every page in the worker when given.
    """
    stats = CorpusStats()
    out: list[tuple[str, Any]] = []
    done = 0
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        for start, end in ranges:
            f.seek(start)
            raw = f.read(end - start)
            if raw[:3] != b"BZh":
                return out, stats.skipped, f"bad_offset: byte {start} is not the start of a bz2 stream", done
            data, err = _bunzip(raw)
            if isinstance(err, EOFError) and end < size:  # only the file's last stream can be cut short
                why = (f"bad_offset: the bz2 stream at byte {start} does not end at byte {end}, where the "
                       "index says the next stream starts")
                return out, stats.skipped, why, done
            pages, perr = _parse_fragment(data, stats)
            out.extend((t, render(x) if render else x) for t, x in pages)
            done += end - start
            if perr is not None and err is None:
                return out, stats.skipped, perr, done
            if err is not None:
                return out, stats.skipped, f"truncated_stream: {err}", done
    return out, stats.skipped, None, done


# ------------------------------------------------------------------------------------------ the reader


def iter_pages_parallel(
    path: str | Path,
    index: str | Path | None = None,
    workers: int = 2,
    stats: CorpusStats | None = None,
    progress: bool = False,
    render: Callable[[str], Any] | None = None,
    streams_per_task: int = STREAMS_PER_TASK,
) -> Iterator[tuple[str, Any]]:
    """``(title, wikitext)`` of each article of a multistream dump, read by ``workers`` processes.

    Same pages, same order and same skip counts as :func:`~memtrain.corpus.wikixml.iter_pages` on the
    same file (on a damaged file, see the module docstring). ``index`` defaults to :func:`find_index`.
    ``render(wikitext)`` (a picklable function, e.g. :func:`~memtrain.corpus.wikitext.clean_wikitext`)
    runs in the workers, so ``(title, render(text))`` comes back: rendering is most of the cost of
    reading. At most ``4 * workers`` tasks are in flight, so
    memory stays bounded however slowly the caller consumes pages. ``workers <= 1`` reads in-process.
    """
    path = Path(path)
    stats = stats if stats is not None else CorpusStats()
    index = Path(index) if index is not None else find_index(path)
    if index is None:
        raise MemtrainError(f"{path}: no multistream index beside it (expected a "
                            "...-multistream-index.txt.bz2 file in the same folder); pass index=, or read it "
                            "sequentially")
    with open(path, "rb") as f:
        if f.read(3) != b"BZh":
            raise MemtrainError(f"{path}: a multistream dump is a .bz2 file, but this one is not bz2")
    size = os.path.getsize(path)
    offsets = read_offsets(index, size)
    cut = offsets[-1] >= size  # the index lists streams past the end: the dump was truncated
    ranges = stream_ranges([o for o in offsets if o < size], size)
    # small files: enough tasks to keep every worker busy; dumps (~230k streams for enwiki): streams_per_task
    per = max(1, min(streams_per_task, len(ranges) // (4 * max(1, workers))))
    tasks = [ranges[i : i + per] for i in range(0, len(ranges), per)]
    stats.files += 1
    stats.where = str(path)
    bar = progress_bar(total=size, unit="B", unit_scale=True, desc=path.name, disable=not progress,
                       leave=False)
    if workers <= 1:
        results: Iterable[Any] = (_read_streams(str(path), t, render) for t in tasks)
        damaged = yield from _merge(path, results, stats, bar)
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers) as pool:
            results = _bounded(pool, str(path), tasks, render, 4 * workers)
            damaged = yield from _merge(path, results, stats, bar)
    if cut and not damaged:  # cut at a stream boundary: every stream read was whole, the rest is missing
        stats.skip("truncated_stream")
        log.warning("%s: the dump ends at byte %d but its index lists streams up to byte %d; it is truncated "
                    "(kept the pages before the cut)", path, size, offsets[-1])


def _bounded(
    pool: Any, path: str, tasks: list[list[tuple[int, int]]], render: Any, depth: int
) -> Iterator[Any]:
    """Results of ``_read_streams`` over ``tasks`` in order, with at most ``depth`` submitted ahead."""
    pending: deque[Any] = deque()
    todo = iter(tasks)
    for t in todo:
        pending.append(pool.apply_async(_read_streams, (path, t, render)))
        if len(pending) >= depth:
            break
    while pending:
        res = pending.popleft().get()
        nxt = next(todo, None)
        if nxt is not None:
            pending.append(pool.apply_async(_read_streams, (path, nxt, render)))
        yield res


def _merge(path: Path, results: Iterable[Any], stats: CorpusStats, bar: Any
           ) -> Generator[tuple[str, Any], None, bool]:
    """Yields the pages of ``results`` in order; returns True when it stopped at a damaged stream."""
    try:
        n = 0
        for pages, skipped, damage, nbytes in results:
            for reason, k in skipped.items():
                stats.skip(reason, k)
            for page in pages:
                n += 1
                yield page
            bar.update(nbytes)
            if damage is None:
                continue
            reason, _, detail = damage.partition(": ")
            if reason == "bad_offset":
                raise MemtrainError(f"{path}: {detail}; the multistream index belongs to another dump")
            stats.skip(reason)
            log.warning("%s: %s (%s); kept the %d pages read before it", path,
                        "compressed stream is truncated or corrupt" if reason == "truncated_stream"
                        else "malformed XML", detail, n)
            return True
        return False
    finally:
        bar.close()


def write_multistream(
    source: str | Path, out: str | Path, pages_per_stream: int = 100
) -> tuple[Path, Path]:
    """Re-pack a dump as a multistream ``.xml.bz2`` with its ``-index.txt.bz2``, as Wikimedia writes them.

    Every article the sequential reader yields from ``source`` is written (as ``<page>`` with title, ns 0,
    id and text), ``pages_per_stream`` per bz2 stream. ``out`` should contain ``multistream`` in its name
    (e.g. ``x-multistream.xml.bz2``) so that :func:`find_index` finds the index. Returns both paths.
    """
    from xml.sax.saxutils import escape

    out = Path(out)
    index = out.with_name(out.name.replace("multistream", "multistream-index", 1).replace(".xml", ".txt", 1))
    if index == out:
        index = out.with_name(out.name + "-index.txt.bz2")
    header = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="en">\n'
              "  <siteinfo><sitename>Wikipedia</sitename></siteinfo>\n")
    lines: list[str] = []

    def stream(f: Any, first_id: int, titles: list[str], pages: list[str]) -> None:
        off = f.tell()
        lines.extend(f"{off}:{first_id + i}:{t}\n" for i, t in enumerate(titles))
        f.write(bz2.compress("".join(pages).encode()))

    with open(out, "wb") as f:
        f.write(bz2.compress(header.encode()))
        titles: list[str] = []
        pages: list[str] = []
        for pid, (title, text) in enumerate(iter_pages(source), 1):
            pages.append(f"  <page>\n    <title>{escape(title)}</title>\n    <ns>0</ns>\n    <id>{pid}</id>\n"
                         f"    <revision>\n      <text xml:space=\"preserve\">{escape(text)}</text>\n"
                         "    </revision>\n  </page>\n")
            titles.append(title)
            if len(pages) == pages_per_stream:
                stream(f, pid - len(pages) + 1, titles, pages)
                titles, pages = [], []
        if pages:
            stream(f, pid - len(pages) + 1, titles, pages)
        f.write(bz2.compress(b"</mediawiki>\n"))
    index.write_bytes(bz2.compress("".join(lines).encode()))
    return out, index


__all__ = ["find_index", "is_index_file", "iter_pages_parallel", "read_offsets", "stream_ranges",
           "write_multistream"]
