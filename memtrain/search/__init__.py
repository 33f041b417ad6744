"""Search for agents (the MEM1 / Search-R1 setting, DESIGN §10): retrievers behind one interface.

An agent sees one protocol, :class:`SearchBackend`: ``search(queries, topk) -> list[list[Hit]]`` (a batch
of queries in, each query's hits out, best first; :class:`~memtrain.records.Hit` is ``id, title,
contents, score`` with ``contents`` in wiki-18's ``"Title"\\ntext`` form). Implementations
(``backends.py``):

- :class:`LocalIndex`: an in-process BM25 or dense (all-MiniLM-L6-v2, embeddings cached on disk) index
  over a passage file (``passages.jsonl`` of ``{"id", "contents"}``, as ``memtrain data build
  search_corpus_cpu`` writes it, or Search-R1's ``wiki-18.jsonl``);
- :class:`HTTPRetriever`: a client of any MEM1/Search-R1 retrieval server (``POST /retrieve``), with
  timeouts and retries;
- ``memtrain retriever serve`` (``server.py``) serves a local index with exactly that server's JSON, so a
  MEM1-style agent can use our corpus and ours can use theirs.

:class:`SearchConfig` chooses a backend and :func:`make_search` builds it; recipes embed the config. The
local corpus (Wikipedia leads + HotpotQA, MuSiQue and SQuAD paragraphs) is read by ``corpus.py``.
Names are resolved lazily so that ``import memtrain.search`` imports neither bm25s nor httpx.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Hit": "memtrain.records",
    "SearchBackend": "memtrain.search.backends",
    "LocalIndex": "memtrain.search.backends",
    "HTTPRetriever": "memtrain.search.backends",
    "SearchConfig": "memtrain.search.backends",
    "make_search": "memtrain.search.backends",
    "load_passages": "memtrain.search.corpus",
    "has_answer": "memtrain.search.corpus",
    "load_answerable_nq": "memtrain.search.corpus",
    "SearchCorpusConfig": "memtrain.search.corpus",
    "RetrieverServeConfig": "memtrain.search.server",
    "make_retriever_server": "memtrain.search.server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
