"""The HTTP layer of ``memtrain serve``: routes, authentication, JSON and SSE responses (stdlib
``http.server``, one thread per connection; generation happens on the :class:`Batcher`'s worker)."""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from memtrain.serving import memory
from memtrain.serving.batcher import Batcher
from memtrain.serving.protocol import (
    ApiError,
    BadRequest,
    ChatRequest,
    Choice,
    apply_stop,
    context_error,
    logprobs_body,
    parse_request,
    sampling_from,
    text_pieces,
)

if TYPE_CHECKING:
    from memtrain.serve import ServeConfig

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024  # a 64 MiB request body is ~16M tokens of document


class _Handler(BaseHTTPRequestHandler):
    server: MemtrainHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: the agent sends many requests per step

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s " + format, self.address_string(), *args)  # the request line only, never headers

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, e: ApiError) -> None:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        self._send(e.status, e.body(), headers)

    def _authorize(self) -> None:
        key = self.server.api_key
        if key is None:
            return
        header = self.headers.get("Authorization") or ""
        scheme, _, given = header.partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key)):
            raise ApiError("missing or incorrect API key: send 'Authorization: Bearer <key>'", status=401,
                           kind="invalid_request_error", code="invalid_api_key")

    def _route(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        path = self._route()
        try:
            if path == "/health":  # liveness and load, for probes and load tests; never needs the key
                b = self.server.batcher
                self._send(200, {"status": "ok", "model": self.server.model_name, "queued": b.queued,
                                 "batches": b.n_batches, "conversations": b.n_conversations})
                return
            self._authorize()
            if path == "/v1/models":
                model = {"id": self.server.model_name, "object": "model", "created": self.server.created,
                         "owned_by": "memtrain", "max_model_len": self.server.context_length}
                self._send(200, {"object": "list", "data": [model]})
            else:
                raise ApiError(f"no route GET {path}", status=404, kind="not_found_error")
        except ApiError as e:
            self._fail(e)

    def do_POST(self) -> None:  # noqa: N802
        path = self._route()
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self.close_connection = True  # the body is not read: the connection cannot be reused
                raise ApiError(f"the request body is {length} bytes, more than {MAX_BODY_BYTES}", status=413,
                               kind="invalid_request_error")
            raw = self.rfile.read(length) if length > 0 else b""
            self._authorize()
            if path not in ("/v1/chat/completions", "/v1/memory/answer"):
                raise ApiError(f"no route POST {path}", status=404, kind="not_found_error")
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise BadRequest(f"the request body is not valid JSON ({e})") from None
            if path == "/v1/chat/completions":
                self._chat(body)
            else:
                self._memory_answer(body)
        except ApiError as e:
            self._fail(e)
        except (BrokenPipeError, ConnectionResetError):  # the client went away mid-answer
            self.close_connection = True
        except Exception as e:
            log.exception("request failed")
            self._fail(ApiError(f"generation failed: {type(e).__name__}: {e}"))

    # ----- /v1/chat/completions

    def _chat(self, body: Any) -> None:
        srv = self.server
        req = parse_request(body, srv.cfg.default_max_tokens)
        if req.n > srv.batcher.max_queue:  # could never be admitted: a client error, not a 503
            raise BadRequest(f"'n' must be <= the server's max_queue ({srv.batcher.max_queue})", "n")
        deadline = srv.deadline()
        prompt_ids = None
        if req.memory_agent is not None:
            choices, usage = self._memory_choices(req, deadline)
        else:
            choices, usage, prompt_ids = self._plain_choices(req, deadline)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            self._stream(rid, created, choices, usage if req.include_usage else None)
            return
        payload: dict[str, Any] = {
            "id": rid, "object": "chat.completion", "created": created, "model": srv.model_name,
            "choices": [], "usage": usage,
        }
        for i, ch in enumerate(choices):
            out: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": ch.text},
                "finish_reason": ch.finish_reason,
                "logprobs": logprobs_body(srv.tokenizer, ch) if req.logprobs else None,
            }
            if req.return_token_ids:
                out["token_ids"] = ch.token_ids
            if ch.extra is not None:
                out["memory_agent"] = ch.extra
            payload["choices"].append(out)
        if req.return_token_ids and req.memory_agent is None:
            payload["prompt_token_ids"] = prompt_ids
        self._send(200, payload)

    def _plain_choices(self, req: ChatRequest, deadline: float | None):
        srv = self.server
        prompt_ids = srv.prompt_ids(req.conversation)
        sampling = dataclasses.replace(req.sampling, max_new_tokens=srv.budget(prompt_ids, req.max_tokens))
        per = [sampling] if req.n == 1 else [
            dataclasses.replace(sampling, seed=None if sampling.seed is None else sampling.seed + i)
            for i in range(req.n)
        ]
        comps = srv.batcher.wait(srv.batcher.enqueue([req.conversation] * req.n, per), deadline)
        choices = [apply_stop(srv.tokenizer, c, req.stop) for c in comps]
        n_prompt = len(comps[0].prompt_ids) or len(prompt_ids or [])
        n_completion = sum(len(ch.token_ids) for ch in choices)
        usage = {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                 "total_tokens": n_prompt + n_completion}
        return choices, usage, comps[0].prompt_ids or prompt_ids

    def _memory_choices(self, req: ChatRequest, deadline: float | None):
        spec = dict(req.memory_agent or {})
        question = next((m["content"] for m in reversed(req.conversation) if m["role"] == "user"), "")
        if req.max_tokens is not None and spec.get("answer_tokens") is None:
            spec["answer_tokens"] = req.max_tokens
        trajs = self.server.run_memory(spec, question, req.sampling, req.n, deadline, "memory_agent.")
        choices = []
        for tr in trajs:
            final = tr.turns[-1].completion
            extra: dict[str, Any] = {"answer": tr.answer, "n_chunks": len(tr.memories) - 1}
            if spec.get("return_trace"):
                extra.update(memories=tr.memories, trace=memory.trace_rows(tr))
            choices.append(Choice(final.text, list(final.completion_ids), final.finish_reason, final.logprobs,
                                  extra))
        return choices, memory.usage(trajs)

    def _stream(self, rid: str, created: int, choices: list[Choice], usage: dict[str, int] | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {"id": rid, "object": "chat.completion.chunk", "created": created,
                "model": self.server.model_name}
        with_usage = {"usage": None} if usage is not None else {}

        def event(choice: dict[str, Any] | None, **extra: Any) -> None:
            data = {**base, "choices": [choice] if choice else [], **with_usage, **extra}
            self._chunk(b"data: " + json.dumps(data).encode("utf-8") + b"\n\n")

        for i, ch in enumerate(choices):
            event({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                   "finish_reason": None})
            for piece in text_pieces(self.server.tokenizer, ch.token_ids, ch.text):
                event({"index": i, "delta": {"content": piece}, "logprobs": None, "finish_reason": None})
            last: dict[str, Any] = {"index": i, "delta": {}, "logprobs": None,
                                    "finish_reason": ch.finish_reason}
            if ch.extra is not None:
                last["memory_agent"] = ch.extra
            event(last)
        if usage is not None:
            event(None, usage=usage)
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")  # the zero-length chunk ends the body

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        if not data:
            self.wfile.flush()

    # ----- /v1/memory/answer

    def _memory_answer(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        question = body.get("question")
        if not isinstance(question, str):
            raise BadRequest("'question' must be a string", "question")
        options = {k: v for k, v in body.items() if k in (*memory.AGENT_FIELDS, "document", "return_trace")}
        sampling = sampling_from(body, 0.0, 1)  # greedy by default here: a plain call wants the best answer
        (tr,) = self.server.run_memory(options, question, sampling, 1, self.server.deadline(), "")
        final = tr.turns[-1].completion
        payload: dict[str, Any] = {
            "id": f"memans-{uuid.uuid4().hex}", "object": "memory.answer", "created": int(time.time()),
            "model": self.server.model_name, "answer": tr.answer, "response": final.text,
            "finish_reason": final.finish_reason, "n_chunks": len(tr.memories) - 1,
            "usage": memory.usage([tr]),
        }
        if body.get("return_trace"):
            payload.update(memories=tr.memories, trace=memory.trace_rows(tr))
        self._send(200, payload)


class MemtrainHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that owns a :class:`Batcher`; ``server_close`` also stops the batcher."""

    daemon_threads = True

    def __init__(self, engine: Any, cfg: ServeConfig, api_key: str | None = None):
        super().__init__((cfg.host, cfg.port), _Handler)
        self.cfg = cfg
        self.engine = engine
        self.tokenizer = getattr(engine, "tokenizer", None)
        self.batcher = Batcher(engine, cfg.batch_window_ms / 1000.0, cfg.max_batch, cfg.max_queue)
        self.model_name = cfg.served_model_name or cfg.model
        self.created = int(time.time())
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.context_length = cfg.max_model_len or _model_context(engine)

    def __repr__(self) -> str:  # never show the key
        return f"MemtrainHTTPServer({self.url!r}, model={self.model_name!r})"

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

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

    def server_close(self) -> None:
        super().server_close()
        self.batcher.close()


def _model_context(engine: Any) -> int | None:
    config = getattr(getattr(engine, "model", None), "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None
