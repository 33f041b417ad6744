"""The OpenAI wire protocol of ``memtrain serve``: errors, strict JSON, request validation, stop sequences,
stream pieces.

Pure functions of request bodies, completions and a tokenizer: no sockets, no threads, testable alone. The
errors and :func:`loads` serve ``memtrain retriever serve`` too (it renders errors as ``{"detail": ...}``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_N = 128  # choices per request


# --------------------------------------------------------------------------------------------- errors


class ApiError(Exception):
    """A request that fails with an HTTP status and an OpenAI-style error body."""

    status = 500
    kind = "server_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 status: int | None = None, kind: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code
        self.status = status or self.status
        self.kind = kind or self.kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


class BadRequest(ApiError):
    """A client error, answered with HTTP 400."""

    status, kind = 400, "invalid_request_error"


class QueueFull(ApiError):
    """More waiting conversations than ``max_queue``: HTTP 503, which OpenAI clients retry."""

    status, kind = 503, "server_error"


class RequestTimeout(ApiError):
    """No completion within ``request_timeout_s``: HTTP 504."""

    status, kind = 504, "timeout_error"


def context_error(limit: int, prompt_tokens: int, completion_tokens: int | None) -> BadRequest:
    """vLLM's context-length message, naming the limit and what was asked."""
    if completion_tokens is None:
        msg = (f"This model's maximum context length is {limit} tokens. However, your request has "
               f"{prompt_tokens} input tokens. Please reduce the length of the input messages.")
    else:
        msg = (f"This model's maximum context length is {limit} tokens. However, you requested "
               f"{prompt_tokens + completion_tokens} tokens ({prompt_tokens} in the messages, "
               f"{completion_tokens} in the completion). Please reduce the length of the messages or "
               "completion.")
    return BadRequest(msg, "messages", "context_length_exceeded")


# ----------------------------------------------------------------------------------------------- JSON


class _NonFinite:
    """What :func:`loads` reads for ``NaN``, ``Infinity``, ``-Infinity`` or a number beyond a float."""

    __slots__ = ("token",)

    def __init__(self, token: str):
        self.token = token

    def __repr__(self) -> str:
        return self.token


def _float(token: str) -> float | _NonFinite:
    value = float(token)
    return value if math.isfinite(value) else _NonFinite(token)


def _first_non_finite(value: Any) -> tuple[str, _NonFinite] | None:
    """The dotted path of the first non-finite number in ``value`` (iterative: bodies nest deeply)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, _NonFinite):
            return path, v
        if isinstance(v, dict):
            stack.extend((f"{path}.{k}" if path else str(k), x) for k, x in reversed(v.items()))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", x) for i, x in reversed(list(enumerate(v))))
    return None


def loads(raw: bytes) -> Any:
    """A request body as JSON, strictly: UTF-8, and no ``NaN``/``Infinity`` (Python's ``json`` accepts them,
    JSON does not) nor numbers beyond a float; else :class:`BadRequest`, naming the field if it is one."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_NonFinite, parse_float=_float)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadRequest(f"the request body is not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None
    found = _first_non_finite(body)
    if found is not None:
        path, bad = found
        where = f"'{path}'" if path else "the request body"
        raise BadRequest(f"{where} is {bad.token}, which is not a JSON number: send a finite number",
                         path or None)
    return body


