"""Task E2E (masked entity reconstruction) and its IMR candidates, built from one pivot passage.

Recipe (DESIGN §2, paper defaults in :class:`E2EConfig`):

1. **Document.** The pivot, its ``n_related`` best BM25 hits and ``n_random`` random other passages, in
   random order; each passage rendered as ``title\\ntext`` (``titles=True``) and joined by blank lines.
2. **Answer.** One entity mentioned in the pivot, drawn at random among those that pass the filters
   (``entity_labels``, ``min_answer_chars``, ``max_answer_words``, no form that is a common word). Its
   surface forms are every ``Entity.text`` with the same ``key`` anywhere in the pool, plus the key itself
   for wiki links (the link target's title): the document may call Paris "Paris" in one passage and
   "the French capital" via a link in another.
3. **Masking.** Every form, every identifying part of a form (a bare surname, a place name without its
   qualifier: :func:`~memtrain.tasks.masking.identifying_parts`) and every derived form of a form (plural,
   demonym, "-ism"/"-ist": :func:`~memtrain.tasks.masking.derived_forms`: "Algerian" of "Algeria") is
   replaced by ``[MASK]`` in every passage *and title* (``mask_scope="document"``,
   the paper's setting) or only in the pivot (``"pivot"``, an easier variant beyond the paper in which the
   other passages may still name the answer).
4. **Chunking** by real tokens (:func:`~memtrain.tasks.chunking.chunk_text`). A document longer than
   ``max_chunks * chunk_tokens`` is first trimmed to a run of passages holding 10% more tokens than that,
   with the pivot at a uniformly drawn passage position (:func:`_arrange`; this halves tokenization at
   CPU scale). The kept text is chunked and a window of ``max_chunks`` consecutive chunks containing every
   chunk that overlaps the pivot is kept, the pivot's position in it drawn at random. Both draws keep
   the pivot's position random, so the agent cannot learn "the answer is in the first/last chunk".
   Passages outside the kept run are not part of the task (``meta["passage_pids"]`` lists the document
   order; its first ``meta["passages_kept"]`` entries were rendered).
5. **Leak check** on the final chunks: nothing masking hides may survive, derived forms included (a chunk
   cut can expose a form that was not word-bounded before, e.g. "Angolans" cut after "Angola"); otherwise
   the pivot is dropped with reason ``"leak"``. Drop reasons are counted by the builder.

**IMR candidates** (DESIGN §2, Task IMR leaves the rule open). An entity ỹ of chunk c_l qualifies when

(a) after masking all its forms (with their parts and derived forms) in c_l as ``[TARGET]`` no form
    remains (the leak check);
(b) its canonical form is not a common word or stopword, not shorter than ``min_answer_chars``, not a
    single all-lowercase word (common nouns are guessable and ambiguous to score), and none of its forms
    is a common word (masking "state" everywhere would blank the chunk);
(c) it occurs in c_l and in **no other chunk** of the task (a derived form counts: "Angolan" in another
    chunk gives "Angola" away). We decide at chunk granularity rather than
    passage granularity because chunks are what the agent reads: a mention in another passage of the
    *same* chunk is masked too, while a mention in any other chunk would let the model recover ỹ from text
    it has seen (or will see), not from what it stored in memory about c_l.

It is never the E2E answer (already masked). At most ``imr_per_chunk`` candidates are kept per chunk,
drawn at random among those that qualify, then listed in order of first appearance.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from memtrain.errors import MemtrainError
from memtrain.prompts import E2E_PROBLEM, MASK, TARGET
from memtrain.records import ImrCandidate, MemTask, Passage
from memtrain.tasks.chunking import chunk_text_counted
from memtrain.tasks.masking import (
    COMMON_WORDS,
    form_pattern,
    is_maskable_form,
    leaks,
    mask_entity,
    normalize_forms,
    with_parts,
)

if TYPE_CHECKING:
    from memtrain.corpus.store import PassageStore

LINK_LABEL = "LINK"
_WORD = re.compile(r"\w+")


@dataclass
class E2EConfig:
    """How one E2E task is built. Defaults are the paper's; configs/data/cpu.yaml is CPU scale."""

    n_related: int = field(
        default=29, metadata={"help": "BM25-related passages added to the pivot (paper: 29)"}
    )
    n_random: int = field(default=120, metadata={"help": "random passages added (paper: 120; N = 1+29+120)"})
    chunk_tokens: int = field(default=5120, metadata={"help": "tokens per chunk, hard limit (paper: 5120)"})
    max_chunks: int = field(
        default=8, metadata={"help": "most chunks per task; longer documents keep a window around the pivot"}
    )
    min_chunks: int = field(default=1, metadata={"help": "fewer chunks than this -> dropped as 'too_short'"})
    titles: bool = field(default=True, metadata={"help": "prefix each passage with its (masked) title"})
    entity_labels: list[str] | None = field(
        default=None,
        metadata={"help": "beyond the paper: only mask entities with these labels (None = any label)"},
    )
    min_mentions: int = field(
        default=1, metadata={"help": "beyond the paper: min occurrences of the answer in the final chunks"}
    )
    mask_scope: Literal["document", "pivot"] = field(
        default="document",
        metadata={"help": "mask the answer everywhere (paper) or only inside the pivot (beyond the paper)"},
    )
    min_answer_chars: int = field(default=2, metadata={"help": "shortest answer, in characters"})
    max_answer_words: int = field(default=10, metadata={"help": "longest answer, in words"})
    max_entity_tries: int = field(
        default=3, metadata={"help": "pivot entities tried before the pivot is dropped"}
    )
    imr_per_chunk: int = field(default=8, metadata={"help": "most IMR candidates stored per chunk"})
    seed: int = field(default=0, metadata={"help": "seed for pivots, entity choice, order and windows"})

    def validate(self) -> None:
        for name in ("chunk_tokens", "max_chunks", "min_chunks", "max_answer_words", "max_entity_tries"):
            if getattr(self, name) < 1:
                raise MemtrainError(f"E2EConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_related", "n_random", "min_mentions", "min_answer_chars", "imr_per_chunk"):
            if getattr(self, name) < 0:
                raise MemtrainError(f"E2EConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.min_chunks > self.max_chunks:
            raise MemtrainError(
                f"E2EConfig.min_chunks ({self.min_chunks}) must not exceed max_chunks ({self.max_chunks})"
            )
        if self.mask_scope not in ("document", "pivot"):
            raise MemtrainError(
                f"E2EConfig.mask_scope must be 'document' or 'pivot', got {self.mask_scope!r}"
            )


@dataclass(frozen=True)
class DropReason:
    """Why a pivot gave no task (counted in the build stats)."""

    reason: str
    detail: str = ""


class PassagePool:
    """The passages tasks are drawn from, plus every surface form of every entity key in them.

    The passages are a list, or a :class:`~memtrain.corpus.store.PassageStore` on disk: then only the
    form index (per entity key, not per passage) and a bounded cache of recently used rows are Python
    objects, and :meth:`prefetch` gathers the rows of one task in a single read. Either way ``pool[i]`` is
    the same passage, so the tasks built are the same bytes.
    """

    def __init__(self, passages: Sequence[Passage] | PassageStore, cache_rows: int = 8192) -> None:
        from memtrain.corpus.store import PassageStore, RowCache

        self.store: PassageStore | None = passages if isinstance(passages, PassageStore) else None
        self.passages: list[Passage] | None = None if self.store is not None else list(passages)
        self._rows = RowCache(self.store, cache_rows) if self.store is not None else None
        texts: dict[str, set[str]] = defaultdict(set)
        labels: dict[str, dict[str, int]] = defaultdict(dict)  # plain dicts: Counter's += is ~3x slower
        mentions = self.store.entity_rows() if self.store is not None else \
            ((e.key, e.text, e.label) for p in self.passages for e in p.entities)
        for key, text, label in mentions:
            texts[key].add(text)
            n = labels[key]
            n[label] = n.get(label, 0) + 1
        self._forms: dict[str, tuple[str, ...]] = {}
        self._mask_forms: dict[str, tuple[str, ...]] = {}
        self._label: dict[str, str] = {}
        self._pairs: dict[str, tuple[tuple[str, str], ...]] = {}
        self._lowered: dict[str, tuple[frozenset[str], tuple[tuple[str, str], ...]]] = {}
        self._forms_ok: dict[str, bool] = {}
        self._chars_per_token: float | None = None
        for key, surf in texts.items():
            n = labels[key]
            if LINK_LABEL in n:
                surf = surf | {key}  # the link target's title is a name of the entity too
            if len(surf) == 1:  # most keys: normalize_forms of one form, without its call overhead
                (form,) = surf
                form = " ".join(form.split())
                self._forms[key] = (form,) if form else ()
            else:
                # sorted: normalize_forms keeps the first spelling of case variants, and set order changes
                # with each process's string-hash seed (builds must be byte-identical across runs)
                self._forms[key] = normalize_forms(sorted(surf))
            # the most frequent label, ties to the alphabetically first
            self._label[key] = next(iter(n)) if len(n) == 1 else min(n.items(), key=_by_count)[0]

    def __len__(self) -> int:
        return len(self.store) if self.store is not None else len(self.passages)

    def __getitem__(self, i: int) -> Passage:
        return self.passages[i] if self._rows is None else self._rows.get(i)

    def prefetch(self, ids: Sequence[int]) -> None:
        """Bring rows ``ids`` of an on-disk pool into the row cache at once (a no-op for a list)."""
        if self._rows is not None:
            self._rows.fetch(ids)

    def has_entities(self) -> bool:
        """Some passage has an entity mention (else no task can be built)."""
        return bool(self._label)

    def forms(self, key: str) -> tuple[str, ...]:
        """The entity's own surface forms (its accepted answers)."""
        return self._forms.get(key, ())

    def mask_forms(self, key: str) -> tuple[str, ...]:
        """Everything masking the entity hides: its forms and their identifying parts."""
        try:
            return self._mask_forms[key]
        except KeyError:
            out = self._mask_forms[key] = with_parts(self.forms(key))
            return out

    def label(self, key: str) -> str:
        return self._label.get(key, "")

    # Per-key caches: a passage takes part in ~(1 + n_related + n_random) tasks, so the same keys are
    # checked over and over; caching them took the build from ~80 to ~20 ms per CPU task. Matchers are
    # compiled per chunk from the forms it contains (form_pattern keeps the recent ones).

    def lowered_pairs(self, key: str) -> tuple[tuple[str, str], ...]:
        """``(case-folded form with normalised spaces, form)`` for every masked form of ``key``."""
        try:
            return self._pairs[key]
        except KeyError:
            out = self._pairs[key] = tuple((" ".join(f.casefold().split()), f) for f in self.mask_forms(key))
            return out

    def lowered_forms(self, key: str) -> tuple[frozenset[str], tuple[tuple[str, str], ...]]:
        """The masked forms of ``key`` case-folded, each with its first word, and the set of first words.

        A form can only occur in a text whose words include its first word (both case-folded; see
        :func:`imr_candidates`): one set test rules out a chunk for all of an entity's forms, which
        with its derived forms are dozens.
        """
        try:
            return self._lowered[key]
        except KeyError:
            forms = []
            for f in sorted({low for low, _ in self.lowered_pairs(key)}):
                m = _WORD.search(f)
                forms.append((m.group(0) if m else "", f))
            out = self._lowered[key] = (frozenset(w for w, _ in forms), tuple(forms))
            return out

    def n_tokens(self, j: int, tokenizer: Any, titles: bool) -> int:
        """Estimated tokens of passage ``j`` as rendered, used only to trim long documents.

        Characters divided by the pool's characters-per-token ratio, measured once on (up to) its first
        64 passages: tokenizing every passage for an estimate would cost as much as the trimming saves.
        The ratio is lowered by 10% so estimates err towards keeping a little more text.
        """
        if self._chars_per_token is None:
            sample = [_join(*_render(self[i], titles)) for i in range(min(64, len(self)))]
            n_tok = sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in sample)
            self._chars_per_token = 0.9 * sum(map(len, sample)) / max(1, n_tok)
        p = self[j]
        return int((len(p.text) + (len(p.title) + 1 if titles else 0)) / self._chars_per_token) + 1

    def forms_ok(self, key: str) -> bool:
        """No form of ``key`` is a common word or a placeholder word (masking it would wreck the text)."""
        try:
            return self._forms_ok[key]
        except KeyError:
            ok = self._forms_ok[key] = all(
                f.casefold() not in COMMON_WORDS and is_maskable_form(f, 1) for f in self.forms(key)
            )
            return ok


