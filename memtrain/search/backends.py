"""Search backends: the one interface an agent searches through, and its implementations.

``search(queries, topk)`` takes a batch of queries (an agent step's searches of a whole batch of
trajectories) and answers each with up to ``topk`` :class:`~memtrain.records.Hit` records, best first.
Batched because every implementation is cheaper per query in batches: one BM25 call, one encoder forward,
one HTTP request.

- :class:`LocalIndex` -- in process, over a passage file; ``kind=bm25`` (``bm25s``, seconds for 18k
  passages) or ``kind=dense`` (all-MiniLM-L6-v2 cosine; the pool's embeddings are computed once with a
  progress bar and cached under the memtrain cache, keyed by the encoder and a hash of every passage, so a
  changed corpus is re-encoded and an unchanged one never is).
- :class:`HTTPRetriever` -- a client of a MEM1/Search-R1 retrieval server (``memtrain retriever serve`` is
  one): ``POST /retrieve {"queries", "topk", "return_scores": true}`` ->
  ``{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}``.

:class:`SearchConfig` + :func:`make_search` pick one; that config is what agent and eval recipes embed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from memtrain.config import option
from memtrain.errors import MemtrainError
from memtrain.records import Hit

log = logging.getLogger(__name__)

DEFAULT_TOPK = 3  # MEM1's and Search-R1's


@runtime_checkable
class SearchBackend(Protocol):
    """Batched top-k search over a passage corpus."""

    def search(self, queries: list[str], topk: int | None = None) -> list[list[Hit]]:
        """For each query, up to ``topk`` hits, best first (``None``: the backend's configured ``topk``).

        Fewer come back when fewer passages match at all (BM25 scores 0 for a passage sharing no word).
        """
        ...


# ---------------------------------------------------------------------------------------------- in process


class LocalIndex:
    """BM25 or dense search over passages held in memory.

    ``passages`` are hits without scores (``Hit.from_contents(id, contents)``), e.g. from
    :func:`memtrain.search.corpus.load_passages`. ``retriever`` is any retriever of
    :mod:`memtrain.tasks.retrieval` with ``index`` and ``topk_scored``; it indexes ``title + " " + text``.
    Thread-safe: searches are serialised by a lock (the retrievers are CPU-bound and not re-entrant).
    """

    def __init__(self, passages: Sequence[Hit], retriever: Any, topk: int = DEFAULT_TOPK,
                 kind: str = "custom") -> None:
        if not passages:
            raise MemtrainError("cannot build a search index over an empty passage list")
        self.passages = list(passages)
        self.retriever = retriever
        self.topk = topk
        self.kind = kind
        self._lock = threading.Lock()
        retriever.index([f"{p.title} {p.text}" if p.title else p.text for p in self.passages])

    @classmethod
    def from_corpus(cls, corpus: str | Path, kind: Literal["bm25", "dense"] = "bm25",
                    topk: int = DEFAULT_TOPK, progress: bool = True) -> LocalIndex:
        """An index over ``passages.jsonl`` (or a folder holding one, or any ``{"id", "contents"}`` JSONL)."""
        from memtrain.search.corpus import load_passages
        from memtrain.tasks.retrieval import make_retriever

        return cls(load_passages(corpus), make_retriever(kind, progress=progress), topk, kind)

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, queries: list[str], topk: int | None = None) -> list[list[Hit]]:
        k = self.topk if topk is None else topk
        if not queries:
            return []
        with self._lock:
            rows = self.retriever.topk_scored([str(q) for q in queries], k)
        out = []
        for row in rows:
            hits = []
            for i, score in row:
                p = self.passages[i]
                hits.append(Hit(p.id, p.title, p.contents, score))
            out.append(hits)
        return out


# ---------------------------------------------------------------------------------------------- over HTTP


class HTTPRetriever:
    """Client of a MEM1/Search-R1-style retrieval server.

    ``url`` is the ``/retrieve`` endpoint (a URL without a path, ``http://host:port``, gets ``/retrieve``
    appended). Each request waits at most ``timeout_s``; connection errors, timeouts and HTTP 5xx are
    retried ``retries`` times with exponential backoff (``backoff_s``, doubling), then raise a
    :class:`MemtrainError` naming the URL. A 4xx answer or a body that is not the expected JSON raises at
    once (retrying would not change it). Batches larger than ``max_batch`` queries are split.
    """

    def __init__(self, url: str, timeout_s: float = 30.0, retries: int = 3, topk: int = DEFAULT_TOPK,
                 backoff_s: float = 0.5, max_batch: int = 512) -> None:
        import httpx

        self.url = normalise_url(url)
        self.timeout_s = timeout_s
        self.retries = retries
        self.topk = topk
        self.backoff_s = backoff_s
        self.max_batch = max_batch
        self._client = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HTTPRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def search(self, queries: list[str], topk: int | None = None) -> list[list[Hit]]:
        k = self.topk if topk is None else topk
        out: list[list[Hit]] = []
        for b in range(0, len(queries), self.max_batch):
            batch = [str(q) for q in queries[b : b + self.max_batch]]
            out.extend(parse_result(self._post({"queries": batch, "topk": k, "return_scores": True}),
                                    len(batch), self.url))
        return out

    def _post(self, payload: dict[str, Any]) -> Any:
        import httpx

        attempts = self.retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                r = self._client.post(self.url, json=payload)
            except httpx.TransportError as e:  # refused, reset, DNS, timeouts
                if last:
                    raise MemtrainError(
                        f"retrieval server {self.url} unreachable after {attempts} attempt(s): "
                        f"{type(e).__name__}: {e}; start one (`memtrain retriever serve`) or fix url="
                    ) from None
                why = f"{type(e).__name__}: {e}"
            else:
                if r.status_code < 400:
                    try:
                        return r.json()
                    except ValueError:
                        raise MemtrainError(f"retrieval server {self.url} answered malformed JSON "
                                            f"(HTTP {r.status_code}): {r.text[:200]!r}") from None
                if r.status_code < 500 or last:
                    tried = f" after {attempts} attempt(s)" if r.status_code >= 500 else ""
                    raise MemtrainError(f"retrieval server {self.url} answered HTTP {r.status_code}{tried}: "
                                        f"{r.text[:300]!r}")
                why = f"HTTP {r.status_code}"
            wait = self.backoff_s * 2 ** attempt
            log.warning("retrieval server %s: %s; retry %d/%d in %.1f s", self.url, why, attempt + 1,
                        self.retries, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")


def normalise_url(url: str) -> str:
    """``http://host:port`` -> ``http://host:port/retrieve``; a URL with a path is kept as given."""
    from urllib.parse import urlsplit

    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.netloc:
        raise MemtrainError(f"not a retrieval server URL: {url!r} (expected http://host:port/retrieve)")
    base = f"{parts.scheme}://{parts.netloc}"
    return f"{base}{parts.path}" if parts.path.strip("/") else f"{base}/retrieve"


def parse_result(body: Any, n_queries: int, url: str = "the retrieval server") -> list[list[Hit]]:
    """Hits from a ``/retrieve`` answer: items ``{"document", "score"}`` (``return_scores: true``) or bare
    documents (``false``); a document is ``{"id", "contents"}`` (or ``{"id", "title", "text"}``)."""

    def bad(why: str) -> MemtrainError:
        return MemtrainError(f"retrieval server {url} answered unexpected JSON ({why}); expected "
                             '{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}')

    if not isinstance(body, dict) or not isinstance(body.get("result"), list):
        raise bad("no 'result' list")
    result = body["result"]
    if len(result) != n_queries:
        raise bad(f"{len(result)} result lists for {n_queries} queries")
    out = []
    for qi, row in enumerate(result):
        if not isinstance(row, list):
            raise bad(f"result[{qi}] is not a list")
        hits = []
        for j, item in enumerate(row):
            if not isinstance(item, dict):
                raise bad(f"result[{qi}][{j}] is not an object")
            doc, score = (item["document"], item.get("score")) if "document" in item else (item, None)
            if not isinstance(doc, dict):
                raise bad(f"result[{qi}][{j}].document is not an object")
            contents = doc.get("contents")
            if contents is None and isinstance(doc.get("text"), str):
                contents = Hit.format_contents(str(doc.get("title", "")), doc["text"])
            if not isinstance(contents, str):
                raise bad(f"result[{qi}][{j}] has no string 'contents'")
            if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
                raise bad(f"result[{qi}][{j}].score is not a number")
            hits.append(Hit.from_contents(str(doc.get("id", "")), contents,
                                          None if score is None else float(score)))
        out.append(hits)
    return out


# ---------------------------------------------------------------------------------------------- choosing


@dataclass
class SearchConfig:
    """Which search backend an agent uses (embedded by the agent and eval recipes)."""

    kind: Literal["bm25", "dense", "http"] = option(
        "bm25 | dense (all-MiniLM-L6-v2, embeddings cached) over `corpus` in process; http: the retrieval "
        "server at `url` (MEM1/Search-R1 or `memtrain retriever serve`)", "bm25")
    corpus: str = option("bm25/dense: passages.jsonl or the folder holding it (`memtrain data build "
                         "search_corpus_cpu` writes data/search_corpus_cpu)", "data/search_corpus_cpu")
    url: str = option("http: the server's /retrieve endpoint", "http://127.0.0.1:8000/retrieve")
    topk: int = option("passages returned per search (MEM1 and Search-R1: 3)", DEFAULT_TOPK)
    timeout_s: float = option("http: seconds to wait for one answer", 30.0)
    retries: int = option("http: retries on connection errors, timeouts and HTTP 5xx (backoff 0.5 s, "
                          "doubling)", 3)
    progress: bool = option("dense: show the progress bar while encoding the corpus", True)

    def validate(self) -> None:
        if self.topk < 1:
            raise MemtrainError(f"SearchConfig.topk must be >= 1, got {self.topk}")
        if self.timeout_s <= 0:
            raise MemtrainError(f"SearchConfig.timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise MemtrainError(f"SearchConfig.retries must be >= 0, got {self.retries}")


def make_search(cfg: SearchConfig) -> SearchBackend:
    """The backend ``cfg`` names (a local index is built here: seconds for BM25, cached for dense)."""
    cfg.validate()
    if cfg.kind == "http":
        return HTTPRetriever(cfg.url, timeout_s=cfg.timeout_s, retries=cfg.retries, topk=cfg.topk)
    if cfg.kind in ("bm25", "dense"):
        return LocalIndex.from_corpus(cfg.corpus, cfg.kind, topk=cfg.topk, progress=cfg.progress)
    raise MemtrainError(f"SearchConfig.kind must be bm25, dense or http, got {cfg.kind!r}")
