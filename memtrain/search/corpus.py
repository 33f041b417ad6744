"""The local search corpus: every passage of ``../shared/data`` that can serve as evidence, in wiki-18 form.

Sources, in this order (the order decides which copy of a duplicate is kept):

- ``wikipedia``: the 10,033 Wikipedia lead extracts of the Vital Articles (``wikipedia/*.jsonl``);
- ``hotpotqa``: the 10 paragraphs of each HotpotQA dev question (gold and distractors, IRCoT layout);
- ``musique``: the 20 paragraphs of each MuSiQue question;
- ``squad``: every SQuAD 2.0 dev paragraph (titles have ``_`` for spaces in the file; we print spaces).

Passages are deduplicated on :func:`dedup_key` (NFKC, case-folded, punctuation and whitespace collapsed):
the first copy is kept, the others counted as duplicates of their source. Each passage is written as
``{"id", "contents"}`` with ``contents = '"Title"\\ntext'`` (wiki-18's format, so a Search-R1 server can
load our file and ours theirs) and ``id = "<source>:<12 hex of sha1(dedup key)>"``: stable across
rebuilds, whatever else the pool holds.

NQ-open has no evidence of its own, and most of its answers are not in this small pool; a question is
**answerable in the pool** when one of its answers (SQuAD-normalised, word-bounded) occurs in some
passage's contents (:func:`has_answer`, DPR's answer-string test). :func:`nq_answerability` also records
the rank of the first BM25 hit holding an answer; the build writes both to ``answerable_nq.json``
(:func:`load_answerable_nq`), so an evaluation can report NQ unfiltered and on the answerable subset.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memtrain.config import option
from memtrain.errors import MemtrainError
from memtrain.records import Hit

PASSAGES = "passages.jsonl"
ANSWERABLE_NQ = "answerable_nq.json"
SOURCES = ("wikipedia", "hotpotqa", "musique", "squad")
SOURCE_GLOBS = {  # relative to the data folder
    "wikipedia": "wikipedia/*.jsonl",
    "hotpotqa": "hotpotqa/*.jsonl",
    "musique": "musique/*.json",
    "squad": "squad/*.json",
}
NQ_FILE = "nq_open/NQ-open.dev.jsonl"


@dataclass
class SearchCorpusConfig:
    """What goes into the local search corpus (``memtrain data build kind=search_corpus``)."""

    data: str = option("the shared data folder (relative to the current directory)", "../shared/data")
    sources: list[str] = option(f"sources to include, in priority order for deduplication: {list(SOURCES)}",
                                list(SOURCES))
    nq_answerable: bool = option(f"also write {ANSWERABLE_NQ} for {NQ_FILE} (skipped if the file is absent)",
                                 True)
    nq_topk: int = option("BM25 depth of the rank recorded per NQ question in answerable_nq.json", 10)

    def validate(self) -> None:
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown or not self.sources:
            raise MemtrainError(f"search_corpus.sources: unknown {unknown} or empty; choose from "
                                f"{list(SOURCES)}")
        if len(set(self.sources)) != len(self.sources):
            raise MemtrainError(f"search_corpus.sources lists a source twice: {self.sources}")
        if self.nq_topk < 1:
            raise MemtrainError(f"search_corpus.nq_topk must be >= 1, got {self.nq_topk}")

    def data_dir(self) -> Path:
        p = Path(self.data)
        if not p.is_dir():
            raise MemtrainError(f"shared data folder not found: {p.resolve()} (the search corpus is built "
                                "from its wikipedia/, hotpotqa/, musique/ and squad/ files); set "
                                "search_corpus.data=DIR")
        return p

    def source_paths(self) -> dict[str, list[Path]]:
        """Each chosen source's files, sorted; an error names a source with none."""
        root = self.data_dir()
        out = {}
        for s in self.sources:
            files = sorted(root.glob(SOURCE_GLOBS[s]))
            if not files:
                raise MemtrainError(f"no {s} file matches {root.resolve() / SOURCE_GLOBS[s]}; drop {s} from "
                                    "search_corpus.sources or restore the file")
            out[s] = files
        return out


