"""``memtrain serve``: an OpenAI-compatible chat-completions server over the HF engine.

Why: the memory agent sends each step of a batch of documents as a burst of independent single-turn
requests. A server is only useful to it if it batches those requests, so a worker thread coalesces the
requests that arrive within ``batch_window_ms`` of each other (grouped by identical sampling parameters)
into one batched ``generate``. Any client of the OpenAI API (including :class:`OpenAIEngine`) can then drive
a local model, and several evaluation or training processes can share one model in memory.

Endpoints: ``POST /v1/chat/completions`` (non-streaming, ``n=1``; ``return_token_ids`` adds the prompt and
completion token ids like vLLM does), ``GET /v1/models``, ``GET /health``. Errors use the OpenAI error body.
Standard library only (``http.server``); meant for a trusted network, there is no authentication.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import astuple, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from memtrain.agent.engines import EngineConfig
from memtrain.config import option
from memtrain.errors import MemtrainError

log = logging.getLogger(__name__)


class BadRequest(Exception):
    """A client error, answered with HTTP 400 and an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass
class _Pending:
    conversation: list[dict[str, str]]
    sampling: Any  # memtrain.agent.engine.Sampling
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class Batcher:
    """Coalesce concurrent requests into batched ``engine.generate`` calls on one worker thread.

    The engine is used from this thread only, so it needs no locking. A request waits at most
    ``window_s`` for companions, and batches are capped at ``max_batch`` conversations.
    """

    def __init__(self, engine: Any, window_s: float = 0.005, max_batch: int = 64):
        self.engine = engine
        self.window_s = window_s
        self.max_batch = max_batch
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="memtrain-batcher", daemon=True)
        self.batches: list[int] = []  # sizes of the generate calls made, for tests and logs
        self._thread.start()

    def submit(self, conversation: list[dict[str, str]], sampling: Any) -> Any:
        """Block until this conversation's completion is ready; re-raise the engine's error if it failed."""
        item = _Pending(conversation, sampling)
        self._queue.put(item)
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _gather(self, first: _Pending) -> tuple[list[_Pending], bool]:
        items, deadline = [first], time.monotonic() + self.window_s
        while len(items) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                nxt = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return items, True
            items.append(nxt)
        return items, False

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            items, stop = self._gather(first)
            groups: dict[tuple, list[_Pending]] = {}
            for it in items:
                groups.setdefault(astuple(it.sampling), []).append(it)
            for group in groups.values():
                self.batches.append(len(group))
                try:
                    comps = self.engine.generate([g.conversation for g in group], group[0].sampling)
                    for g, c in zip(group, comps, strict=True):
                        g.result = c
                except Exception as e:  # report to every waiting request, keep serving
                    log.exception("generate failed for a batch of %d", len(group))
                    for g in group:
                        g.error = e
                for g in group:
                    g.done.set()
            if stop:
                return


