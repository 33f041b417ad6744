"""HTTP for ``memtrain serve`` and ``memtrain retriever serve``: Starlette apps on uvicorn.

Why not the standard library's ``http.server`` (what both servers used before): its listen backlog of 5 reset
20 of 128 new connections at 32 concurrent clients, it had no read timeout (a client sending half a body
held a thread, and threads were unbounded), and it read up to 64 MiB of body before checking the API key.

The stack, the same for both servers (:class:`HTTPConfig` holds the knobs: ``http.*`` on the command line):

- **uvicorn** with its pure-Python h11 parser (pinned, so parsing does not depend on whether httptools is
  installed), on a socket bound and listening when the server object is made: ``port=0`` picks a free port
  and :attr:`HTTPServer.server_address` has it at once. The listen backlog is ``backlog`` (2048; the kernel
  caps it at ``net.core.somaxconn``), so a burst of new connections waits in the kernel's queue instead of
  being reset. A request h11 cannot parse (a malformed header, a bad ``Content-Length``) gets uvicorn's 400
  with a plain-text body and the connection is closed.
- **One event loop** that never blocks: JSON parsing, tokenising, searching and building responses run in
  Starlette's thread pool (``run_in_threadpool``); plain completions are awaited from the batcher's worker
  (:meth:`Batcher.completions`: no thread per request); a memory-agent read (a synchronous loop) takes a
  thread of its own, at most ``max_batch`` at once.
- **Timeouts.** A request's head (request line and headers) must arrive within ``read_timeout_s`` of the
  connection opening or of the previous response, else the connection is closed (uvicorn has no such
  deadline: :func:`_h11_with_head_deadline` adds it); its body within ``read_timeout_s`` of the head, else
  408. An idle keep-alive connection is closed after ``keepalive_timeout_s``.
- **Limits, checked before a byte of the body is read**, in this order: the API key (``memtrain serve``
  with ``api_key_env``: 401), the concurrency bound (at most ``max_concurrency`` requests handled at once,
  ``GET /health`` excepted: 503 with ``Retry-After: 1``, which OpenAI clients retry), the declared
  ``Content-Length`` (over ``max_body_bytes``: 413). The body is then read with the cap enforced as it
  streams in (a chunked body has no ``Content-Length``: 413 as soon as it passes the cap) and the deadline
  (408). An error sent before the body was read closes the connection, since the unread body cannot be
  skipped. The bound is ours, not uvicorn's ``limit_concurrency``, which also counts idle keep-alive
  connections and answers 503 in plain text. Worst case in memory: ``max_concurrency`` bodies of
  ``max_body_bytes``.
- **Strict JSON** (:func:`~memtrain.serving.protocol.loads`): ``NaN``, ``Infinity`` and numbers beyond a
  float are a 400 naming the field.

:class:`HTTPServer` holds what both servers share (socket, uvicorn, the bound, body reading, the error path);
:class:`MemtrainHTTPServer` is ``memtrain serve``'s routes, authentication, JSON and SSE responses; the
retriever's are in :mod:`memtrain.search.server`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from memtrain.config import option
from memtrain.errors import MemtrainError
from memtrain.serving import memory
from memtrain.serving.batcher import Batcher
from memtrain.serving.protocol import (
    ApiError,
    BadRequest,
    ChatRequest,
    Choice,
    apply_stop,
    context_error,
    loads,
    logprobs_body,
    parse_request,
    sampling_from,
    text_pieces,
)

if TYPE_CHECKING:
    from memtrain.serve import ServeConfig

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 5  # requests still running when shutdown() is called get this long to finish


@dataclass
class HTTPConfig:
    """Limits and timeouts of an HTTP server (``memtrain serve`` and ``memtrain retriever serve``)."""

    max_concurrency: int = option("requests handled at once (GET /health excepted); one more gets HTTP 503 "
                                  "with Retry-After: 1 (OpenAI clients retry it)", 512)
    max_body_bytes: int = option("largest request body in bytes (64 MiB is ~16M tokens of document); larger "
                                 "gets HTTP 413, checked on Content-Length and while the body streams in",
                                 64 * 2**20)
    read_timeout_s: float = option("seconds a client has to send a request's head (from connecting or from "
                                   "the previous response; else the connection is closed) and then its body "
                                   "(else HTTP 408)", 30.0)
    keepalive_timeout_s: float = option("seconds an idle keep-alive connection stays open", 5.0)
    backlog: int = option("listen backlog: new connections the kernel queues until the server accepts them "
                          "(capped by net.core.somaxconn)", 2048)

    def validate(self) -> None:
        for name in ("max_concurrency", "max_body_bytes", "read_timeout_s", "keepalive_timeout_s", "backlog"):
            if not getattr(self, name) > 0:
                raise MemtrainError(f"HTTPConfig.{name} (http.{name}) must be positive, got "
                                    f"{getattr(self, name)}")


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False).encode("utf-8"), status, headers,
                    media_type="application/json")


def _h11_with_head_deadline(timeout_s: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose next request head has not fully arrived within
    ``timeout_s`` of the connection opening or of the previous response (a slow-loris client)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class H11WithHeadDeadline(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm(None)

        def on_response_complete(self) -> None:
            finished = self.cycle  # a pipelined request may start a new cycle inside the call below
            super().on_response_complete()
            self._arm(finished)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _arm(self, cycle: Any) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()

            def expire() -> None:
                if self.cycle is cycle and not self.transport.is_closing():  # no new request has begun
                    self.transport.close()

            self._head_timer = self.loop.call_later(timeout_s, expire)

    return H11WithHeadDeadline


class Busy:
    """The concurrency bound: at most ``limit`` requests inside at once; one more is a 503 at once (no
    queueing: a client that retries later is better served than one that waits behind a full server).
    Used on the event loop only, so it needs no lock."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0

    def __enter__(self) -> None:
        if self.active >= self.limit:
            raise ApiError(f"the server is busy: {self.active} requests in flight (http.max_concurrency="
                           f"{self.limit}); retry later", status=503, code="server_busy")
        self.active += 1

    def __exit__(self, *exc: Any) -> None:
        self.active -= 1


