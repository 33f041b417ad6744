"""Paragraphs -> passages of bounded size, keeping entity offsets exact.

Sizes are counted in whitespace-separated words, a cheap proxy for tokens that needs no tokenizer here:
English Wikipedia prose is about 1.3 SmolLM2 tokens per word, so the default 200-word bound is roughly
260 tokens. The task builder enforces real token budgets later; this bound only keeps passages
paragraph-sized so retrieval and masking work on coherent units.

Rules: a paragraph longer than ``max_words`` is split at sentence boundaries (never inside an entity);
a single sentence longer than that is cut at word boundaries. Consecutive short pieces of one article are
then merged (joined by a newline) while the result stays within ``max_words``; a merged passage still under
``min_words`` is dropped (headings left alone, captions, one-line list items).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from memtrain.records import Entity

Piece = tuple[str, list[Entity]]

# A sentence ends at . ! or ? (plus closing quotes/brackets) followed by space and an upper-case letter,
# digit or opening quote.
_SENT_END = re.compile(r"[.!?][\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_WORD = re.compile(r"\S+")
# Abbreviations after which a period does not end a sentence.
_ABBREV = frozenset(
    "mr mrs ms dr st jr sr prof gen col lt sgt capt rev vs etc e.g i.e c ca no vol fig approx est inc ltd co "
    "corp dept univ mt ft jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k".split()
)


def word_count(text: str) -> int:
    return len(text.split())


def _slice(text: str, ents: list[Entity], s: int, e: int) -> Piece:
    """``text[s:e]`` stripped, with the entities wholly inside it re-based."""
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return text[s:e], [
        Entity(x.start - s, x.end - s, x.text, x.label, x.key) for x in ents if x.start >= s and x.end <= e
    ]


def _sentence_cuts(text: str, ents: list[Entity]) -> list[int]:
    """Offsets where sentences end (after the trailing space), skipping abbreviations and entity spans."""
    cuts = []
    for m in _SENT_END.finditer(text):
        p = m.start()
        if text[p] == ".":
            w = text.rfind(" ", 0, p) + 1
            prev = text[w:p].lower().lstrip("(\"'")
            if prev in _ABBREV or (len(prev) == 1 and prev.isalpha()):
                continue  # "Dr. Smith", "John F. Kennedy"
        cut = m.end()
        if any(x.start < cut < x.end or x.start < p < x.end for x in ents):
            continue
        cuts.append(cut)
    return cuts


def split_long(text: str, ents: list[Entity], max_words: int) -> list[Piece]:
    """Split one paragraph into pieces of at most ``max_words`` words, preferring sentence boundaries."""
    if word_count(text) <= max_words:
        return [(text, ents)]
    bounds = [0, *_sentence_cuts(text, ents), len(text)]
    pieces: list[Piece] = []
    start = 0
    words = 0
    for a, b in zip(bounds, bounds[1:], strict=False):
        n = word_count(text[a:b])
        if words and words + n > max_words:
            pieces.append(_slice(text, ents, start, a))
            start, words = a, 0
        if n > max_words:  # one overlong sentence: cut at word boundaries
            spans = [m.span() for m in _WORD.finditer(text, a, b)]
            for i in range(0, len(spans), max_words):
                chunk = spans[i : i + max_words]
                pieces.append(_slice(text, ents, chunk[0][0], chunk[-1][1]))
            start, words = b, 0
            continue
        words += n
    if start < len(text):
        pieces.append(_slice(text, ents, start, len(text)))
    return [p for p in pieces if p[0]]


def make_passages(
    paragraphs: list[Piece],
    max_words: int = 200,
    min_words: int = 20,
    on_drop: Callable[[str], None] | None = None,
) -> list[Piece]:
    """Split long paragraphs and merge short ones into passages of ``min_words..max_words`` words.

    ``on_drop(reason)`` is called for each passage dropped as too short (for skip counters).
    """
    out: list[Piece] = []
    buf_text: list[str] = []
    buf_ents: list[Entity] = []
    buf_len = 0
    buf_words = 0

    def flush() -> None:
        nonlocal buf_len, buf_words
        if buf_text and buf_words >= min_words:
            out.append(("\n".join(buf_text), buf_ents.copy()))
        elif buf_text and on_drop is not None:
            on_drop("short_passage")
        buf_text.clear()
        buf_ents.clear()
        buf_len = buf_words = 0

    for text, ents in paragraphs:
        for ptext, pents in split_long(text, ents, max_words):
            n = word_count(ptext)
            if buf_text and buf_words + n > max_words:
                flush()
            off = buf_len + 1 if buf_text else 0
            if off:
                pents = [Entity(e.start + off, e.end + off, e.text, e.label, e.key) for e in pents]
            buf_text.append(ptext)
            buf_ents.extend(pents)
            buf_len = off + len(ptext)
            buf_words += n
    flush()
    return out
