"""Masking entity mentions and checking that a masked text no longer gives the answer away.

The E2E task is only meaningful if the answer never survives masking: the agent must reconstruct it from
context, not copy it. So masking is deliberately greedy:

- every surface form of the entity is masked (all anchor texts of a link target, the target itself, ...);
- matching is case-insensitive and any run of whitespace in a form matches any whitespace in the text;
- matches are *word-bounded* with look-arounds (``(?<!\\w)`` / ``(?!\\w)``) rather than ``\\b``,
  because ``\\b`` fails for forms that start or end with a non-word character (``U.S.``, ``C++``,
  ``(band)``): "Paris" does not match inside "Parisian", but "U.S." matches in "the U.S. army";
- longer forms are tried first, so "New York City" is masked as one unit rather than leaving "City";
- the shorter names that still identify a multi-word entity are masked too (:func:`identifying_parts`):
  masking "Barack Obama" also masks a later bare "Obama", and "Paris, Texas" also masks "Paris". Answers
  stay the entity's own forms; the parts are only hidden (and checked for by the leak check).

:func:`leaks` applies the same matcher, so "masked" and "does not leak" are checked by one definition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache

from memtrain.prompts import MASK, TARGET

# Function words and very common English words: a single-word entity from this list is not an answer a
# model can be fairly scored on (and masking it would blank half the document).
COMMON_WORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few first for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just last
    least less many may me might more most much must my myself new no nor not now of off often old on once
    one only or other our ours ourselves out over own same she should since so some such than that the
    their theirs them themselves then there these they this those through to too two three under until up
    upon us very was we were what when where which while who whom whose why will with within without would
    yet you your yours yourself yourselves made make part people time used use way well year years world
    state states city country war name known day days later early first second third many several""".split()
)

_PLACEHOLDER_WORDS = {MASK.strip("[]").lower(), TARGET.strip("[]").lower()}


def _form_regex(form: str) -> str:
    """One form as a regex: literal text, any whitespace run matching any whitespace run."""
    return r"\s+".join(re.escape(part) for part in form.split())


def _is_word(ch: str) -> bool:
    """Exactly ``re``'s ``\\w`` for str patterns (alphanumeric per Unicode, or underscore)."""
    return ch.isalnum() or ch == "_"


class FormMatcher:
    """Finds the surface forms of one entity: case-insensitive, word-bounded, longest form first.

    Semantically the regex ``(?<!\\w)(?:form1|form2|...)(?!\\w)`` with IGNORECASE. The left look-behind is
    checked by hand instead: a pattern that starts with a look-behind cannot use the regex engine's
    prefix scan and searches ~2.5x slower, and the builder runs hundreds of searches per task. After a
    rejected start the search resumes one character later, exactly as the look-behind regex would.
    """

    __slots__ = ("forms", "_re")

    def __init__(self, forms: tuple[str, ...]) -> None:
        self.forms = forms
        self._re = re.compile("(?:" + "|".join(_form_regex(f) for f in forms) + r")(?!\w)", re.IGNORECASE)

    def finditer(self, text: str) -> Iterator[tuple[int, int]]:
        """``(start, end)`` of every non-overlapping occurrence, left to right."""
        pos, search = 0, self._re.search
        while (m := search(text, pos)) is not None:
            start, end = m.span()
            if start and _is_word(text[start - 1]):
                pos = start + 1
                continue
            yield start, end
            pos = end

    def search(self, text: str) -> tuple[int, int] | None:
        return next(self.finditer(text), None)

    def sub(self, text: str, token: str) -> tuple[str, int]:
        parts, last, n = [], 0, 0
        for start, end in self.finditer(text):
            parts += (text[last:start], token)
            last, n = end, n + 1
        return ("".join(parts) + text[last:], n) if n else (text, 0)

    def count(self, text: str) -> int:
        return sum(1 for _ in self.finditer(text))