def _by_count(kv: tuple[str, int]) -> tuple[int, str]:
    return -kv[1], kv[0]


def _as_pool(pool: PassagePool | Sequence[Passage]) -> PassagePool:
    return pool if isinstance(pool, PassagePool) else PassagePool(pool)


def _words(s: str) -> list[str]:
    return s.split()


def answer_ok(canonical: str, key: str, pool: PassagePool, cfg: E2EConfig) -> bool:
    """The entity filters shared by E2E answers and IMR targets (see the module docstring)."""
    if not is_maskable_form(canonical, max(cfg.min_answer_chars, 1)):
        return False
    if len(_words(canonical)) > cfg.max_answer_words:
        return False
    return pool.forms_ok(key)


def _pick_random(n_pool: int, taken: set[int], n: int, rng: random.Random) -> list[int]:
    avail = n_pool - len(taken)
    n = min(n, avail)
    if n <= 0:
        return []
    if n * 2 >= avail:  # dense draw: sample from the explicit complement
        return rng.sample([i for i in range(n_pool) if i not in taken], n)
    out: list[int] = []
    seen = set(taken)
    while len(out) < n:
        j = rng.randrange(n_pool)
        if j not in seen:
            seen.add(j)
            out.append(j)
    return out


def _render(p: Passage, titles: bool) -> tuple[str, str]:
    return (p.title if titles else ""), p.text


