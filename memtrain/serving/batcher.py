"""Request coalescing: one worker thread turns concurrent conversations into batched ``engine.generate``
calls, with a bounded queue and per-request deadlines; and the adapter that puts it behind the engine
interface for the memory loop.

Requests wait for their completions either on a thread (:meth:`Batcher.wait`, the memory loop's adapter) or
on an event loop (:meth:`Batcher.completions`, the HTTP server's plain requests: no thread per request)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from memtrain.errors import MemtrainError
from memtrain.serving.protocol import QueueFull, RequestTimeout

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Pending:
    conversation: list[dict[str, str]]
    sampling: Any  # memtrain.agent.engine.Sampling
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    cancelled: bool = False  # the request gave up (timeout): skip it if it has not started
    on_done: Callable[[], None] | None = None  # called on the worker thread once ``done`` is set

    def finish(self) -> None:
        self.done.set()
        if self.on_done is not None:
            self.on_done()


def _group_key(s: Any) -> tuple:
    """Conversations that can share one generate call: greedy ones by budget; sampled ones by budget and
    decoding settings. Seeds do not split a batch."""
    if s.greedy:
        return ("greedy", s.max_new_tokens)
    return ("sample", s.max_new_tokens, s.temperature, s.top_p, s.top_k)


class Batcher:
    """Coalesce concurrent conversations into batched ``engine.generate`` calls on one worker thread.

    The engine is used from this thread only, so it needs no locking. A conversation waits at most
    ``window_s`` for companions, batches are capped at ``max_batch`` conversations, and at most
    ``max_queue`` conversations may wait (:meth:`enqueue` raises :class:`QueueFull` beyond).
    """

    def __init__(self, engine: Any, window_s: float = 0.005, max_batch: int = 64, max_queue: int = 1024):
        self.engine = engine
        self.window_s = window_s
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._lock = threading.Lock()
        self._queued = 0  # conversations enqueued and not yet taken by the worker
        self.batches: deque[int] = deque(maxlen=10_000)  # sizes of the latest generate calls
        self.n_batches = 0
        self.n_conversations = 0
        self._thread = threading.Thread(target=self._run, name="memtrain-batcher", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Conversations waiting for a generate call (not counting the batch being generated)."""
        return self._queued

    def enqueue(self, conversations: Sequence[list[dict[str, str]]], samplings: Sequence[Any],
                bounded: bool = True, on_done: Callable[[], None] | None = None) -> list[_Pending]:
        """Queue conversations (all or none); :class:`QueueFull` when ``bounded`` and they do not fit.
        ``on_done`` is called on the worker thread as each one finishes."""
        items = [_Pending(list(c), s, on_done=on_done) for c, s in zip(conversations, samplings, strict=True)]
        with self._lock:  # the count and the queue move together, so admission is exact
            if bounded and self._queued + len(items) > self.max_queue:
                raise QueueFull(f"the server is busy: {self._queued} conversations are waiting (max_queue="
                                f"{self.max_queue}); retry later", code="queue_full")
            self._queued += len(items)
            for it in items:
                self._queue.put(it)
        return items

    @staticmethod
    def wait(items: Sequence[_Pending], deadline: float | None) -> list[Any]:
        """The completions of ``items``, in order; :class:`RequestTimeout` (cancelling them) past
        ``deadline`` (a ``time.monotonic()`` value; None waits forever); the engine's error if it failed."""
        for it in items:
            if not it.done.wait(_left(deadline)):
                raise _give_up(items)
        return _results(items)

    async def completions(self, conversations: Sequence[list[dict[str, str]]], samplings: Sequence[Any],
                          deadline: float | None) -> list[Any]:
        """Queue conversations (bounded, as :meth:`enqueue`) and await their completions on the running
        event loop without blocking it; :class:`RequestTimeout` past ``deadline`` as :meth:`wait`."""
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()
        left = len(conversations)

        def count() -> None:  # on the loop
            nonlocal left
            left -= 1
            if left == 0:
                finished.set()

        def on_done() -> None:  # on the worker thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(count)

        items = self.enqueue(conversations, samplings, on_done=on_done)
        try:
            await asyncio.wait_for(finished.wait(), _left(deadline))
        except TimeoutError:
            raise _give_up(items) from None
        except asyncio.CancelledError:  # the server is shutting down: drop what has not started
            _give_up(items)
            raise
        return _results(items)

    def submit(self, conversation: list[dict[str, str]], sampling: Any, timeout: float | None = None) -> Any:
        """Block until this conversation's completion is ready (unbounded queue; re-raises engine errors)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return self.wait(self.enqueue([conversation], [sampling], bounded=False), deadline)[0]

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _take(self, timeout: float | None) -> _Pending | None:
        if timeout is not None and timeout <= 0:
            item = self._queue.get_nowait()
        else:
            item = self._queue.get(timeout=timeout)
        if item is not None:
            with self._lock:
                self._queued -= 1
        return item

    def _gather(self, first: _Pending) -> tuple[list[_Pending], bool]:
        items, deadline = [first], time.monotonic() + self.window_s
        while len(items) < self.max_batch:
            try:
                nxt = self._take(deadline - time.monotonic())
            except queue.Empty:
                break
            if nxt is None:
                return items, True
            items.append(nxt)
        return items, False

    def _run(self) -> None:
        while True:
            first = self._take(None)
            if first is None:
                return
            items, stop = self._gather(first)
            groups: dict[tuple, list[_Pending]] = {}
            for it in items:
                if it.cancelled:  # its request already answered 504
                    it.finish()
                    continue
                groups.setdefault(_group_key(it.sampling), []).append(it)
            for group in groups.values():
                self._generate(group)
            if stop:
                return

    def _generate(self, group: list[_Pending]) -> None:
        seeds = [g.sampling.seed for g in group]
        sampling = dataclasses.replace(group[0].sampling, seed=None,
                                       seeds=None if any(s is None for s in seeds) else seeds)
        self.batches.append(len(group))
        self.n_batches += 1
        self.n_conversations += len(group)
        try:
            comps = self.engine.generate([g.conversation for g in group], sampling)
            for g, c in zip(group, comps, strict=True):
                g.result = c
        except Exception as e:  # report to every waiting request, keep serving
            log.exception("generate failed for a batch of %d", len(group))
            for g in group:
                g.error = e
        for g in group:
            g.finish()


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _give_up(items: Sequence[_Pending]) -> RequestTimeout:
    """Cancel ``items`` (the worker skips those not started) and return the timeout error."""
    for it in items:
        it.cancelled = True
    return RequestTimeout("the request timed out waiting for generation (request_timeout_s); the server is "
                          "overloaded or the request is too large", code="request_timeout")


def _results(items: Sequence[_Pending]) -> list[Any]:
    for it in items:
        if it.error is not None:
            raise it.error
    return [it.result for it in items]


class BatcherEngine:
    """The server's :class:`Batcher` behind the engine interface, for :func:`run_memory_agent`.

    Every conversation of a ``generate`` call is queued on its own, so the steps of a memory-agent request
    share generate calls with every other request. Only the first call must find room in the queue (a read
    once started is not dropped); ``deadline`` bounds the whole read; ``check`` sees each conversation and
    its budget first (the context-length check).
    """

    def __init__(self, batcher: Batcher, tokenizer: Any, deadline: float | None, check: Any = None):
        self.batcher = batcher
        self.tokenizer = tokenizer
        self.deadline = deadline
        self.check = check
        self._started = False

    def generate(self, conversations: Sequence[list[dict[str, str]]], sampling: Any) -> list[Any]:
        if not conversations:
            return []
        if self.check is not None:
            for conv in conversations:
                self.check(conv, sampling.max_new_tokens)
        items = self.batcher.enqueue(conversations, [sampling.per(i) for i in range(len(conversations))],
                                     bounded=not self._started)
        self._started = True
        return self.batcher.wait(items, self.deadline)

    def sync_weights(self, model: Any) -> None:
        raise MemtrainError("the served model's weights cannot be updated through the memory-agent adapter")
