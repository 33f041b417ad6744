"""``memtrain retriever serve``: a local search index behind the MEM1/Search-R1 retrieval-server API.

Why: MEM1 and Search-R1 agents search through ``POST /retrieve`` on a FastAPI server over wiki-18. The same
JSON here lets any such agent use our corpus (BM25 or MiniLM, CPU only), and
:class:`~memtrain.search.backends.HTTPRetriever` lets our agent use their server unchanged.

- ``POST /retrieve`` ``{"queries": [str, ...], "topk": int (optional, default the server's), "return_scores":
  bool (optional, default false, as Search-R1's)}`` -> ``{"result": [[{"document": {"id", "contents"},
  "score": float}, ...], ...]}``; with ``return_scores: false`` each inner list holds the documents
  themselves, as Search-R1 answers. ``contents`` is ``"Title"\\ntext``.
- ``GET /health`` -> ``{"status": "ok", "passages": n, "retriever": kind}``.
- A malformed request gets HTTP 400 ``{"detail": message}`` (FastAPI's error body); an unknown route 404;
  every other error (408, 413, 503, 500) the same body.

HTTP as ``memtrain serve`` (:mod:`memtrain.serving.http`: uvicorn + Starlette, a listen backlog of 2048, a
concurrency bound with 503 beyond it, a body cap, read and keep-alive timeouts, strict JSON; knobs
``http.*``). Searches run in Starlette's thread pool, serialised by the index's lock, so the event loop
keeps accepting and answering while one runs. Meant for a trusted network: there is no authentication.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from memtrain.config import option
from memtrain.errors import MemtrainError
from memtrain.search.backends import DEFAULT_TOPK, SearchBackend
from memtrain.serving.http import HTTPConfig, HTTPServer, json_response, read_body
from memtrain.serving.protocol import ApiError, BadRequest, loads, show

log = logging.getLogger(__name__)


def parse_retrieve(body: Any, default_topk: int, max_topk: int, max_queries: int
                   ) -> tuple[list[str], int, bool]:
    """(queries, topk, return_scores) of a ``/retrieve`` body; :class:`BadRequest` (400) if it is invalid."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object {\"queries\": [...], \"topk\": k}")
    queries = body.get("queries")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise BadRequest("'queries' must be a list of strings", "queries")
    if len(queries) > max_queries:
        raise BadRequest(f"at most {max_queries} queries per request, got {len(queries)}", "queries")
    topk = body.get("topk")
    if topk is None:
        topk = default_topk
    elif isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= max_topk:
        raise BadRequest(f"'topk' must be an integer in [1, {max_topk}], got {show(topk)}", "topk")
    scores = body.get("return_scores", False)
    if not isinstance(scores, bool):
        raise BadRequest(f"'return_scores' must be true or false, got {show(scores)}", "return_scores")
    return queries, topk, scores


class RetrieverHTTPServer(HTTPServer):
    """The MEM1/Search-R1 retrieval API over one :class:`SearchBackend`, already listening once made;
    :attr:`url` is its ``/retrieve`` endpoint."""

    failure = "search failed"

    def __init__(self, address: tuple[str, int], backend: SearchBackend, default_topk: int = DEFAULT_TOPK,
                 max_topk: int = 100, max_queries: int = 4096, kind: str = "", http: HTTPConfig | None = None
                 ) -> None:
        self.backend = backend
        self.default_topk = default_topk
        self.max_topk = max_topk
        self.max_queries = max_queries
        self.kind = kind or getattr(backend, "kind", type(backend).__name__)
        self.n_passages = len(backend) if hasattr(backend, "__len__") else None
        super().__init__(address[0], address[1], http or HTTPConfig())

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://{host}:{port}/retrieve"

    def routes(self) -> list[Route]:
        return [Route("/retrieve", self.endpoint(self._retrieve), methods=["POST"]),
                Route("/health", self.endpoint(self._health, guarded=False), methods=["GET"])]

    def error_response(self, error: ApiError, headers: dict[str, str]) -> Response:
        return json_response(error.status, {"detail": str(error)}, headers)

    async def _health(self, request: Request) -> Response:
        return json_response(200, {"status": "ok", "passages": self.n_passages, "retriever": self.kind})

    async def _retrieve(self, request: Request) -> Response:
        return await run_in_threadpool(self._answer, await read_body(request, self.http))

    def _answer(self, raw: bytes) -> Response:
        queries, topk, scores = parse_retrieve(loads(raw), self.default_topk, self.max_topk, self.max_queries)
        hits = self.backend.search(queries, topk)
        if scores:
            result = [[{"document": {"id": h.id, "contents": h.contents}, "score": h.score} for h in row]
                      for row in hits]
        else:
            result = [[{"id": h.id, "contents": h.contents} for h in row] for row in hits]
        return json_response(200, {"result": result})


