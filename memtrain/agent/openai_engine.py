"""An engine over any OpenAI-compatible chat-completions server (vLLM, SGLang, llama.cpp, ``memtrain serve``).

Why a server engine: the memory loop is turn-synchronous, so one step of a batch of documents is a burst of
independent requests. We send them concurrently (a bounded thread pool) and let the server batch them.
Plain ``httpx`` keeps the dependency surface small (no ``openai`` package).

Robustness: connection errors, timeouts, 429 and 5xx are retried with exponential backoff; other 4xx fail at
once (retrying a bad request cannot help). The API key is read from the environment at call time and is only
ever put in the ``Authorization`` header: error messages and traces never contain it.

Token ids: with ``request_token_ids=True`` the request asks for them (vLLM's ``return_token_ids``
extension, also honoured by ``memtrain serve``; off by default because the OpenAI API rejects unknown
fields) and returned ids are used as is; otherwise, with a local ``tokenizer``, the prompt is rendered through
its chat template and the completion text re-encoded (exact for training only if the server used the same
template); without a tokenizer both id lists are empty.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from memtrain.agent.engine import Conversation, Sampling, render
from memtrain.errors import MemtrainError
from memtrain.records import Completion

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_FINISH = {"stop": "stop", "eos": "stop", "length": "length", "max_tokens": "length"}


class OpenAIEngine:
    """Complete conversations through ``POST {base_url}/chat/completions``, one request per conversation."""

    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer: Any = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60,
        retries: int = 3,
        backoff: float = 0.5,
        request_token_ids: bool = False,
        extra_body: dict[str, Any] | None = None,
        logprobs: bool = False,
    ):
        if concurrency <= 0:
            raise MemtrainError(f"OpenAIEngine concurrency must be positive, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.tokenizer = tokenizer
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.request_token_ids = request_token_ids
        self.logprobs = logprobs  # ask for each sampled token's log-prob (OpenAI `logprobs: true`)
        self.extra_body = dict(extra_body or {})
        self._client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=concurrency))

    def sync_weights(self, model: Any) -> None:
        raise MemtrainError(
            f"cannot push trained weights to the server at {self.base_url}; train with engine.kind=hf or vllm"
        )

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def close(self) -> None:
        self._client.close()

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[Completion]:
        if not conversations:
            return []
        if len(conversations) == 1:
            return [self._complete(conversations[0], sampling.per(0))]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(lambda i: self._complete(conversations[i], sampling.per(i)),
                                 range(len(conversations))))

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _payload(self, conversation: Conversation, sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(conversation),
            "max_tokens": sampling.max_new_tokens,
            "temperature": max(0.0, sampling.temperature),
            "top_p": sampling.top_p,
            "n": 1,
            **self.extra_body,
        }
        if self.request_token_ids:
            body["return_token_ids"] = True
        if self.logprobs:
            body["logprobs"] = True
        if sampling.top_k:
            body["top_k"] = sampling.top_k  # non-standard but accepted by vLLM and SGLang
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        return body

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; returns the parsed JSON body or raises MemtrainError (never showing the key)."""
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                resp = self._client.post(self.url, json=body, headers=self._headers())
            except httpx.TimeoutException as e:
                last = f"timed out after {self.timeout}s ({type(e).__name__})"
                continue
            except httpx.TransportError as e:
                last = f"connection failed ({type(e).__name__}: {e})"
                continue
            if resp.status_code in _RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {_error_text(resp)}"
                log.debug("retrying %s after %s", self.url, last)
                continue
            if resp.status_code >= 400:
                hint = (
                    " (check the API key in $" + self.api_key_env + ")"
                    if resp.status_code in (401, 403)
                    else ""
                )
                raise MemtrainError(
                    f"server {self.url} rejected the request for model {self.model!r}: "
                    f"HTTP {resp.status_code}: {_error_text(resp)}{hint}"
                )
            try:
                return resp.json()
            except ValueError:
                raise MemtrainError(
                    f"server {self.url} returned a non-JSON body (HTTP {resp.status_code})"
                ) from None
        raise MemtrainError(
            f"cannot get a completion from {self.url} after {self.retries + 1} attempts: {last}. "
            "Check that the server is running and reachable, that --base-url ends in /v1, "
            "and that the model name is one the server serves."
        )

    def _complete(self, conversation: Conversation, sampling: Sampling) -> Completion:
        data = self._post(self._payload(conversation, sampling))
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise MemtrainError(
                f"server {self.url} returned an unexpected body (no choices[0].message)"
            ) from None
        finish = _FINISH.get(str(choice.get("finish_reason")), "stop")
        prompt_ids = data.get("prompt_token_ids") or choice.get("prompt_token_ids")
        completion_ids = choice.get("token_ids")
        if self.tokenizer is not None:
            if prompt_ids is None:
                prompt_ids = render(self.tokenizer, conversation)
            if completion_ids is None:
                completion_ids = self.tokenizer.encode(text, add_special_tokens=False)
        content = (choice.get("logprobs") or {}).get("content") if self.logprobs else None
        lps = [float(t["logprob"]) for t in content] if content else None
        if lps is not None and completion_ids is not None and len(lps) != len(completion_ids):
            lps = None  # not aligned with the token ids we train on: do not pretend they are
        return Completion(
            text=text.strip(),
            prompt_ids=list(prompt_ids or []),
            completion_ids=list(completion_ids or []),
            finish_reason=finish,
            logprobs=lps,
        )


def _error_text(resp: httpx.Response) -> str:
    """A short, key-free description of an error response (servers never echo the Authorization header)."""
    try:
        err = resp.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        msg = resp.text
    return str(msg or resp.reason_phrase)[:300]