# ------------------------------------------------------------------------------------------- requests


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: error messages echo what was sent, never megabytes."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def number(body: dict[str, Any], name: str, default: Any, kind: type, lo: float | None = None,
            where: str = "") -> Any:
    """``body[name]`` as a finite ``kind`` (``int`` also takes integral floats), at least ``lo``;
    ``default`` when absent or null; else :class:`BadRequest` naming the field."""
    value = body.get(name)
    if value is None:
        return default
    bad = BadRequest(f"'{where}{name}' must be a finite {kind.__name__}, got {show(value)}", where + name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad
    if isinstance(value, float) and not math.isfinite(value):
        raise bad
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise bad
    try:
        out = kind(value)
    except OverflowError:  # an integer beyond a float
        raise bad from None
    if lo is not None and out < lo:
        raise BadRequest(f"'{where}{name}' must be >= {lo}, got {show(value)}", where + name)
    return out


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
            texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            if not all(isinstance(t, str) for t in texts):
                raise BadRequest(f"messages[{i}].content: a text part's 'text' must be a string", "messages")
            content = "".join(texts)
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string", "messages")
        out.append({"role": m["role"], "content": content})
    return out


def _stops(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 64:
        raise BadRequest(f"'stop' must be a non-empty string or a list of up to 64 of them, got "
                         f"{show(value)}", "stop")
    return stops


@dataclass
class ChatRequest:
    """A validated chat-completions body."""

    conversation: list[dict[str, str]]
    sampling: Any  # Sampling; max_new_tokens is the default when ``max_tokens`` is None
    max_tokens: int | None = None  # as asked; None = the server's default, cut to the context left
    n: int = 1
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    return_token_ids: bool = False
    memory_agent: dict[str, Any] | None = None


def sampling_from(body: dict[str, Any], default_temperature: float, max_new_tokens: int) -> Any:
    from memtrain.agent.engine import Sampling

    sampling = Sampling(
        max_new_tokens=max_new_tokens,
        temperature=number(body, "temperature", default_temperature, float, 0),
        top_p=number(body, "top_p", 1.0, float, 0),
        top_k=max(0, number(body, "top_k", 0, int)),
        seed=number(body, "seed", None, int),
    )
    if not 0 < sampling.top_p <= 1:
        raise BadRequest(f"'top_p' must be in (0, 1], got {sampling.top_p}", "top_p")
    if sampling.seed is not None and not 0 <= sampling.seed < 2**63 - MAX_N:
        raise BadRequest(f"'seed' must be in [0, 2**63), got {sampling.seed}", "seed")
    return sampling


def parse_request(body: Any, default_max_tokens: int = 256) -> ChatRequest:
    """A :class:`ChatRequest` from a chat-completions body; :class:`BadRequest` naming the bad field."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = number({"max_tokens": max_tokens}, "max_tokens", None, int, 1)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise BadRequest(f"'stream' must be a boolean, got {show(stream)}", "stream")
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict)):
        raise BadRequest("'stream_options' is an object, allowed only with stream=true", "stream_options")
    if number(body, "top_logprobs", 0, int, 0):
        raise BadRequest("top_logprobs is not supported by memtrain serve", "top_logprobs")
    memory = body.get("memory_agent")
    if memory is not None and not isinstance(memory, dict):
        raise BadRequest("'memory_agent' must be an object with at least a 'document'", "memory_agent")
    n = number(body, "n", 1, int, 1)
    if n > MAX_N:
        raise BadRequest(f"'n' must be <= {MAX_N}, got {n}", "n")
    req = ChatRequest(
        conversation=_messages(body),
        sampling=sampling_from(body, 1.0, max_tokens or default_max_tokens),  # OpenAI's default temperature
        max_tokens=max_tokens,
        n=n,
        stop=_stops(body.get("stop")),
        stream=stream,
        include_usage=bool((options or {}).get("include_usage")),
        logprobs=bool(body.get("logprobs")),
        return_token_ids=bool(body.get("return_token_ids")),
        memory_agent=memory,
    )
    if memory is not None and req.stop:
        raise BadRequest("'stop' is not supported with memory_agent (the answer is read from the whole final "
                         "response)", "stop")
    return req


# ------------------------------------------------------------------------------------------ responses


@dataclass
class Choice:
    """One choice as sent: the text after stop sequences, its token ids, why it ended."""

    text: str
    token_ids: list[int]
    finish_reason: str
    logprobs: list[float] | None = None
    extra: dict[str, Any] | None = None  # memory_agent: answer, memories, trace


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def apply_stop(tokenizer: Any, comp: Any, stops: Sequence[str]) -> Choice:
    """``comp`` cut before the earliest stop string, counted up to the token that completed it."""
    choice = Choice(comp.text, list(comp.completion_ids), comp.finish_reason, comp.logprobs)
    hits = [i for i in (comp.text.find(s) for s in stops) if i >= 0]
    if not hits:
        return choice
    cut = min(hits)
    choice.text, choice.finish_reason = comp.text[:cut], "stop"
    ids = choice.token_ids
    if tokenizer is not None and ids:
        def has_stop(k: int) -> bool:
            return any(s in _decode(tokenizer, ids[:k]) for s in stops)

        lo, hi = 1, len(ids)  # the smallest prefix whose text holds a stop string (monotone in k)
        if has_stop(hi):
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if has_stop(mid) else (mid + 1, hi)
            choice.token_ids = ids[:lo]
            if choice.logprobs is not None:
                choice.logprobs = choice.logprobs[:lo]
    return choice


def text_pieces(tokenizer: Any, ids: Sequence[int], text: str, max_pieces: int = 256) -> list[str]:
    """``text`` split at token boundaries of ``ids`` (about one piece per token, at most ``max_pieces``);
    the pieces always concatenate to ``text`` exactly (a token that decodes to a partial character waits
    for the next one)."""
    if tokenizer is None or not ids or not text:
        return [text] if text else []
    step = max(1, -(-len(ids) // max_pieces))
    pieces, done = [], 0
    for k in range(step, len(ids) + step, step):
        prefix = _decode(tokenizer, ids[:k]).strip()  # the engine's text is the stripped decode
        if prefix.endswith("\ufffd") or not text.startswith(prefix) or len(prefix) <= done:
            continue
        pieces.append(text[done:len(prefix)])
        done = len(prefix)
    if done < len(text):
        pieces.append(text[done:])
    return pieces


def logprobs_body(tokenizer: Any, choice: Choice) -> dict[str, Any] | None:
    if choice.logprobs is None or tokenizer is None or len(choice.logprobs) != len(choice.token_ids):
        return None
    return {"content": [{"token": tokenizer.decode([t]), "logprob": lp, "bytes": None, "top_logprobs": []}
                        for t, lp in zip(choice.token_ids, choice.logprobs, strict=True)]}

