"""One entry point from any corpus source to a stream of passages with entity spans.

A source is ``"embedded"`` (the real 206-page enwiki dump excerpt shipped in PyPI ``gensim``), a
MediaWiki XML dump, a ``.jsonl``/``.json``/``.parquet``/``.txt`` file, a folder of those, or
``hf:NAME[:SPLIT]`` for a Hugging Face dataset. Everything is streamed, so a full enwiki dump is fine.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memtrain.corpus import entities as ent
from memtrain.corpus.multistream import find_index, is_index_file, iter_pages_parallel
from memtrain.corpus.passages import Piece, make_passages
from memtrain.corpus.records import (
    iter_hf_documents,
    iter_json_documents,
    iter_parquet_documents,
    iter_text_document,
)
from memtrain.corpus.stats import CorpusStats
from memtrain.corpus.wikitext import clean_wikitext
from memtrain.corpus.wikixml import iter_pages
from memtrain.errors import MemtrainError
from memtrain.progress import progress_bar
from memtrain.records import Passage

EMBEDDED_CORPUS = "embedded"
GENSIM_DUMP = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

# File kinds by name ending; the first match wins, so ".jsonl.gz" is checked before ".gz"-style dumps.
_KINDS = (
    (".jsonl.gz", "json"), (".json.gz", "json"), (".ndjson", "json"), (".jsonl", "json"), (".json", "json"),
    (".parquet", "parquet"), (".txt", "text"),
    (".xml.bz2", "wiki"), (".xml.gz", "wiki"), (".xml", "wiki"), (".bz2", "wiki"),
)  # fmt: skip
_SUPPORTED = "a MediaWiki dump (.xml, .xml.bz2, .xml.gz), .jsonl/.json, .parquet or .txt"
_WS = re.compile(r"[ \t\r\f\v]+")


def _kind(path: Path) -> tuple[str, str] | None:
    """(kind, source name without the format suffix) of a file, or None if not a corpus file."""
    name = path.name
    if is_index_file(name):  # a multistream dump's index travels beside it; it is not a corpus file
        return None
    for suffix, kind in _KINDS:
        if name.lower().endswith(suffix):
            return kind, name[: -len(suffix)]
    return None


def _embedded_path() -> Path:
    # find_spec locates gensim without importing it (its import takes seconds).
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise MemtrainError(
            "the embedded corpus is a Wikipedia dump excerpt shipped inside the gensim package, a dependency "
            "of memtrain that is not installed here: pip install 'gensim>=4.3' (or pass corpus=PATH: a "
            "dump, .jsonl or .parquet file)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GENSIM_DUMP
    if not path.is_file():
        raise MemtrainError(
            f"gensim is installed but its test dump is missing at {path}; reinstall it with "
            "pip install --force-reinstall 'gensim>=4.3'"
        )
    return path


def resolve_source(source: str) -> str:
    """Validate a source string and return what readers open: a path, or ``hf:NAME:SPLIT``."""
    if not isinstance(source, str) or not source.strip():
        raise MemtrainError(f"empty corpus source {source!r}; pass 'embedded', a path or hf:NAME[:SPLIT]")
    source = source.strip()
    if source == EMBEDDED_CORPUS:
        return str(_embedded_path())
    if source.startswith("hf:"):
        name, _, split = source[3:].partition(":")
        if not name or ":" in split:
            raise MemtrainError(
                f"bad Hugging Face source {source!r}; the form is hf:NAME[:SPLIT], e.g. hf:wikitext"
            )
        return f"hf:{name}:{split or 'train'}"
    path = Path(source).expanduser()
    if not path.exists():
        raise MemtrainError(
            f"corpus source {source!r}: no such file or folder; "
            f"pass 'embedded', hf:NAME[:SPLIT], or {_SUPPORTED}"
        )
    if path.is_dir():
        if not _files(path):
            raise MemtrainError(f"corpus folder {source!r} holds no corpus files; expected {_SUPPORTED}")
    elif _kind(path) is None:
        raise MemtrainError(f"corpus file {source!r}: unknown format; expected {_SUPPORTED}")
    return str(path)


def _files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and _kind(p) is not None
    )


def _plain_paragraphs(text: str, wrapped: bool = False) -> list[Piece]:
    """Paragraphs of plain text, inner whitespace collapsed.

    Record fields put one paragraph per line; a ``.txt`` file may hard-wrap its lines (``wrapped``), so
    there only blank lines separate paragraphs.
    """
    if wrapped:
        blocks = [" ".join(block.split("\n")) for block in re.split(r"\n\s*\n", text)]
    else:
        blocks = text.split("\n")
    out: list[Piece] = []
    for block in blocks:
        block = _WS.sub(" ", block).strip()
        if block:
            out.append((block, []))
    return out


def iter_passages(
    source: str,
    *,
    entities: str = "auto",
    max_passage_words: int = 200,
    min_passage_words: int = 20,
    limit_pages: int | None = None,
    stats: CorpusStats | None = None,
    title_field: str = "title",
    text_field: str = "text",
    progress: bool = False,
    workers: int = 1,
) -> Iterator[Passage]:
    """Passages of a corpus with entity spans, in source order (deterministic).

    ``entities`` is an extractor spec (see :mod:`memtrain.corpus.entities`): ``auto`` keeps wiki link
    anchors and adds rule-based names/numbers/dates. Passage sizes are in words (~1.3 SmolLM2 tokens per
    English word); see :mod:`memtrain.corpus.passages`. ``limit_pages`` stops after that many documents
    yielded passages. Skips and errors are counted in ``stats``. Passage ids are
    ``"<source name>:<title>:<index>"``. Wiki pages are rendered by
    :func:`~memtrain.corpus.wikitext.clean_wikitext`. The source and the extractors are checked before this
    returns, so a bad path or a missing spaCy model fails at once, not at the first ``next()``.

    ``workers > 1`` reads a multistream dump whose index lies beside it
    (:func:`~memtrain.corpus.multistream.find_index`) in that many processes, which decompress, parse and
    render the pages; the passages are the same, in the same order. Other sources ignore it.
    """
    if max_passage_words < 1 or min_passage_words < 0 or min_passage_words > max_passage_words:
        raise MemtrainError(
            f"passage bounds min_passage_words={min_passage_words}, max_passage_words={max_passage_words}: "
            "need 0 <= min <= max and max >= 1"
        )
    if limit_pages is not None and limit_pages < 0:
        raise MemtrainError(f"limit_pages={limit_pages}: must be >= 0 (or None for no limit)")
    resolved = resolve_source(source)
    methods = ent.parse_methods(entities, wiki=True)  # "links" contributes nothing on record files
    stats = stats if stats is not None else CorpusStats()
    return _generate(
        source, resolved, methods, max_passage_words, min_passage_words, limit_pages, stats,
        title_field, text_field, progress, workers,
    )  # fmt: skip


def _generate(
    source: str,
    resolved: str,
    methods: list[str],
    max_words: int,
    min_words: int,
    limit: int | None,
    stats: CorpusStats,
    title_field: str,
    text_field: str,
    progress: bool,
    workers: int = 1,
) -> Iterator[Passage]:
    use_links = ent.LINKS in methods
    extractors = [ent.get_extractor(m) for m in methods if m != ent.LINKS]
    labels = stats.entity_labels
    pages = 0
    if limit == 0:
        return
    for kind, docs, name in _documents(source, resolved, stats, title_field, text_field, progress, workers):
        seen: dict[str, int] = {}  # passage index per title, so duplicate titles keep unique ids
        for title, body in docs:
            if kind == "wiki":
                paragraphs = clean_wikitext(body)
            elif kind == "wiki_rendered":  # rendered by the parallel reader's workers
                paragraphs = body
            else:
                paragraphs = _plain_paragraphs(body, wrapped=kind == "text")
            pieces = make_passages(paragraphs, max_words, min_words, on_drop=stats.skip)
            if not pieces:
                stats.skip("empty")
                continue
            base = seen.get(title, 0)
            seen[title] = base + len(pieces)
            for i, (text, links) in enumerate(pieces):
                groups = [links if use_links else []]
                groups.extend(x(text) for x in extractors)
                found = ent.merge_entities(groups)
                for e in found:
                    labels[e.label] = labels.get(e.label, 0) + 1
                stats.passages += 1
                yield Passage(title=title, text=text, entities=found, pid=f"{name}:{title}:{base + i}")
            pages += 1
            stats.pages += 1
            if limit is not None and pages >= limit:
                return


def _documents(
    source: str, resolved: str, stats: CorpusStats, title_field: str, text_field: str, progress: bool,
    workers: int = 1,
) -> Iterator[tuple[str, Iterator[tuple[str, Any]], str]]:
    """(kind, documents, source name) per file of the source."""
    if resolved.startswith("hf:"):
        name, split = resolved[3:].rsplit(":", 1)
        stats.where = resolved
        docs = iter_hf_documents(name, split, title_field, text_field, stats)
        yield "records", _bar(docs, resolved, progress), name
        return
    path = Path(resolved)
    files = _files(path) if path.is_dir() else [path]
    for f in files:
        kind, name = _kind(f)  # type: ignore[misc]
        stats.where = str(f)  # names the file in a strict read's error
        if source.strip() == EMBEDDED_CORPUS:
            name = EMBEDDED_CORPUS
        index = find_index(f) if kind == "wiki" and workers > 1 else None
        if index is not None:
            pages = iter_pages_parallel(f, index, workers, stats, progress, render=clean_wikitext)
            yield "wiki_rendered", pages, name
        elif kind == "wiki":
            yield kind, iter_pages(f, stats, progress), name
        elif kind == "json":
            yield kind, _bar(iter_json_documents(f, title_field, text_field, stats), f.name, progress), name
        elif kind == "parquet":
            yield (
                kind,
                _bar(iter_parquet_documents(f, title_field, text_field, stats), f.name, progress),
                name,
            )
        else:
            yield kind, iter_text_document(f, stats), name


def _bar(docs: Iterator[tuple[str, str]], desc: str, progress: bool) -> Iterator[tuple[str, str]]:
    return iter(progress_bar(docs, desc=desc, unit="doc", leave=False)) if progress else docs