def _join(title: str, text: str) -> str:
    return f"{title}\n{text}" if title else text


def _locate(doc: str, chunks: list[str]) -> list[tuple[int, int]]:
    """Character spans of the (stripped, in-order) chunks inside ``doc``."""
    spans, pos = [], 0
    for c in chunks:
        at = doc.find(c, pos)
        if at < 0:  # chunk_text only strips whitespace, so this cannot happen; fail loudly if it does
            raise RuntimeError("chunk not found in document")
        spans.append((at, at + len(c)))
        pos = at + len(c)
    return spans


TRIM_SLACK = 1.1  # keep 10% more tokens than the chunk budget: chunks end early at sentence breaks


def _arrange(
    pivot_idx: int, others: list[int], counts: dict[int, int], target: int, rng: random.Random
) -> tuple[list[int], int]:
    """Document order (pivot among the shuffled ``others``) and how many passages to keep from its start.

    Tokenizing the whole document only to keep ``max_chunks`` of its chunks wastes most of the work at
    CPU scale (12 passages are ~8 chunks of 384 tokens, of which 4 are kept), so a long document is
    trimmed at passage level first, using cached per-passage token counts, and the exact chunk window
    is cut afterwards. The number of passages before the pivot is drawn uniformly among those that keep
    the pivot inside the budget, so the pivot's position in the kept text is uniform rather than piled up
    at the document's edges (as picking a window over a fixed order would do).
    """
    if counts[pivot_idx] + sum(counts[j] for j in others) <= target:
        at = rng.randint(0, len(others))
        return [*others[:at], pivot_idx, *others[at:]], len(others) + 1
    room, k_max = target - counts[pivot_idx], 0
    while k_max < len(others) and room - counts[others[k_max]] >= 0:
        room -= counts[others[k_max]]
        k_max += 1
    k = rng.randint(0, k_max)
    order = [*others[:k], pivot_idx, *others[k:]]
    acc, n = 0, 0
    while n < len(order) and acc < target:
        acc += counts[order[n]]
        n += 1
    return order, max(n, k + 1)