# ---------------------------------------------------------------------------------------------- reading


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MemtrainError(f"{path}: unreadable JSON ({e})") from None


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise MemtrainError(f"{path}:{n}: not JSON ({e})") from None


def read_source(source: str, path: Path) -> Iterator[tuple[str, str]]:
    """``(title, text)`` of every paragraph of one source file, in file order (duplicates included)."""
    try:
        if source == "wikipedia":
            for r in _jsonl(path):
                yield r["title"], r["text"]
        elif source == "hotpotqa":
            for r in _jsonl(path):
                for c in r["contexts"]:
                    yield c["title"], c["paragraph_text"]
        elif source == "musique":
            rows = _load_json(path)
            for r in rows if isinstance(rows, list) else [rows]:
                for p in r["paragraphs"]:
                    yield p["title"], p["paragraph_text"]
        elif source == "squad":
            for article in _load_json(path)["data"]:
                for p in article["paragraphs"]:
                    yield article["title"].replace("_", " "), p["context"]
        else:
            raise MemtrainError(f"unknown search-corpus source {source!r}; choose from {list(SOURCES)}")
    except (KeyError, TypeError) as e:
        raise MemtrainError(f"{path}: not in the {source} layout of ../shared/data/README.md "
                            f"(missing {e})") from None


def dedup_key(text: str) -> str:
    """The text with case, Unicode forms, punctuation and spacing normalised away (``"Person - centered"``
    and ``"person-centered"`` agree)."""
    s = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", s).split())


def passage_id(source: str, key: str) -> str:
    return f"{source}:{hashlib.sha1(key.encode('utf-8')).hexdigest()[:12]}"


@dataclass
class SourceCount:
    """What one source contributed: paragraphs read, kept, dropped as duplicates or as empty."""

    name: str
    files: list[str] = field(default_factory=list)
    read: int = 0
    kept: int = 0
    duplicates: int = 0
    empty: int = 0


def collect_passages(paths: dict[str, list[Path]]) -> tuple[list[Hit], list[SourceCount]]:
    """The deduplicated pool (first copy wins, sources in the order given) and per-source counts."""
    seen: set[str] = set()
    pool: list[Hit] = []
    counts = []
    for source, files in paths.items():
        c = SourceCount(source, [str(f) for f in files])
        for f in files:
            for title, text in read_source(source, f):
                c.read += 1
                title, text = " ".join(str(title).split()), str(text).strip()
                key = dedup_key(text)
                if not key:
                    c.empty += 1
                    continue
                if key in seen:
                    c.duplicates += 1
                    continue
                seen.add(key)
                pool.append(Hit.from_contents(passage_id(source, key), Hit.format_contents(title, text)))
                c.kept += 1
        counts.append(c)
    ids = [p.id for p in pool]
    if len(set(ids)) != len(ids):  # 48-bit hashes over ~1e4 passages: only a bug gets here
        raise MemtrainError("passage id collision in the search corpus; report this")
    return pool, counts


def load_passages(path: str | Path) -> list[Hit]:
    """Passages of a ``{"id", "contents"}`` JSONL file, or of ``passages.jsonl`` inside a folder."""
    p = Path(path)
    if p.is_dir():
        p = p / PASSAGES
    if not p.is_file():
        raise MemtrainError(f"passage file not found: {p.resolve()}; build the local corpus with "
                            "`memtrain data build search_corpus_cpu` or set corpus=FILE")
    out = []
    for n, r in enumerate(_jsonl(p), 1):
        contents = r.get("contents") if isinstance(r, dict) else None
        if not isinstance(contents, str):
            raise MemtrainError(f"{p}:{n}: expected an object with a string 'contents' (wiki-18 format)")
        out.append(Hit.from_contents(str(r.get("id", n - 1)), contents))
    if not out:
        raise MemtrainError(f"{p} holds no passages")
    return out


# ---------------------------------------------------------------------------------------------- answers


_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> str:
    """:func:`memtrain.scoring.normalize_answer` (SQuAD's normalisation), the same result computed with
    ``str.translate``: whole pools are normalised here, and the per-character loop there is slow for that."""
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", text).replace("\\,", " ").replace("\\ ", " ")
    return " ".join(_ARTICLES.sub(" ", s.lower().translate(_PUNCT)).split())