@lru_cache(maxsize=4096)
def _compile(forms: tuple[str, ...]) -> FormMatcher | None:
    forms = tuple(f for f in forms if f.strip())
    return FormMatcher(forms) if forms else None


def normalize_forms(forms: Iterable[str]) -> tuple[str, ...]:
    """Deduplicate forms case-insensitively (first spelling wins) and sort longest first.

    Longest-first matters because regex alternation takes the first alternative that matches, not the
    longest; ties are broken alphabetically so the result (and the pattern cache key) is deterministic.
    """
    seen: dict[str, str] = {}
    for f in forms:
        f = " ".join(f.split())
        if f and f.casefold() not in seen:
            seen[f.casefold()] = f
    return tuple(sorted(seen.values(), key=lambda s: (-len(s), s.casefold(), s)))


def form_pattern(forms: Iterable[str]) -> FormMatcher | None:
    """The compiled matcher for ``forms`` (None when there is no non-empty form)."""
    return _compile(normalize_forms(forms))


def mask_entity(text: str, forms: Iterable[str], token: str = MASK) -> tuple[str, int]:
    """Replace every occurrence of every surface form in ``text`` by ``token``.

    Returns ``(masked_text, n_replaced)``. Case-insensitive, word-bounded, longest forms first.
    """
    pat = form_pattern(forms)
    if pat is None:
        return text, 0
    return pat.sub(text, token)


def count_mentions(text: str, forms: Iterable[str]) -> int:
    """How many times any form occurs in ``text`` (same matcher as :func:`mask_entity`)."""
    pat = form_pattern(forms)
    return 0 if pat is None else pat.count(text)


def identifying_parts(form: str) -> tuple[str, ...]:
    """The shorter names inside a multi-word form that identify the entity on their own.

    The rule, for a proper name of 2-4 capitalised words: its trailing word spans (a person's surname:
    "Obama" of "Barack Obama", "Clark" and "Rogers Clark" of "George Rogers Clark") and the name without
    trailing common words ("New York" of "New York City"); for any form, the head of a comma-qualified
    name ("Paris" of "Paris, Texas"). A part must itself be maskable (not a common word, >= 3 characters).
    Leading words alone ("Barack", "Roman" of "Roman Empire") and lower-case phrases are not parts.
    """
    f = " ".join(form.split())
    head = f.split(",")[0].strip()
    parts = [head] if head != f and len(f.split()) <= 5 else []  # a name, not a comma in a long anchor
    words = head.split()
    if 2 <= len(words) <= 4 and all(w[:1].isupper() for w in words):
        parts += [" ".join(words[i:]) for i in range(1, len(words))]
        core = list(words)
        while len(core) > 1 and core[-1].casefold() in COMMON_WORDS:
            core.pop()
        if len(core) < len(words):
            parts.append(" ".join(core))
    return tuple(p for p in parts if is_maskable_form(p))


def with_parts(forms: Iterable[str]) -> tuple[str, ...]:
    """``forms`` and their identifying parts: everything masking one entity must hide."""
    forms = list(forms)
    return normalize_forms([*forms, *(p for f in forms for p in identifying_parts(f))])


def leaks(text: str, answer_forms: Iterable[str]) -> bool:
    """True when any answer form still occurs in ``text`` (case-insensitive, word-bounded)."""
    pat = form_pattern(answer_forms)
    return pat is not None and pat.search(text) is not None


def is_maskable_form(form: str, min_chars: int = 3) -> bool:
    """Whether ``form`` can be an answer: not a common word, not too short, not a placeholder word.

    Placeholder words are refused because masking "Mask" would rewrite the ``[MASK]`` tokens themselves and
    make the leak check report the placeholder as the answer.
    """
    f = " ".join(form.split())
    if len(f) < min_chars or not any(ch.isalnum() for ch in f):
        return False
    low = f.casefold()
    if low in COMMON_WORDS or low in _PLACEHOLDER_WORDS:
        return False
    return not any(w in _PLACEHOLDER_WORDS for w in re.findall(r"\w+", low))
