"""``memtrain retriever serve``: a local search index behind the MEM1/Search-R1 retrieval-server API.

Why: MEM1 and Search-R1 agents search through ``POST /retrieve`` on a FastAPI server over wiki-18. The same
JSON here lets any such agent use our corpus (BM25 or MiniLM, CPU only), and
:class:`~memtrain.search.backends.HTTPRetriever` lets our agent use their server unchanged.

- ``POST /retrieve`` ``{"queries": [str, ...], "topk": int (optional, default the server's), "return_scores":
  bool (optional, default false, as Search-R1's)}`` -> ``{"result": [[{"document": {"id", "contents"},
  "score": float}, ...], ...]}``; with ``return_scores: false`` each inner list holds the documents
  themselves, as Search-R1 answers. ``contents`` is ``"Title"\\ntext``.
- ``GET /health`` -> ``{"status": "ok", "passages": n, "retriever": kind}``.
- A malformed request gets HTTP 400 ``{"detail": message}`` (FastAPI's error body); an unknown route 404.

Standard library only (``http.server``, one thread per connection; searches are serialised by the index).
Meant for a trusted network: there is no authentication.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from memtrain.config import option
from memtrain.errors import MemtrainError
from memtrain.search.backends import DEFAULT_TOPK, SearchBackend

log = logging.getLogger(__name__)


class BadRequest(Exception):
    """A client error, answered with HTTP 400."""


def parse_retrieve(body: Any, default_topk: int, max_topk: int, max_queries: int
                   ) -> tuple[list[str], int, bool]:
    """(queries, topk, return_scores) of a ``/retrieve`` body; :class:`BadRequest` when it is invalid."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object {\"queries\": [...], \"topk\": k}")
    queries = body.get("queries")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise BadRequest("'queries' must be a list of strings")
    if len(queries) > max_queries:
        raise BadRequest(f"at most {max_queries} queries per request, got {len(queries)}")
    topk = body.get("topk")
    if topk is None:
        topk = default_topk
    elif isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= max_topk:
        raise BadRequest(f"'topk' must be an integer in [1, {max_topk}], got {topk!r}")
    scores = body.get("return_scores", False)
    if not isinstance(scores, bool):
        raise BadRequest(f"'return_scores' must be true or false, got {scores!r}")
    return queries, topk, scores


class _Handler(BaseHTTPRequestHandler):
    server: RetrieverHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: an agent searches at every step

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        if self._route() == "/health":
            srv = self.server
            self._send(200, {"status": "ok", "passages": srv.n_passages, "retriever": srv.kind})
        else:
            self._send(404, {"detail": f"no route GET {self._route()}; POST /retrieve, GET /health"})

    def do_POST(self) -> None:  # noqa: N802
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        raw = self.rfile.read(length) if length > 0 else b""
        if self._route() != "/retrieve":
            self._send(404, {"detail": f"no route POST {self._route()}; POST /retrieve, GET /health"})
            return
        srv = self.server
        try:
            if length < 0:
                raise BadRequest("invalid Content-Length")
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise BadRequest(f"the request body is not valid JSON ({e})") from None
            queries, topk, scores = parse_retrieve(body, srv.default_topk, srv.max_topk, srv.max_queries)
        except BadRequest as e:
            self._send(400, {"detail": str(e)})
            return
        try:
            hits = srv.backend.search(queries, topk)
        except Exception as e:  # report, keep serving
            log.exception("search failed for %d queries", len(queries))
            self._send(500, {"detail": f"search failed: {type(e).__name__}: {e}"})
            return
        if scores:
            result = [[{"document": {"id": h.id, "contents": h.contents}, "score": h.score} for h in row]
                      for row in hits]
        else:
            result = [[{"id": h.id, "contents": h.contents} for h in row] for row in hits]
        self._send(200, {"result": result})


class RetrieverHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server over one :class:`SearchBackend`; :attr:`url` is its ``/retrieve`` endpoint."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: SearchBackend, default_topk: int = DEFAULT_TOPK,
                 max_topk: int = 100, max_queries: int = 4096, kind: str = "") -> None:
        super().__init__(address, _Handler)
        self.backend = backend
        self.default_topk = default_topk
        self.max_topk = max_topk
        self.max_queries = max_queries
        self.kind = kind or getattr(backend, "kind", type(backend).__name__)
        self.n_passages = len(backend) if hasattr(backend, "__len__") else None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/retrieve"


def make_retriever_server(backend: SearchBackend, host: str = "127.0.0.1", port: int = 8000,
                          default_topk: int = DEFAULT_TOPK, max_topk: int = 100, max_queries: int = 4096
                          ) -> RetrieverHTTPServer:
    """A ready-to-run server (call ``serve_forever()``, e.g. in a thread; port 0 picks a free port)."""
    return RetrieverHTTPServer((host, port), backend, default_topk, max_topk, max_queries)


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

    def validate(self) -> None:
        if not 1 <= self.topk <= self.max_topk:
            raise MemtrainError(f"RetrieverServeConfig.topk must be in [1, max_topk={self.max_topk}], "
                                f"got {self.topk}")
        if self.max_queries < 1:
            raise MemtrainError(f"RetrieverServeConfig.max_queries must be >= 1, got {self.max_queries}")


def serve(cfg: RetrieverServeConfig, on_ready: Callable[[RetrieverHTTPServer], None] | None = None) -> int:
    """``memtrain retriever serve``: index the corpus, then answer ``POST /retrieve`` until Ctrl-C (or until
    ``server.shutdown()``; ``on_ready(server)`` is called once it listens, which is how tests drive it)."""
    from memtrain.search.backends import LocalIndex

    cfg.validate()
    index = LocalIndex.from_corpus(cfg.corpus, cfg.kind, topk=cfg.topk, progress=cfg.progress)
    try:
        server = make_retriever_server(index, cfg.host, cfg.port, cfg.topk, cfg.max_topk, cfg.max_queries)
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