def has_answer(contents: str, answers: Sequence[str]) -> bool:
    """Whether some answer, SQuAD-normalised, occurs word-bounded in the SQuAD-normalised ``contents``
    (DPR's answer-string test; title included, as the agent reads it)."""
    hay = f" {normalise(contents)} "
    return any(a and f" {a} " in hay for a in map(normalise, answers))


class AnswerFinder:
    """Which passages of a pool contain an answer string: candidates from an inverted index of normalised
    words (those holding the answer's rarest word), then the substring test on each (a scan of the whole
    18k-passage pool per answer took ~3 ms, 30 s for NQ dev)."""

    def __init__(self, pool: Sequence[Hit]) -> None:
        self.norm = [f" {normalise(p.contents)} " for p in pool]
        self.postings: dict[str, list[int]] = {}
        for i, t in enumerate(self.norm):
            for w in set(t.split()):
                self.postings.setdefault(w, []).append(i)

    def passages_with(self, answer: str) -> list[int]:
        words = normalise(answer).split()
        if not words:
            return []
        rarest = min(words, key=lambda w: len(self.postings.get(w, ())))
        needle = f" {' '.join(words)} "
        return [i for i in self.postings.get(rarest, ()) if needle in self.norm[i]]


def load_nq(path: str | Path) -> list[dict[str, Any]]:
    """NQ-open rows ``{"question", "answer": [...]}``."""
    rows = list(_jsonl(Path(path)))
    if any(not isinstance(r.get("question"), str) or not isinstance(r.get("answer"), list) for r in rows):
        raise MemtrainError(f"{path}: expected NQ-open rows {{question, answer: [..]}}")
    return rows


def nq_answerability(pool: Sequence[Hit], questions: Sequence[dict[str, Any]], index: Any,
                     topk: int = 10) -> dict[str, Any]:
    """Per NQ question: ``in_pool`` (an answer occurs in some passage) and ``bm25_rank`` (1-based rank of
    the first of ``index``'s top-``topk`` hits holding an answer, None when none does)."""
    finder = AnswerFinder(pool)
    pos = {p.id: i for i, p in enumerate(pool)}
    hits = index.search([q["question"] for q in questions], topk)
    per_q: dict[str, Any] = {}
    for q, row in zip(questions, hits, strict=True):
        answers = [str(a) for a in q["answer"]]
        holding = {i for a in answers for i in finder.passages_with(a)}
        in_pool = bool(holding)
        rank = next((r for r, h in enumerate(row, 1)
                     if (pos[h.id] in holding if h.id in pos else has_answer(h.contents, answers))), None)
        prev = per_q.get(q["question"])
        if prev is not None:  # a repeated question: answerable if any copy is
            in_pool, rank = in_pool or prev["in_pool"], min((x for x in (rank, prev["bm25_rank"]) if x),
                                                            default=None)
            answers = sorted({*answers, *prev["answers"]})
        per_q[q["question"]] = {"answers": answers, "in_pool": in_pool, "bm25_rank": rank}
    return {
        "definition": "in_pool: some answer, SQuAD-normalised, occurs word-bounded in the SQuAD-normalised "
                      "contents (title + text) of at least one passage of the pool; bm25_rank: 1-based rank "
                      f"of the first BM25 top-{topk} hit (question as query) holding an answer, null if none",
        "topk": topk,
        "questions_total": len(questions),
        "questions_unique": len(per_q),
        "in_pool": sum(v["in_pool"] for v in per_q.values()),
        "bm25_in_topk": sum(v["bm25_rank"] is not None for v in per_q.values()),
        "questions": per_q,
    }


def load_answerable_nq(corpus: str | Path) -> dict[str, dict[str, Any]]:
    """``{question: {"answers", "in_pool", "bm25_rank"}}`` from a corpus folder's ``answerable_nq.json``."""
    p = Path(corpus)
    p = p / ANSWERABLE_NQ if p.is_dir() else p
    if not p.is_file():
        raise MemtrainError(f"{p.resolve()} not found; build the corpus with `memtrain data build "
                            f"search_corpus_cpu` (with {NQ_FILE} present in the data folder)")
    return _load_json(p)["questions"]
