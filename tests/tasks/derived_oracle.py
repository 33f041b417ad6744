"""An independent check for derived forms of an answer left in a text (tests only; never calls the masker).

:mod:`memtrain.tasks.masking` *generates* the derived forms of a form and masks them with a regex. This
checker goes the other way round: it tokenises the text into words and asks, for each word, whether it
and the answer's head word are a stem with two endings that the rules pair (``Angol|a`` and ``Angol|an``,
``Azerbaijan|is`` and ``Azerbaijan|i``, ``scien|ce`` and ``scien|ces``). The rules restate the spec in the
module docstring of masking (plurals, demonyms, -ism/-ist, a few irregular names), deliberately not
importing any of its code or tables, so a bug in generation, in the regex or in chunking shows up here.
The spec is directional where masking is (a demonym answer hides the "-ia" name, not "Victory" of
"Victorian"), so this finds no more than masking should have hidden.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache

WORD = re.compile(r"\w+")

# (answer ending, text ending, least answer length): text = answer's stem + text ending. "C" = any
# consonant kept as the last letter of the stem. Capitalised answers only (names).
NAME_RULES = [
    ("a", "an", 4), ("a", "ans", 4), ("a", "ese", 4), ("y", "ian", 5), ("y", "ians", 5), ("e", "ean", 4),
    ("i", "ian", 4), ("i", "ians", 4), ("co", "can", 4), ("co", "cans", 4),
    ("C", "ian", 4), ("C", "ians", 4), ("C", "ese", 4), ("C", "i", 5), ("C", "is", 5), ("C", "ism", 4),
    ("C", "ist", 4), ("C", "ists", 4), ("C", "istan", 4), ("land", "lander", 5), ("land", "landers", 5),
    ("land", "landic", 5), ("ian", "ianity", 4), ("ian", "ianism", 4),
    # a demonym answer: the name it comes from
    ("an", "a", 5), ("ans", "a", 6), ("can", "co", 5), ("ese", "a", 5), ("lander", "land", 7),
    ("landic", "land", 7), ("istan", "", 9), ("stan", "", 8),
]  # fmt: skip
ANY_RULES = [("ism", "ist"), ("ism", "ists"), ("ism", "istic"), ("ist", "ism"), ("ist", "ists"),
             ("ists", "ism"), ("ists", "ist")]
FAMILIES = [{"france", "french"}, {"greece", "greek", "greeks"}, {"britain", "british"},
            {"england", "english"}, {"spain", "spanish", "spaniards"}, {"germany", "german", "germans"},
            {"netherlands", "dutch"}, {"turkey", "turkish", "turks"}, {"italy", "italian", "italians"},
            {"rome", "roman", "romans"}]  # a family is closed: "Romans" derives "Rome", not "Roma"
VOWELS = set("aeiouy")


def _plurals(w: str) -> set[str]:
    if w.endswith(("s", "x", "z", "ch", "sh")):
        return {w + "es"}
    if w.endswith("y") and w[-2] not in VOWELS:
        return {w[:-1] + "ies"}
    return {w + "s"}


def _singular(w: str) -> str | None:
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("sses", "shes", "ches", "xes", "zes")):
        return w[:-2]
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return None


def related(answer_word: str, text_word: str) -> bool:
    """``text_word`` is a derived form of ``answer_word`` (not the word itself)."""
    if len(answer_word) < 4 or not answer_word.isalpha() or answer_word.isupper():
        return False
    a, t = answer_word.casefold(), text_word.casefold()
    if a == t or len(t) < 4 or not t.isalpha():
        return False
    if t in _plurals(a):
        return True
    name = answer_word[0].isupper()
    if not name and t == _singular(a):
        return True  # a plural answer's singular ("telescopes" -> "telescope")
    if name and ((a.endswith("ans") and len(a) >= 6) or (a.endswith("is") and len(a) >= 8)) and t == a[:-1]:
        return True  # "Americans" -> "American", "Azerbaijanis" -> "Azerbaijani"
    for x, y in ANY_RULES:
        if a.endswith(x) and t == a[: len(a) - len(x)] + y:
            return True
    if not name:
        return False
    if any(a in fam and t in fam for fam in FAMILIES):
        return True
    # a plural demonym answer is tested through its singular too ("Azerbaijanis" -> "Azerbaijan")
    heads = [a] + ([a[:-1]] if (a.endswith("ans") and len(a) >= 6) or (a.endswith("is") and len(a) >= 8)
                   else [])
    for h in heads:
        if any(h in fam for fam in FAMILIES):
            continue  # an irregular family derives nothing else
        for x, y, least in NAME_RULES:
            if len(h) < least:
                continue
            if x == "C":
                if h[-1] in VOWELS or not t.startswith(h) or t[len(h):] != y:
                    continue
                return True
            if h.endswith(x) and t == h[: len(h) - len(x)] + y and len(h) - len(x) >= 3:
                if (x == "an" and h.endswith("stan")) or (x == "stan" and h.endswith("istan")):
                    continue
                return True
        if h.endswith("i") and len(h) >= 6 and h[-2] not in VOWELS and h[-2] != "s" and t == h[:-1]:
            return True  # "Israeli" -> "Israel"
        if h.endswith("ese") and len(h) >= 8 and t == h[:-3]:
            return True  # "Japanese" -> "Japan"
    return False


HEAD = re.compile(r"(.*[-\u2010\u2013])?([^\W\d_]+)")  # an optional hyphenated lead, then letters


def _phrase(words: list[str]) -> str:
    """Words as a regex that matches them with any whitespace between (as the answer's own form would)."""
    return r"\s+".join(re.escape(w) for w in words)


@cache
def _form(ans: str) -> tuple[str, re.Pattern, re.Pattern, bool, frozenset[str]] | None:
    """(head, regex of what precedes it, regex of what follows, whether something must precede, the head's
    irregular family) for one answer form, or None when its head is not a word."""
    words = ans.split()
    if not words:
        return None
    i = words.index("of", 1) - 1 if "of" in words[1:-1] else len(words) - 1
    m = HEAD.fullmatch(words[i])
    if m is None:
        return None
    lead, head = m.group(1) or "", m.group(2)
    before = re.compile(r"(?<!\w)" + _phrase([*words[:i], ""]).removesuffix(r"\s+") +
                        (r"\s+" if i else "") + re.escape(lead) + r"\Z", re.IGNORECASE)
    after = re.compile((r"\s+" + _phrase(words[i + 1 :]) if i + 1 < len(words) else "") + r"(?!\w)",
                       re.IGNORECASE)
    family = next((fam for fam in FAMILIES if head.casefold() in fam), frozenset())
    return head, before, after, bool(i or lead), frozenset(family)


def derived_leaks(text: str, answers: Iterable[str]) -> list[tuple[str, str]]:
    """``(answer, phrase)`` for every derived form of an answer in ``text``: the answer with its head word
    (the last word, or the one before "of"; of a hyphenated word its last part) replaced by a related
    word, the rest of the answer around it as written, whole words (``\\w`` boundaries) case-insensitively."""
    toks = [(m.group(0), m.start(), m.end()) for m in WORD.finditer(text)]
    out = []
    for ans in answers:
        form = _form(ans)
        if form is None:
            continue
        head, before, after, needs_before, family = form
        h3 = head[:3].casefold()
        for t, s, e in toks:
            # every rule keeps a stem of 3+ letters, so only a family member can differ in its first three
            if t[:3].casefold() != h3 and t.casefold() not in family:
                continue
            if not related(head, t):
                continue
            b = before.search(text, 0, s) if needs_before else None
            a = after.match(text, e)
            if (b or not needs_before) and a:
                out.append((ans, " ".join(text[b.start() if b else s : a.end()].split())))
    return out