def build_e2e_task(
    pivot_idx: int,
    pool: PassagePool | Sequence[Passage],
    retriever_hits: Sequence[int],
    rng: random.Random,
    tokenizer: Any,
    cfg: E2EConfig,
) -> MemTask | DropReason:
    """One E2E task around pool passage ``pivot_idx``, or the reason it could not be built.

    ``retriever_hits`` are pool ids related to the pivot, best first (the pivot itself is skipped).
    All randomness comes from ``rng``, so a task is a pure function of its inputs.
    """
    pool = _as_pool(pool)
    pivot = pool[pivot_idx]

    # 2. candidate answers: the pivot's entities that pass the filters, one per key, in a stable order
    cands: dict[str, str] = {}
    for e in sorted(pivot.entities, key=lambda e: (e.start, e.end, e.key)):
        if e.key in cands or (cfg.entity_labels is not None and pool.label(e.key) not in cfg.entity_labels):
            continue
        canonical = " ".join(e.text.split())
        if answer_ok(canonical, e.key, pool, cfg):
            cands[e.key] = canonical
    if not cands:
        return DropReason("no_entity")
    keys = sorted(cands)
    rng.shuffle(keys)

    # 1. the document's passages, in random order
    related = [j for j in retriever_hits if j != pivot_idx][: cfg.n_related]
    taken = {pivot_idx, *related}
    others = [*related, *_pick_random(len(pool), taken, cfg.n_random, rng)]
    rng.shuffle(others)
    pool.prefetch([pivot_idx, *others])
    counts = {j: pool.n_tokens(j, tokenizer, cfg.titles) for j in [pivot_idx, *others]}
    budget = int(cfg.max_chunks * cfg.chunk_tokens * TRIM_SLACK)
    ids, n_kept = _arrange(pivot_idx, others, counts, budget, rng)
    window_rng = random.Random(rng.random())

    last: DropReason = DropReason("no_entity")
    for key in keys[: cfg.max_entity_tries]:
        sub_rng = random.Random(window_rng.random())
        out = _try_entity(pivot_idx, ids, n_kept, key, cands[key], pool, tokenizer, cfg, sub_rng)
        if isinstance(out, MemTask):
            return out
        last = out
    return last