async def read_body(request: Request, cfg: HTTPConfig) -> bytes:
    """The request body, at most ``cfg.max_body_bytes`` (413, on ``Content-Length`` first, then as it
    streams in), arriving within ``cfg.read_timeout_s`` (408)."""
    cap = cfg.max_body_bytes
    declared = request.headers.get("content-length")  # h11 has checked it is a number
    if declared is not None and int(declared) > cap:
        raise _too_large(f"{declared} bytes", cap)
    chunks, size = [], 0
    deadline = time.monotonic() + cfg.read_timeout_s
    while True:
        try:
            message = await asyncio.wait_for(request.receive(), deadline - time.monotonic())
        except TimeoutError:
            raise ApiError(f"the request body did not arrive within http.read_timeout_s={cfg.read_timeout_s} "
                           f"s ({size} bytes came)", status=408, kind="invalid_request_error",
                           code="read_timeout") from None
        if message["type"] == "http.disconnect":
            raise BadRequest("the client closed the connection before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise _too_large(f"more than {cap} bytes", cap)
        chunks.append(chunk)
        if not message.get("more_body", False):
            request.state.body_read = True
            return b"".join(chunks)


def _too_large(what: str, cap: int) -> ApiError:
    return ApiError(f"the request body is {what}, over the limit of {cap} bytes (http.max_body_bytes)",
                    status=413, kind="invalid_request_error", code="body_too_large")


class HTTPServer:
    """An ASGI app served by uvicorn on a socket bound at construction, with the limits of
    :class:`HTTPConfig`. Run it with :meth:`serve_forever` (on any thread; on the main thread Ctrl-C
    stops it gracefully) and stop it from another with :meth:`shutdown`, then :meth:`server_close`.

    Subclasses give the routes (:meth:`routes`) and the error body (:meth:`error_response`), and may
    check credentials (:meth:`authorize`); :meth:`endpoint` wraps a handler with all of it.
    """

    failure = "the request failed"  # how a 500's message starts

    def __init__(self, host: str, port: int, http: HTTPConfig):
        self.http = http
        self.busy = Busy(http.max_concurrency)
        self._socket = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else
                                            socket.AF_INET, backlog=http.backlog)
        self.server_address: tuple[str, int] = self._socket.getsockname()[:2]
        self._routes = self.routes()
        app = Starlette(routes=self._routes, exception_handlers={HTTPException: self._no_route})
        config = uvicorn.Config(
            app, http=_h11_with_head_deadline(http.read_timeout_s), ws="none", lifespan="off",
            log_config=None, access_log=False, proxy_headers=False, backlog=http.backlog,
            timeout_keep_alive=http.keepalive_timeout_s,  # type: ignore[arg-type] (a float works)
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        self._uvicorn = uvicorn.Server(config)
        self._serving = threading.Event()
        self._stopped = threading.Event()

    # ----- for subclasses

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def error_response(self, error: ApiError, headers: dict[str, str]) -> Response:
        raise NotImplementedError

    def authorize(self, request: Request) -> None:
        """Raise a 401 :class:`ApiError` unless ``request`` carries valid credentials (none needed here)."""

    def endpoint(self, handler: Callable[[Request], Awaitable[Response]], guarded: bool = True
                 ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the key check and the concurrency bound (``guarded``), with every error
        answered in the server's error body."""

        async def run(request: Request) -> Response:
            try:
                if not guarded:
                    return await handler(request)
                self.authorize(request)
                with self.busy:
                    return await handler(request)
            except ApiError as e:
                error = e
            except Exception as e:  # report, keep serving
                log.exception("%s %s failed", request.method, request.url.path)
                error = ApiError(f"{self.failure}: {type(e).__name__}: {e}")
            headers = {}
            if error.status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            if error.status == 503:
                headers["Retry-After"] = "1"
            if request.method == "POST" and not getattr(request.state, "body_read", False):
                headers["Connection"] = "close"  # the unread body cannot be skipped
            return self.error_response(error, headers)

        return run

    async def _no_route(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        what = "no route" if status == 404 else f"HTTP {status} for"  # 405: a known path, another method
        error = ApiError(f"{what} {request.method} {request.url.path}; routes: {self.route_list()}",
                         status=status, kind="not_found_error")
        return self.error_response(error, dict(getattr(exc, "headers", None) or {}))

    def route_list(self) -> str:
        return ", ".join(f"{'/'.join(sorted(r.methods - {'HEAD'}))} {r.path}" for r in self._routes
                         if r.methods)

    # ----- lifecycle

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or Ctrl-C / SIGTERM, on the main thread)."""
        self._serving.set()
        try:
            asyncio.run(self._uvicorn.serve(sockets=[self._socket]))
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (running requests get a few seconds) and wait until it returns."""
        self._uvicorn.should_exit = True
        if self._serving.is_set():
            self._stopped.wait()

    def server_close(self) -> None:
        self._socket.close()


# --------------------------------------------------------------------------------------- memtrain serve


class MemtrainHTTPServer(HTTPServer):
    """``memtrain serve``: the OpenAI routes and the memory agent over a :class:`Batcher`, which
    ``server_close`` also stops."""

    failure = "generation failed"

    def __init__(self, engine: Any, cfg: ServeConfig, api_key: str | None = None):
        self.cfg = cfg
        self.engine = engine
        self.tokenizer = getattr(engine, "tokenizer", None)
        self.model_name = cfg.served_model_name or cfg.model
        self.created = int(time.time())
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.context_length = cfg.max_model_len or _model_context(engine)
        self._reads: Any = None  # the thread limiter of memory-agent reads, made on the event loop
        super().__init__(cfg.host, cfg.port, cfg.http)
        self.batcher = Batcher(engine, cfg.batch_window_ms / 1000.0, cfg.max_batch, cfg.max_queue)

    def __repr__(self) -> str:  # never show the key
        return f"MemtrainHTTPServer({self.url!r}, model={self.model_name!r})"

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://{host}:{port}/v1"

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.endpoint(self._health, guarded=False), methods=["GET"]),
            Route("/v1/models", self.endpoint(self._models), methods=["GET"]),
            Route("/v1/chat/completions", self.endpoint(self._chat), methods=["POST"]),
            Route("/v1/memory/answer", self.endpoint(self._memory_answer), methods=["POST"]),
        ]

    def error_response(self, error: ApiError, headers: dict[str, str]) -> Response:
        return json_response(error.status, error.body(), headers)

    def authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.api_key)):
            raise ApiError("missing or incorrect API key: send 'Authorization: Bearer <key>'", status=401,
                           kind="invalid_request_error", code="invalid_api_key")

    def server_close(self) -> None:
        super().server_close()
        self.batcher.close()

    # ----- routes

    async def _health(self, request: Request) -> Response:
        """Liveness and load, for probes and load tests; never needs the key nor counts against the bound."""
        b = self.batcher
        return json_response(200, {"status": "ok", "model": self.model_name, "queued": b.queued,
                                   "batches": b.n_batches, "conversations": b.n_conversations})

    async def _models(self, request: Request) -> Response:
        model = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "memtrain",
                 "max_model_len": self.context_length}
        return json_response(200, {"object": "list", "data": [model]})

    async def _chat(self, request: Request) -> Response:
        deadline = self.deadline()
        body = await run_in_threadpool(loads, await read_body(request, self.http))
        req = parse_request(body, self.cfg.default_max_tokens)
        if req.n > self.batcher.max_queue:  # could never be admitted: a client error, not a 503
            raise BadRequest(f"'n' must be <= the server's max_queue ({self.batcher.max_queue})", "n")
        if req.memory_agent is not None:
            choices, usage = await self._in_read_thread(self._memory_choices, req, deadline)
            return await run_in_threadpool(self._chat_response, req, choices, usage, None)
        prompt_ids, samplings = await run_in_threadpool(self._plain_samplings, req)
        comps = await self.batcher.completions([req.conversation] * req.n, samplings, deadline)
        return await run_in_threadpool(self._plain_response, req, comps, prompt_ids)

    async def _memory_answer(self, request: Request) -> Response:
        deadline = self.deadline()
        body = await run_in_threadpool(loads, await read_body(request, self.http))
        return await self._in_read_thread(self._memory_answer_response, body, deadline)

    async def _in_read_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on a thread of the memory-agent reads (at most ``max_batch`` at once: more reads
        could not share a generate call; the others wait for a thread)."""
        if self._reads is None:
            self._reads = anyio.CapacityLimiter(self.cfg.max_batch)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._reads)

    # ----- /v1/chat/completions, on threads

    def _plain_samplings(self, req: ChatRequest) -> tuple[list[int] | None, list[Any]]:
        prompt_ids = self.prompt_ids(req.conversation)
        sampling = dataclasses.replace(req.sampling, max_new_tokens=self.budget(prompt_ids, req.max_tokens))
        if req.n == 1:
            return prompt_ids, [sampling]
        seeds = [None if sampling.seed is None else sampling.seed + i for i in range(req.n)]
        return prompt_ids, [dataclasses.replace(sampling, seed=s) for s in seeds]

    def _plain_response(self, req: ChatRequest, comps: list[Any], prompt_ids: list[int] | None) -> Response:
        choices = [apply_stop(self.tokenizer, c, req.stop) for c in comps]
        n_prompt = len(comps[0].prompt_ids) or len(prompt_ids or [])
        n_completion = sum(len(ch.token_ids) for ch in choices)
        usage = {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                 "total_tokens": n_prompt + n_completion}
        return self._chat_response(req, choices, usage, comps[0].prompt_ids or prompt_ids)

    def _memory_choices(self, req: ChatRequest, deadline: float | None
                        ) -> tuple[list[Choice], dict[str, int]]:
        spec = dict(req.memory_agent or {})
        question = next((m["content"] for m in reversed(req.conversation) if m["role"] == "user"), "")
        if req.max_tokens is not None and spec.get("answer_tokens") is None:
            spec["answer_tokens"] = req.max_tokens
        trajs = self.run_memory(spec, question, req.sampling, req.n, deadline, "memory_agent.")
        choices = []
        for tr in trajs:
            final = tr.turns[-1].completion
            extra: dict[str, Any] = {"answer": tr.answer, "n_chunks": len(tr.memories) - 1}
            if spec.get("return_trace"):
                extra.update(memories=tr.memories, trace=memory.trace_rows(tr))
            choices.append(Choice(final.text, list(final.completion_ids), final.finish_reason, final.logprobs,
                                  extra))
        return choices, memory.usage(trajs)

    def _chat_response(self, req: ChatRequest, choices: list[Choice], usage: dict[str, int],
                       prompt_ids: list[int] | None) -> Response:
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            events = self._stream_events(rid, created, choices, usage if req.include_usage else None)
            return StreamingResponse(_replay(events), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        payload: dict[str, Any] = {
            "id": rid, "object": "chat.completion", "created": created, "model": self.model_name,
            "choices": [], "usage": usage,
        }
        for i, ch in enumerate(choices):
            out: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": ch.text},
                "finish_reason": ch.finish_reason,
                "logprobs": logprobs_body(self.tokenizer, ch) if req.logprobs else None,
            }
            if req.return_token_ids:
                out["token_ids"] = ch.token_ids
            if ch.extra is not None:
                out["memory_agent"] = ch.extra
            payload["choices"].append(out)
        if req.return_token_ids and req.memory_agent is None:
            payload["prompt_token_ids"] = prompt_ids
        return json_response(200, payload)

    def _stream_events(self, rid: str, created: int, choices: list[Choice], usage: dict[str, int] | None
                       ) -> list[bytes]:
        """The SSE events of a streamed answer: the role delta, token-piece deltas and the finish chunk of
        each choice, the usage chunk if asked, ``[DONE]``."""
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": self.model_name}
        with_usage = {"usage": None} if usage is not None else {}
        events = []

        def event(choice: dict[str, Any] | None, **extra: Any) -> None:
            data = {**base, "choices": [choice] if choice else [], **with_usage, **extra}
            events.append(b"data: " + json.dumps(data).encode("utf-8") + b"\n\n")

        for i, ch in enumerate(choices):
            event({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                   "finish_reason": None})
            for piece in text_pieces(self.tokenizer, ch.token_ids, ch.text):
                event({"index": i, "delta": {"content": piece}, "logprobs": None, "finish_reason": None})
            last: dict[str, Any] = {"index": i, "delta": {}, "logprobs": None,
                                    "finish_reason": ch.finish_reason}
            if ch.extra is not None:
                last["memory_agent"] = ch.extra
            event(last)
        if usage is not None:
            event(None, usage=usage)
        events.append(b"data: [DONE]\n\n")
        return events

    # ----- /v1/memory/answer, on a thread

    def _memory_answer_response(self, body: Any, deadline: float | None) -> Response:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        question = body.get("question")
        if not isinstance(question, str):
            raise BadRequest("'question' must be a string", "question")
        options = {k: v for k, v in body.items() if k in (*memory.AGENT_FIELDS, "document", "return_trace")}
        sampling = sampling_from(body, 0.0, 1)  # greedy by default here: a plain call wants the best answer
        (tr,) = self.run_memory(options, question, sampling, 1, deadline, "")
        final = tr.turns[-1].completion
        payload: dict[str, Any] = {
            "id": f"memans-{uuid.uuid4().hex}", "object": "memory.answer", "created": int(time.time()),
            "model": self.model_name, "answer": tr.answer, "response": final.text,
            "finish_reason": final.finish_reason, "n_chunks": len(tr.memories) - 1,
            "usage": memory.usage([tr]),
        }
        if body.get("return_trace"):
            payload.update(memories=tr.memories, trace=memory.trace_rows(tr))
        return json_response(200, payload)

    # ----- budgets and the memory agent

    def deadline(self) -> float | None:
        t = self.cfg.request_timeout_s
        return time.monotonic() + t if t and t > 0 else None

    def prompt_ids(self, conversation: list[dict[str, str]]) -> list[int] | None:
        if self.tokenizer is None:
            return None
        from memtrain.agent.engine import render

        return render(self.tokenizer, conversation)

    def budget(self, prompt_ids: list[int] | None, max_tokens: int | None) -> int:
        """The completion budget: ``max_tokens`` if it fits the context (else a 400), or the default cut to
        what the context leaves."""
        limit = self.context_length
        if limit is None or prompt_ids is None:
            return max_tokens or self.cfg.default_max_tokens
        p = len(prompt_ids)
        if max_tokens is None:
            if p >= limit:
                raise context_error(limit, p, None)
            return min(self.cfg.default_max_tokens, limit - p)
        if p + max_tokens > limit:
            raise context_error(limit, p, max_tokens)
        return max_tokens

    def check_context(self, conversation: list[dict[str, str]], max_new_tokens: int) -> None:
        limit = self.context_length
        if limit is None or self.tokenizer is None:
            return
        p = len(self.prompt_ids(conversation) or [])
        if p + max_new_tokens > limit:
            raise context_error(limit, p, max_new_tokens)

    def run_memory(self, spec: dict[str, Any], question: str, sampling: Any, n: int, deadline: float | None,
                   where: str) -> list[Any]:
        """``n`` memory-agent reads through this server's batcher (:func:`memory.read`)."""
        return memory.read(self.batcher, self.tokenizer, self.context_length, self.cfg.agent_defaults(), spec,
                           question, sampling, n, deadline, self.check_context, where)


async def _replay(events: list[bytes]) -> AsyncIterator[bytes]:
    for e in events:
        yield e


def _model_context(engine: Any) -> int | None:
    config = getattr(getattr(engine, "model", None), "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None
