"""``memtrain serve``: an OpenAI-compatible chat-completions server over an engine, with a server-side
memory agent.

Why: the memory agent sends each step of a batch of documents as a burst of independent single-turn
requests. A server is only useful to it if it batches those requests, so one worker thread (:class:`Batcher`)
coalesces the conversations that arrive within ``batch_window_ms`` of each other into one batched
``engine.generate``. Any OpenAI client (the ``openai`` package, :class:`OpenAIEngine`, curl) can then drive a
local model, and several evaluation or training processes can share one model in memory.

Endpoints (errors always use OpenAI's body, ``{"error": {"message", "type", "param", "code"}}``):

- ``POST /v1/chat/completions``: ``messages``, ``max_tokens`` / ``max_completion_tokens``, ``temperature``
  (default 1, as OpenAI), ``top_p``, ``top_k`` and ``seed``, ``n`` (choices sampled independently: they are
  rows of one batch), ``stop`` (a string or a list), ``stream`` with ``stream_options.include_usage``,
  ``logprobs`` (when the engine records them, ``engine.logprobs=true``), ``return_token_ids`` (vLLM's
  extension: prompt and completion token ids) and ``memory_agent`` (ours, below). Other fields are ignored.
- ``POST /v1/memory/answer``: the memory agent as one plain JSON call (below).
- ``GET /v1/models``; ``GET /health`` (never needs the key: status, queued conversations, batches and
  conversations generated so far).

Semantics that a client can rely on:

- **Context length.** prompt tokens + ``max_tokens`` above the context length (``max_model_len``, by default
  the model config's ``max_position_embeddings``) is a 400 with vLLM's message ("This model's maximum context
  length is N tokens. However, you requested M tokens (P in the messages, K in the completion)...").
  Without ``max_tokens`` the budget is ``default_max_tokens`` cut to what the context leaves.
- **Streaming** is SSE in OpenAI's chunk format: a first delta with the role, content deltas, one chunk per
  choice with its ``finish_reason``, the usage chunk when ``stream_options.include_usage``, ``data: [DONE]``.
  The deltas are cut from the *finished* completion at token boundaries: their concatenation is exactly the
  non-streamed text, but the first one arrives when generation is done (time to first token = latency).
  True incremental streaming needs a per-row token hook inside the engine's batched ``generate``, which
  the HF engine does not have; batching matters more here than time to first token.
- **Stop sequences** are applied to the finished text: it is cut before the earliest stop string,
  ``finish_reason`` becomes ``stop`` and the completion is counted up to the token that completed the stop
  string (as vLLM counts); the engine still ran to EOS or ``max_tokens``.
- **Usage** counts the prompt once and the completion tokens of every choice.
- **Load.** At most ``http.max_concurrency`` requests (default 512) are handled at once and at most
  ``max_queue`` conversations wait for a generate call; a request beyond either gets a 503 (OpenAI clients
  retry it). A request that has not got its completions ``request_timeout_s`` after it arrived gets a 504;
  its conversations are dropped if not yet started, else their results are discarded; the server keeps
  serving.
- **HTTP** (:mod:`memtrain.serving.http`): uvicorn + Starlette; a listen backlog of 2048, so bursts of new
  connections queue instead of being reset; the key, the concurrency bound and the declared body size are
  checked before the body is read; bodies over ``http.max_body_bytes`` (64 MiB) get a 413, a head or body
  slower than ``http.read_timeout_s`` (30 s) a closed connection or a 408; idle keep-alive connections close
  after ``http.keepalive_timeout_s`` (5 s). ``NaN``/``Infinity`` anywhere in a body is a 400 naming the
  field.
- **Batching.** Conversations with the same decoding settings (greedy: the same budget) share one generate
  call; seeds do not split batches. On the HF engine the rows of one call share one generator seeded from
  the first row's seed, so a seeded request is reproducible when it is batched alone.
- **Authentication** is optional: with ``api_key_env=NAME`` the key is read from ``$NAME`` at start, every
  ``/v1`` request needs ``Authorization: Bearer <key>`` (compared in constant time, before any of the body is
  read) or gets a 401, and the key is never logged or printed. Without it there is no authentication: keep
  the server on loopback.

**The memory agent, server-side** (DESIGN §11: MemAgent's clients run the chunked loop themselves). A client
sends a long document and a question; the server chunks the document by the model's tokenizer, runs
:func:`memtrain.agent.loop.run_memory_agent` and returns the final response, the extracted answer and, on
request, every memory and step. Two ways in, so that any OpenAI client works unchanged:

- ``POST /v1/chat/completions`` with an extra body field (``extra_body=`` in the ``openai`` client)
  ``memory_agent: {"document": str, "chunk_tokens", "memory_tokens", "answer_tokens", "max_chunks",
  "prompt_version", "answer_mode", "return_trace": bool}`` (all but ``document`` optional; server defaults
  ``agent_*``). The question is the last user message; ``max_tokens`` sets ``answer_tokens`` unless
  given; ``temperature``/``top_p``/``seed``/``n``/``stream`` apply as usual. Each choice's message is the
  final response and the choice carries ``memory_agent: {"answer", "n_chunks", "memories"?, "trace"?}``
  (``memories``: m_0 .. m_T, so one more than the chunks read; ``trace``: one row per step).
- ``POST /v1/memory/answer`` with ``{"document", "question", ...the same options, "temperature" (default 0),
  "top_p", "seed", "return_trace"}`` answers ``{"answer", "response", "finish_reason", "n_chunks", "usage",
  "memories"?, "trace"?}``.

The loop's engine is an adapter over the server's :class:`Batcher`, so the steps of concurrent memory-agent
requests and plain requests are batched together. A started read is never dropped for a full queue (only
its first step must find room); ``request_timeout_s`` bounds the whole read.

Code: this module holds the config and the entry point; :mod:`memtrain.serving` the parts
(``protocol``: validation, stop sequences, stream pieces; ``batcher``: coalescing, queue, deadlines;
``memory``: the served read; ``http``: the ASGI server, routes, authentication, responses).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from memtrain.agent.engines import EngineConfig
from memtrain.config import option
from memtrain.errors import MemtrainError
from memtrain.serving.batcher import Batcher, BatcherEngine
from memtrain.serving.http import HTTPConfig, MemtrainHTTPServer
from memtrain.serving.memory import MEMORY_TASK_ID
from memtrain.serving.protocol import (
    ApiError,
    BadRequest,
    ChatRequest,
    QueueFull,
    RequestTimeout,
    apply_stop,
    parse_request,
    text_pieces,
)

__all__ = ["MEMORY_TASK_ID", "ApiError", "BadRequest", "Batcher", "BatcherEngine", "ChatRequest",
           "HTTPConfig", "MemtrainHTTPServer", "QueueFull", "RequestTimeout", "ServeConfig", "apply_stop",
           "make_server", "parse_request", "serve", "text_pieces"]


@dataclass
class ServeConfig:
    model: str = option("model name: smollm2 (embedded), a hub id or a local folder", "smollm2")
    engine: EngineConfig = option("generation engine", factory=EngineConfig)
    served_model_name: str | None = option("name reported by /v1/models (default: model)", None)
    host: str = option("interface to bind (without api_key_env there is no authentication: keep it local)",
                       "127.0.0.1")
    port: int = option("TCP port (0 picks a free one)", 8000)
    max_batch: int = option("max conversations coalesced into one generate call", 64)
    batch_window_ms: float = option("how long a conversation waits for companions", 5.0)
    max_queue: int = option("max conversations waiting for a generate call; a request that does not fit "
                            "gets HTTP 503", 1024)
    request_timeout_s: float = option("seconds from arrival until a request without its completions gets "
                                      "HTTP 504 (0: no limit; bounds a whole memory-agent read)", 600.0)
    max_model_len: int | None = option("context length in tokens that prompt + max_tokens must fit (None: "
                                       "the model config's max_position_embeddings)", None)
    default_max_tokens: int = option("completion budget of a request without max_tokens (cut to the "
                                     "context left)", 256)
    api_key_env: str | None = option("name of an environment variable holding the API key; set, every /v1 "
                                     "request needs 'Authorization: Bearer <key>' (the key is never printed)",
                                     None)
    http: HTTPConfig = option("HTTP limits and timeouts (max_concurrency, max_body_bytes, read_timeout_s, "
                              "keepalive_timeout_s, backlog)", factory=HTTPConfig)
    agent_chunk_tokens: int = option("memory agent: default tokens per document chunk", 1024)
    agent_memory_tokens: int = option("memory agent: default memory budget (tokens)", 256)
    agent_answer_tokens: int = option("memory agent: default final-answer budget (tokens)", 128)
    agent_max_chunks: int | None = option("memory agent: read at most this many chunks (None: all)", None)
    agent_prompt_version: str = option("memory agent: prompt template version (prompts.py)", "v1")

    def validate(self) -> None:
        for name in ("max_batch", "max_queue", "default_max_tokens", "agent_chunk_tokens",
                     "agent_memory_tokens", "agent_answer_tokens"):
            if getattr(self, name) <= 0:
                raise MemtrainError(f"ServeConfig.{name} must be positive, got {getattr(self, name)}")
        self.http.validate()
        if self.max_model_len is not None and self.max_model_len <= 0:
            raise MemtrainError(f"ServeConfig.max_model_len must be positive, got {self.max_model_len}")
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            raise MemtrainError(f"ServeConfig.api_key_env={self.api_key_env}, but ${self.api_key_env} is "
                                "unset or empty: export the key there, or leave api_key_env unset")
        self.agent_defaults().validate()

    def agent_defaults(self) -> Any:
        from memtrain.agent.loop import AgentConfig

        return AgentConfig(chunk_tokens=self.agent_chunk_tokens, memory_tokens=self.agent_memory_tokens,
                           answer_tokens=self.agent_answer_tokens, max_chunks=self.agent_max_chunks,
                           prompt_version=self.agent_prompt_version)


def make_server(engine: Any, cfg: ServeConfig | None = None, **overrides: Any) -> MemtrainHTTPServer:
    """A ready-to-run server over ``engine``, already listening (call ``serve_forever()``, e.g. in a thread;
    ``shutdown()`` from another, then ``server_close()``); ``overrides`` replace fields of ``cfg``
    (``port=0`` picks a free port, then in ``server.url``). The API key is read from ``$cfg.api_key_env``
    here, once."""
    cfg = dataclasses.replace(cfg or ServeConfig(), **overrides)
    cfg.validate()
    key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    return MemtrainHTTPServer(engine, cfg, key)


def serve(cfg: ServeConfig) -> int:
    """``memtrain serve``: an OpenAI-compatible chat-completions API and a server-side memory agent;
    concurrent requests are coalesced into batched generate calls."""
    from memtrain.agent.engines import build_engine

    cfg.validate()  # before loading the model: a bad setting fails in a second
    engine = build_engine(cfg.engine, cfg.model)
    try:
        server = make_server(engine, cfg)
    except OSError as e:
        raise MemtrainError(f"cannot listen on {cfg.host}:{cfg.port}: {e}; pick another port=") from None
    auth = f"API key required (from ${cfg.api_key_env})" if server.api_key else "no authentication"
    print(f"memtrain serve: {server.url} (model {server.model_name}, context {server.context_length} tokens, "
          f"{auth}); Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