def _try_entity(
    pivot_idx: int,
    ids: list[int],
    n_kept: int,
    key: str,
    canonical: str,
    pool: PassagePool,
    tokenizer: Any,
    cfg: E2EConfig,
    rng: random.Random,
) -> MemTask | DropReason:
    forms = pool.forms(key) or (canonical,)
    if canonical.casefold() not in {f.casefold() for f in forms}:
        forms = normalize_forms([canonical, *forms])
    answer_forms, forms = forms, with_parts(forms)  # answers: the entity's forms; masked: with their parts

    # 3. mask, render, remember where the pivot is
    parts: list[str] = []
    pivot_span = (0, 0)
    pivot_masked = 0
    mentions = 0  # in the whole document: an upper bound of the mentions left after windowing
    pat = form_pattern(forms) if cfg.mask_scope == "pivot" else None
    pos = 0
    for j in ids[:n_kept]:
        title, text = _render(pool[j], cfg.titles)
        if cfg.mask_scope == "document" or j == pivot_idx:
            title, n_title = mask_entity(title, forms)
            text, n = mask_entity(text, forms)
            mentions += n + n_title
            if j == pivot_idx:
                pivot_masked = n
        elif pat is not None:
            mentions += pat.count(title) + pat.count(text)
        piece = _join(title, text)
        if j == pivot_idx:
            pivot_span = (pos, pos + len(piece))
        parts.append(piece)
        pos += len(piece) + 2
    if pivot_masked == 0:  # annotation offsets disagree with the text: nothing to reconstruct
        return DropReason("unmatched_entity", key)
    if mentions < cfg.min_mentions:  # cheap early exit before tokenising; the exact check follows
        return DropReason("few_mentions", key)
    doc = "\n\n".join(parts)

    # 4. chunk and keep a window of max_chunks around the pivot
    chunks, n_tokens = chunk_text_counted(tokenizer, doc, cfg.chunk_tokens)
    spans = _locate(doc, chunks)
    on_pivot = [i for i, (s, e) in enumerate(spans) if s < pivot_span[1] and e > pivot_span[0]]
    first, last_ = on_pivot[0], on_pivot[-1]
    n_full = len(chunks)
    if last_ - first + 1 > cfg.max_chunks:
        return DropReason("pivot_too_long", key)
    start = 0
    if n_full > cfg.max_chunks:
        # draw the pivot's position in the window, then clip to the document: uniform away from its edges
        lo, hi = max(0, last_ - cfg.max_chunks + 1), min(first, n_full - cfg.max_chunks)
        start = min(max(first - rng.randint(0, cfg.max_chunks - (last_ - first + 1)), lo), hi)
        chunks = chunks[start : start + cfg.max_chunks]
        n_tokens = n_tokens[start : start + cfg.max_chunks]
        spans = spans[start : start + cfg.max_chunks]
    if len(chunks) < cfg.min_chunks:
        return DropReason("too_short", key)

    # 5. leak check over the text the agent will actually read
    scope_chunks = chunks
    if cfg.mask_scope == "pivot":
        # other passages may name the answer in this variant; only the pivot's own text must not
        scope_chunks = [doc[max(s, pivot_span[0]) : min(e, pivot_span[1])] for s, e in spans
                        if s < pivot_span[1] and e > pivot_span[0]]
    if any(leaks(c, forms) for c in scope_chunks):
        return DropReason("leak", key)
    n_mentions = sum(c.count(MASK) for c in chunks)
    if pat is not None:
        n_mentions += sum(pat.count(c) for c in chunks)
    if n_mentions < cfg.min_mentions:
        return DropReason("few_mentions", key)

    imr = imr_candidates(chunks, [pool[j] for j in ids[:n_kept]], pool, key, cfg, rng)
    answers = [canonical] + [f for f in answer_forms if f.casefold() != canonical.casefold()]
    pivot = pool[pivot_idx]
    return MemTask(
        id=f"e2e-{cfg.seed}-{pivot_idx}",
        kind="e2e",
        problem=E2E_PROBLEM,
        chunks=chunks,
        answers=answers,
        imr=imr,
        meta={
            "pivot_pid": pivot.pid,
            "pivot_title": pivot.title,
            "answer_key": key,
            "answer_label": pool.label(key),
            "mask_scope": cfg.mask_scope,
            "n_masked": n_mentions,
            "n_tokens": sum(n_tokens),
            "chunk_tokens": n_tokens,
            "n_chunks_before_window": n_full,
            "window_start": start,
            "pivot_chunks": [first - start, last_ - start],
            "passage_pids": [pool[j].pid for j in ids],
            "passages_kept": n_kept,
        },
    )