def _number(body: dict[str, Any], name: str, default: Any, kind: type, lo: float | None = None) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and int(value) != value):
        raise BadRequest(f"'{name}' must be a {kind.__name__}, got {value!r}", name)
    if lo is not None and value < lo:
        raise BadRequest(f"'{name}' must be >= {lo}, got {value!r}", name)
    return kind(value)


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'", "messages")
        content = m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(
                p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string", "messages")
        out.append({"role": m["role"], "content": content})
    return out


def parse_request(body: Any) -> tuple[list[dict[str, str]], Any, bool]:
    """(conversation, Sampling, return_token_ids) from a chat-completions body; BadRequest when invalid."""
    from memtrain.agent.engine import Sampling

    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if body.get("stream"):
        raise BadRequest("streaming is not supported by memtrain serve; send stream=false", "stream")
    if _number(body, "n", 1, int) != 1:
        raise BadRequest("only n=1 is supported", "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    sampling = Sampling(
        max_new_tokens=_number({"max_tokens": max_tokens}, "max_tokens", 256, int, 1),
        temperature=_number(body, "temperature", 1.0, float, 0),  # OpenAI's default is 1
        top_p=_number(body, "top_p", 1.0, float, 0),
        top_k=max(0, _number(body, "top_k", 0, int)),
        seed=_number(body, "seed", None, int),
    )
    if not 0 < sampling.top_p <= 1:
        raise BadRequest(f"'top_p' must be in (0, 1], got {sampling.top_p}", "top_p")
    return _messages(body), sampling, bool(body.get("return_token_ids"))


class _Handler(BaseHTTPRequestHandler):
    server: MemtrainHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: the agent sends many requests per step

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
    ):
        self._send(status, {"error": {"message": message, "type": kind, "param": param, "code": None}})

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            self._send(200, {"status": "ok", "model": self.server.model_name})
        elif path == "/v1/models":
            self._send(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": self.server.model_name,
                            "object": "model",
                            "created": self.server.created,
                            "owned_by": "memtrain",
                        }
                    ],
                },
            )
        else:
            self._error(404, f"no route GET {path}", "not_found_error")

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if path != "/v1/chat/completions":
            self._error(404, f"no route POST {path}", "not_found_error")
            return
        try:
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise BadRequest(f"the request body is not valid JSON ({e})") from None
            conversation, sampling, want_ids = parse_request(body)
        except BadRequest as e:
            self._error(400, str(e), param=e.param)
            return
        try:
            comp = self.server.batcher.submit(conversation, sampling)
        except Exception as e:
            self._error(500, f"generation failed: {type(e).__name__}: {e}", "server_error")
            return
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": comp.text},
            "finish_reason": comp.finish_reason,
            "logprobs": None,
        }
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.server.model_name,
            "choices": [choice],
            "usage": {
                "prompt_tokens": len(comp.prompt_ids),
                "completion_tokens": len(comp.completion_ids),
                "total_tokens": len(comp.prompt_ids) + len(comp.completion_ids),
            },
        }
        if want_ids:
            payload["prompt_token_ids"] = comp.prompt_ids
            choice["token_ids"] = comp.completion_ids
        self._send(200, payload)


class MemtrainHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that owns a :class:`Batcher`; ``server_close`` also stops the batcher."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], batcher: Batcher, model_name: str):
        super().__init__(address, _Handler)
        self.batcher = batcher
        self.model_name = model_name
        self.created = int(time.time())

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def server_close(self) -> None:
        super().server_close()
        self.batcher.close()


def make_server(
    engine: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str = "memtrain",
    batch_window_ms: float = 5.0,
    max_batch: int = 64,
) -> MemtrainHTTPServer:
    """A ready-to-run server (call ``serve_forever()``, e.g. in a thread; port 0 picks a free port)."""
    return MemtrainHTTPServer((host, port), Batcher(engine, batch_window_ms / 1000.0, max_batch), model_name)


@dataclass
class ServeConfig:
    model: str = option("model name: smollm2 (embedded), a hub id or a local folder", "smollm2")
    engine: EngineConfig = option("generation engine", factory=EngineConfig)
    served_model_name: str | None = option("name reported by /v1/models (default: model)", None)
    host: str = option("interface to bind (no authentication: keep it local)", "127.0.0.1")
    port: int = option("TCP port (0 picks a free one)", 8000)
    max_batch: int = option("max requests coalesced into one generate call", 64)
    batch_window_ms: float = option("how long a request waits for companions", 5.0)

    def validate(self) -> None:
        if self.max_batch <= 0:
            raise MemtrainError(f"ServeConfig.max_batch must be positive, got {self.max_batch}")


def serve(cfg: ServeConfig) -> int:
    """``memtrain serve``: an OpenAI-compatible chat-completions API; concurrent requests are coalesced into
    batched generate calls, which is what makes the memory agent fast over HTTP."""
    from memtrain.agent.engines import build_engine

    cfg.validate()
    engine = build_engine(cfg.engine, cfg.model)
    try:
        server = make_server(engine, cfg.host, cfg.port, cfg.served_model_name or cfg.model,
                             cfg.batch_window_ms, cfg.max_batch)
    except OSError as e:
        raise MemtrainError(f"cannot listen on {cfg.host}:{cfg.port}: {e}; pick another port=") from None
    print(f"memtrain serve: {server.url} (model {server.model_name}); Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