def make_retriever_server(backend: SearchBackend, host: str = "127.0.0.1", port: int = 8000,
                          default_topk: int = DEFAULT_TOPK, max_topk: int = 100, max_queries: int = 4096,
                          http: HTTPConfig | None = None) -> RetrieverHTTPServer:
    """A ready-to-run server, already listening (call ``serve_forever()``, e.g. in a thread, and
    ``shutdown()`` from another; port 0 picks a free port, then in ``server.url``)."""
    return RetrieverHTTPServer((host, port), backend, default_topk, max_topk, max_queries, http=http)


@dataclass
class RetrieverServeConfig:
    corpus: str = option("passages.jsonl ({id, contents} rows, wiki-18 format) or the folder holding it "
                         "(`memtrain data build search_corpus_cpu` writes data/search_corpus_cpu)",
                         "data/search_corpus_cpu")
    kind: Literal["bm25", "dense"] = option("bm25, or dense (all-MiniLM-L6-v2; the corpus is encoded once "
                                            "and cached, ~18 min for 18k passages on 2 CPU cores)", "bm25")
    topk: int = option("passages per query when a request sends no topk (MEM1/Search-R1: 3)", DEFAULT_TOPK)
    max_topk: int = option("largest topk a request may ask for", 100)
    max_queries: int = option("most queries one request may carry", 4096)
    host: str = option("interface to bind (no authentication: keep it local)", "127.0.0.1")
    port: int = option("TCP port (0 picks a free one)", 8000)
    progress: bool = option("show the progress bar while encoding the corpus (dense)", True)
    http: HTTPConfig = option("HTTP limits and timeouts (max_concurrency, max_body_bytes, read_timeout_s, "
                              "keepalive_timeout_s, backlog)", factory=HTTPConfig)

    def validate(self) -> None:
        if not 1 <= self.topk <= self.max_topk:
            raise MemtrainError(f"RetrieverServeConfig.topk must be in [1, max_topk={self.max_topk}], "
                                f"got {self.topk}")
        if self.max_queries < 1:
            raise MemtrainError(f"RetrieverServeConfig.max_queries must be >= 1, got {self.max_queries}")
        self.http.validate()


def serve(cfg: RetrieverServeConfig, on_ready: Callable[[RetrieverHTTPServer], None] | None = None) -> int:
    """``memtrain retriever serve``: index the corpus, then answer ``POST /retrieve`` until Ctrl-C (or until
    ``server.shutdown()``; ``on_ready(server)`` is called once it listens, which is how tests drive it)."""
    from memtrain.search.backends import LocalIndex

    cfg.validate()
    index = LocalIndex.from_corpus(cfg.corpus, cfg.kind, topk=cfg.topk, progress=cfg.progress)
    try:
        server = make_retriever_server(index, cfg.host, cfg.port, cfg.topk, cfg.max_topk, cfg.max_queries,
                                       cfg.http)
    except OSError as e:
        raise MemtrainError(f"cannot listen on {cfg.host}:{cfg.port}: {e}; pick another port=") from None
    print(f"memtrain retriever serve: {server.url} ({cfg.kind} over {len(index)} passages of {cfg.corpus}); "
          "Ctrl-C to stop", flush=True)
    if on_ready is not None:
        on_ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