_LOWER_SINGLE = re.compile(r"^[a-z][a-z\-']*$")


def _has_word(text: str, form: str) -> bool:
    """``form`` occurs in ``text`` between non-word characters (both lower-cased, spaces normalised).

    A cheap prefilter for the regex matcher: a plain ``str.find`` loop is ~50x faster than compiling a
    pattern, and the regex still has the final word on every candidate that passes.
    """
    at = text.find(form)
    n = len(form)
    while at >= 0:
        before = text[at - 1] if at else " "
        after = text[at + n] if at + n < len(text) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
            return True
        at = text.find(form, at + 1)
    return False


def imr_candidates(
    chunks: list[str],
    passages: Sequence[Passage],
    pool: PassagePool,
    answer_key: str,
    cfg: E2EConfig,
    rng: random.Random,
) -> list[list[ImrCandidate]]:
    """Per chunk, the entities that only that chunk mentions (rule in the module docstring)."""
    lowered = [" ".join(c.casefold().split()) for c in chunks]
    # A word-bounded form starts at the start of a word of the text, and its first word ends where a
    # word of the text ends (a non-word character or the end follows both), so that word is in the
    # chunk's set of words: one set test per key and chunk, then the exact search for its forms.
    chunk_words = [set(_WORD.findall(t)) for t in lowered]
    # prefilter every key to the single chunk it occurs in, then verify (regex) in random order until the
    # chunk has its quota: most keys pass the prefilter, few need the slow checks
    by_chunk: list[list[str]] = [[] for _ in chunks]
    for key in sorted({e.key for p in passages for e in p.entities} - {answer_key}):
        if not pool.forms_ok(key):  # (b), the part that does not depend on the chunk
            continue
        firsts, forms = pool.lowered_forms(key)
        where = [i for i, words in enumerate(chunk_words) if not firsts.isdisjoint(words)
                 and any(_has_word(lowered[i], f) for w, f in forms if w in words)]
        if len(where) == 1:  # (c) exactly one chunk
            by_chunk[where[0]].append(key)
    out = []
    for i, keys in enumerate(by_chunk):
        rng.shuffle(keys)
        found: list[tuple[int, ImrCandidate]] = []
        for key in keys:
            if len(found) >= cfg.imr_per_chunk:
                break
            cand = _verify(i, key, chunks, lowered[i], pool, cfg)
            if cand is not None:
                found.append(cand)
        out.append([c for _, c in sorted(found, key=lambda t: (t[0], t[1].answer))])
    return out


