"""Finding the passages related to a pivot (E2E step 1: "retrieve its n1 most related passages").

The paper does not pin the retriever; we use BM25 (``bm25s``) over the passage pool: it needs no model, is
fast on CPU and favours passages sharing rare words with the pivot -- exactly the distractors that make
the masked entity hard to guess from topic alone. The index is built once and queried in batches (one
call for many pivots), which is what makes building thousands of tasks cheap.

Extension point: anything implementing :class:`Retriever` plugs into the builder; :class:`DenseRetriever`
wraps a user-supplied embedding function (no downloads happen here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from memtrain.errors import MemtrainError

Query = int | str  # an int is the index of a pooled passage (query by example), a str is free text


@runtime_checkable
class Retriever(Protocol):
    """Top-k search over the indexed pool; ids are positions in the list given to :meth:`index`."""

    def index(self, texts: Sequence[str]) -> None: ...

    def topk(
        self, queries: Sequence[Query], k: int, exclude: Sequence[set[int]] | None = None
    ) -> list[list[int]]:
        """For each query, up to ``k`` pool ids, best first, never one in that query's ``exclude`` set.

        A query by index excludes itself implicitly. Fewer than ``k`` ids come back when fewer documents
        are related at all (BM25 score 0 is "unrelated", not a hit).
        """
        ...


def _excluded(queries: Sequence[Query], exclude: Sequence[set[int]] | None) -> list[set[int]]:
    out = []
    for i, q in enumerate(queries):
        ex = set(exclude[i]) if exclude is not None else set()
        if isinstance(q, (int, np.integer)):
            ex.add(int(q))
        out.append(ex)
    return out


class BM25Retriever:
    """BM25 over lowercased words minus English stopwords (``bm25s`` defaults, Lucene scoring)."""

    def __init__(self, batch_size: int = 512) -> None:
        self.batch_size = batch_size
        self._bm25 = None
        self._ids: list[list[int]] = []
        self._vocab: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def index(self, texts: Sequence[str]) -> None:
        import logging

        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import; not our chatter
        if not texts:
            raise MemtrainError("cannot build a BM25 index over an empty passage pool")
        tok = bm25s.tokenize(list(texts), stopwords="en", show_progress=False)
        self._ids, self._vocab = [list(x) for x in tok.ids], dict(tok.vocab)
        self._bm25 = bm25s.BM25()
        self._bm25.index(tok, show_progress=False)

    def _query_ids(self, q: Query) -> list[int]:
        if isinstance(q, (int, np.integer)):
            return self._ids[int(q)]
        import bm25s

        words = bm25s.tokenize([q], stopwords="en", return_ids=False, show_progress=False)[0]
        return [self._vocab[w] for w in words if w in self._vocab]

    def topk(
        self, queries: Sequence[Query], k: int, exclude: Sequence[set[int]] | None = None
    ) -> list[list[int]]:
        if self._bm25 is None:
            raise RuntimeError("BM25Retriever.topk called before index()")
        excl = _excluded(queries, exclude)
        out: list[list[int]] = [[] for _ in queries]
        todo = [(i, self._query_ids(q)) for i, q in enumerate(queries)]
        todo = [(i, ids) for i, ids in todo if ids and k > 0]  # a query with no indexed word has no hits
        for b in range(0, len(todo), self.batch_size):
            batch = todo[b : b + self.batch_size]
            # over-fetch so that dropping excluded ids still leaves k hits
            kk = min(len(self), k + max(len(excl[i]) for i, _ in batch))
            docs, scores = self._bm25.retrieve(
                [ids for _, ids in batch], k=kk, show_progress=False, n_threads=0
            )
            for (i, _), d_row, s_row in zip(batch, docs, scores, strict=True):
                hits = [int(d) for d, s in zip(d_row, s_row, strict=True) if s > 0 and int(d) not in excl[i]]
                out[i] = hits[:k]
        return out


class DenseRetriever:
    """Cosine top-k over embeddings from ``embed(texts) -> array[n, dim]`` (e.g. a sentence encoder).

    Memtrain ships no embedding model; pass any function, e.g. one wrapping a local sentence-transformers
    model. Exact search with numpy, fine for pools up to ~1e5 passages.
    """

    def __init__(self, embed: Callable[[list[str]], np.ndarray], batch_size: int = 256) -> None:
        self.embed = embed
        self.batch_size = batch_size
        self._emb: np.ndarray | None = None

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        parts = [np.asarray(self.embed(list(texts[i : i + self.batch_size])), dtype=np.float32)
                 for i in range(0, len(texts), self.batch_size)]
        e = np.concatenate(parts, axis=0)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    def index(self, texts: Sequence[str]) -> None:
        if not texts:
            raise MemtrainError("cannot build a dense index over an empty passage pool")
        self._emb = self._encode(texts)

    def topk(
        self, queries: Sequence[Query], k: int, exclude: Sequence[set[int]] | None = None
    ) -> list[list[int]]:
        if self._emb is None:
            raise RuntimeError("DenseRetriever.topk called before index()")
        excl = _excluded(queries, exclude)
        texts = [q for q in queries if not isinstance(q, (int, np.integer))]
        text_emb = iter(self._encode(texts)) if texts else iter(())
        q_emb = np.stack([self._emb[int(q)] if isinstance(q, (int, np.integer)) else next(text_emb)
                          for q in queries]) if queries else np.zeros((0, 1))
        out = []
        for row, ex in zip(q_emb @ self._emb.T if len(queries) else [], excl, strict=True):
            order = np.argsort(-row, kind="stable")[: k + len(ex)]
            out.append([int(j) for j in order if int(j) not in ex][:k])
        return out