def _verify(
    i: int, key: str, chunks: list[str], lowered: str, pool: PassagePool, cfg: E2EConfig
) -> tuple[int, ImrCandidate] | None:
    """The exact IMR checks for ``key`` in chunk ``i`` with the form matcher; None when one fails.

    Absence from the other chunks (c) rests on the prefilter: it compares case-folded text with
    normalised whitespace, which matches wherever the case-insensitive matcher does (and sometimes more,
    e.g. "ß" ~ "ss"), so "no prefilter hit" implies "no match"; the tests check (c) with the matcher.
    By the same argument the matcher is built only from the forms that occur in ``lowered`` (chunk
    ``i`` case-folded): most derived forms of most entities never do, and compiling them all cost more
    than the rest of the build.
    """
    pat = form_pattern([orig for low, orig in pool.lowered_pairs(key) if low in lowered])
    span = pat.search(chunks[i]) if pat else None
    if span is None:
        return None
    canonical = " ".join(chunks[i][span[0] : span[1]].split())
    if _LOWER_SINGLE.match(canonical) or not answer_ok(canonical, key, pool, cfg):  # (b)
        return None
    if pat.search(pat.sub(chunks[i], TARGET)[0]) is not None:  # (a)
        return None
    answer_forms = [canonical] + [f for f in pool.forms(key) if f.casefold() != canonical.casefold()]
    return span[0], ImrCandidate(answer=canonical, forms=answer_forms)
