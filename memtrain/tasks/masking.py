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
- the *derived forms* of every form are masked too (:func:`derived_forms`): plurals and singulars of its
  head word ("cognitive sciences" of "cognitive science"), demonyms and other adjectival forms of a name
  ("Algerian" of "Algeria", "Azerbaijan" of "Azerbaijanis"), "-ism"/"-ist" siblings. Like the parts
  they are hidden, never accepted as answers. Possessives need no rule: "Angola's" is "Angola" followed
  by a non-word character, so the word-bounded match already takes it.

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


def _trie_regex(forms: tuple[str, ...]) -> str:
    """The alternation of ``forms`` as a prefix trie: the same matches as the flat, longest-first
    alternation of :func:`_form_regex`, but a fraction of the pattern to compile and to try.

    Equivalent because siblings branch on different (lower-cased) characters, so at most one child can
    match the text, and each node tries its children before ending there: the first success is the
    longest form, as in the flat alternation, and on a failed look-ahead the engine backtracks to the
    next shorter one just the same. Forms with a character that lower-cases to something else than it
    case-folds to ("İ", "ß", "ſ": siblings might then match the same text) keep the flat alternation.
    """
    if not all(f.isascii() for f in forms) and any(
            len(ch.lower()) != 1 or ch.lower() != ch.casefold() for f in forms for ch in f):
        return "|".join(_form_regex(f) for f in forms)
    root: dict[str, dict] = {}
    for f in forms:
        node = root
        for ch in " ".join(f.split()).lower():
            node = node.setdefault(ch, {})
        node[""] = {}  # a form ends here

    def emit(node: dict[str, dict]) -> str:
        branches = [(r"\s+" if ch == " " else re.escape(ch)) + emit(sub) for ch, sub in sorted(node.items())
                    if ch]
        if not branches:
            return ""
        if "" not in node and len(branches) == 1:
            return branches[0]
        return "(?:" + "|".join(branches) + (")?" if "" in node else ")")

    return emit(root)


def _is_word(ch: str) -> bool:
    """Exactly ``re``'s ``\\w`` for str patterns (alphanumeric per Unicode, or underscore)."""
    return ch.isalnum() or ch == "_"


class FormMatcher:
    """Finds the surface forms of one entity: case-insensitive, word-bounded, longest form first.

    Semantically the regex ``(?<!\\w)(?:form1|form2|...)(?!\\w)`` with IGNORECASE, the alternation compiled
    as a trie (:func:`_trie_regex`: an entity with its derived forms has dozens). The left look-behind is
    checked by hand instead: a pattern that starts with a look-behind cannot use the regex engine's
    prefix scan and searches ~2.5x slower, and the builder runs hundreds of searches per task. After a
    rejected start the search resumes one character later, exactly as the look-behind regex would.
    """

    __slots__ = ("forms", "_re")

    def __init__(self, forms: tuple[str, ...]) -> None:
        self.forms = forms
        self._re = re.compile("(?:" + _trie_regex(forms) + r")(?!\w)", re.IGNORECASE)

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
    """``forms``, their identifying parts and their derived forms: everything masking one entity must hide.

    Parts are not derived further: "Mills" of a bare "Mill" (of "John Stuart Mill") names someone else.
    """
    forms = list(forms)
    return normalize_forms([*forms, *(p for f in forms for p in (*identifying_parts(f), *derived_forms(f)))])


# ------------------------------------------------------------------------------------------ derived forms
#
# Rules, not a lexicon: the suffix rewrites English uses for plurals and for the peoples, languages and
# doctrines named after a name, applied to the head word of a form. A rewrite can only hide a word that
# *is* the rewritten string, so most rewrites ("Angolese") hide nothing; the risk is one that happens to
# be an unrelated real word, and each guard below exists because of one: no singular of a capitalised
# word unless it is a demonym plural ("Williams" -> "William"), no "+ish" ("Corn" -> "Cornish"), no "-a" ->
# "-ian" or "-ism" ("Barbara" -> "barbarian", "Arta" -> "artist"), "-ian" -> "-ia" only ("Georgian" ->
# "George", "Victorian" -> "Victory", "Guardian" -> "guard"), "-ese" -> name only from 5+ letters
# ("Chinese" -> "chin"), "+i" and "-i" only with 5+ and 6+ letters ("Paul" -> "Pauli", "Bondi" -> "bond"),
# "-an" -> "-o" only for "-can" ("Logan" -> "logo"), forward rules from the word itself, never from a
# guessed base ("Persian" -> "Pers" -> "persist"), and stems of at least MIN_DERIVED_CHARS letters.
# IRREGULAR_DEMONYMS, the one table, holds the families no rule reaches ("France", "French"; "Italian" ->
# "Italy" too, which "-ian" -> "-y" would reach only with "Victorian" -> "Victory"); a word in it derives
# only its listed family ("Roman" -> "Rome", not "Romanian").

MIN_DERIVED_CHARS = 4  # shorter words derive nothing, and no shorter stem or word is derived

IRREGULAR_DEMONYMS: dict[str, tuple[str, ...]] = {
    "France": ("French", "Frenchman", "Frenchmen"), "Britain": ("British", "Briton", "Britons"),
    "England": ("English", "Englishman", "Englishmen"), "Spain": ("Spanish", "Spaniard", "Spaniards"),
    "Greece": ("Greek", "Greeks"), "Netherlands": ("Dutch",), "Holland": ("Dutch",), "Wales": ("Welsh",),
    "Ireland": ("Irish", "Irishman", "Irishmen"), "Scotland": ("Scottish", "Scots", "Scotsman", "Scotsmen"),
    "Poland": ("Polish",), "Denmark": ("Danish", "Danes"), "Sweden": ("Swedish", "Swedes"),
    "Finland": ("Finnish", "Finns"), "Switzerland": ("Swiss",), "Turkey": ("Turkish", "Turks"),
    "Portugal": ("Portuguese",), "Norway": ("Norwegian", "Norwegians"), "Germany": ("German", "Germans"),
    "Peru": ("Peruvian", "Peruvians"), "Thailand": ("Thai", "Thais"), "Cyprus": ("Cypriot", "Cypriots"),
    "Philippines": ("Filipino", "Filipinos", "Philippine"), "Ghana": ("Ghanaian", "Ghanaians"),
    "Belgium": ("Belgian", "Belgians"), "Cornwall": ("Cornish",), "Rome": ("Roman", "Romans"),
    "Athens": ("Athenian", "Athenians"), "Venice": ("Venetian", "Venetians"),
    "Islam": ("Islamic", "Islamism", "Islamist", "Islamists"), "Kurd": ("Kurds", "Kurdish", "Kurdistan"),
    "Arab": ("Arabs", "Arabic", "Arabia", "Arabian"), "Canada": ("Canadian", "Canadians"),
    "Ukraine": ("Ukrainian", "Ukrainians"), "Iraq": ("Iraqi", "Iraqis"), "Oman": ("Omani", "Omanis"),
    "Buddha": ("Buddhism", "Buddhist", "Buddhists"), "Crete": ("Cretan", "Cretans"),
    "Romania": ("Romanian", "Romanians"), "Italy": ("Italian", "Italians"),
    "Hungary": ("Hungarian", "Hungarians"), "Brazil": ("Brazilian", "Brazilians"),
    "Egypt": ("Egyptian", "Egyptians"), "Iran": ("Iranian", "Iranians"),
}  # fmt: skip
_IRREGULAR: dict[str, frozenset[str]] = {}
for _name, _adjs in IRREGULAR_DEMONYMS.items():
    for _w in (_name, *_adjs):
        _IRREGULAR[_w.casefold()] = _IRREGULAR.get(_w.casefold(), frozenset()) | {_name, *_adjs}
_VOWELS = frozenset("aeiouy")


def _plural(w: str) -> str:
    low = w.casefold()
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return w + "es"
    if low.endswith("y") and low[-2:-1] not in _VOWELS:
        return w[:-1] + "ies"
    return w + "s"


def _singular(w: str) -> str | None:
    """The singular of a plural-looking word, or None.

    A capitalised word is a name unless it is a demonym plural ("Americans", "Azerbaijanis"): the
    singular of "Williams", "Adams" or "Gates" is someone (or something) else, and that of "Evans" too.
    """
    low = w.casefold()
    if w[:1].isupper():
        if (low.endswith("ans") and len(w) >= 6) or (low.endswith("is") and len(w) >= 8):
            return w[:-1]  # not "Evans" -> Evan, "Solaris" -> Solari
        return None
    if low.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if low.endswith(("sses", "shes", "ches", "xes", "zes")):
        return w[:-2]
    if low.endswith("s") and not low.endswith(("ss", "us", "is")):
        return w[:-1]
    return None


def _base_names(w: str) -> set[str]:
    """Candidate names the demonym or adjective ``w`` is formed from ("Algerian" -> "Algeria", "Israeli"
    -> "Israel", "Japanese" -> "Japan", "Afghanistan" -> "Afghan"); one that is not a word hides nothing."""
    low, out = w.casefold(), set()
    if low.endswith("stan"):
        out.add(w[:-5] if low.endswith("istan") else w[:-4])  # Afghan, Kazakh, Uzbek
    elif low.endswith("an"):
        out.add(w[:-1])  # Angola, Korea, India, Algeria; not Victor(y) of Victorian, Guard of Guardian
        if low.endswith("can"):
            out.add(w[:-2] + "o")  # Mexico, Morocco
    elif low.endswith("ese"):
        if len(w) - 3 >= 5:
            out.add(w[:-3])  # Japan, Sudan
        out.add(w[:-3] + "a")  # China, Malta
    elif low.endswith("i") and len(w) >= 6 and low[-2] not in _VOWELS and low[-2] != "s":
        out.add(w[:-1])  # Israel, Pakistan; not bond of Bondi
    elif low.endswith(("lander", "landic")):
        out.add(w[:-2])  # Iceland
    return {b for b in out if len(b) >= MIN_DERIVED_CHARS}


def _adjectives(b: str) -> set[str]:
    """Demonyms, languages and doctrines formed from the name ``b`` by suffix rules."""
    low, out = b.casefold(), set()
    last = low[-1]
    if low.endswith(("ian", "ese", "ism", "ist", "ists")):  # already derived
        return {b + "ity", b + "ism"} if last == "n" else set()  # Christianity, Zoroastrianism
    if last == "a":
        out |= {b + "n", b[:-1] + "ese"}  # Angolan, Chinese
    elif last == "y":
        if len(b) >= 5:
            out.add(b[:-1] + "ian")  # Italian, Tarkovskian; not Julian of July
    elif last == "e":
        out.add(b + "an")  # European, Chilean
    elif last == "o":
        out |= {b + "an", b + "stan"}  # Idahoan
        if low.endswith("co"):
            out.add(b[:-1] + "an")  # Mexican
    elif last in "iu":
        out |= {b + "an", b + "stan"}  # Haitian, Malian; Hindustan
    elif last not in _VOWELS:
        out |= {b + "ian", b + "ese", b + "ism", b + "ist", b + "istan"}  # Brazilian, Japanese, Marxism,
        if len(b) >= 5:  # Afghanistan
            out.add(b + "i")  # Israeli, Yemeni; not Pauli of Paul
        if low.endswith("land") and len(b) > 4:
            out |= {b + "er", b + "ic"}  # Icelander, Icelandic
    return {x for x in out if x.casefold() != low}


def _doctrine_siblings(w: str) -> set[str]:
    """-ism <-> -ist(s): "feminism" and "feminist(s)", "Buddhism" and "Buddhist"."""
    low = w.casefold()
    if low.endswith("ism"):
        return {w[:-3] + "ist", w[:-3] + "ists", w[:-3] + "istic"}
    if low.endswith("ists"):
        return {w[:-4] + "ism", w[:-1]}
    if low.endswith("ist"):
        return {w[:-3] + "ism", w[:-3] + "ists", w[:-3] + "istic"}
    return set()


@lru_cache(maxsize=65536)
def word_variants(w: str) -> frozenset[str]:
    """The derived forms of one word (``w`` itself excluded), by the rules above.

    Every word: its plural or singular and its -ism/-ist siblings. A capitalised word (a name; acronyms
    and words with digits or punctuation derive nothing) also: the names it may be a demonym of, the
    demonyms and doctrines of it and of those names, with the plurals of the people words ("Angolans"),
    or else its irregular family (:data:`IRREGULAR_DEMONYMS`).
    """
    if len(w) < MIN_DERIVED_CHARS or not w.isalpha() or w.isupper():
        return frozenset()
    low = w.casefold()
    out = {_plural(w), *_doctrine_siblings(w)}
    single = _singular(w)
    if single is not None:
        out.add(single)
    if w[:1].isupper():
        if low in _IRREGULAR:
            out |= _IRREGULAR[low]
        else:  # forward rules from the word itself only: those from a guessed base guess twice ("Persist")
            own = [w, single] if single else [w]
            bases = {*_base_names(w), *_base_names(single or "")}
            names = bases.union(*(_adjectives(x) for x in own))
            out |= names
            out |= {_plural(x) for x in names if x.casefold().endswith(("a", "an", "i", "ist", "er"))}
    # every x is alphabetic: is_maskable_form reduces to these checks
    return frozenset(x for x in out if len(x) >= MIN_DERIVED_CHARS and x.casefold() != low
                     and x.casefold() not in COMMON_WORDS and x.casefold() not in _PLACEHOLDER_WORDS)


_HYPHENATED = re.compile(r"(.*[-\u2010\u2013])([^\W\d_]+)")  # "African-Americans": "African-" + "Americans"


def derived_forms(form: str) -> tuple[str, ...]:
    """``form`` with its head word replaced by each derived form of that word (:func:`word_variants`).

    The head is the last word ("North African" of "North Africa"), or the word before "of" in an "X of
    Y" name ("Presidents of the United States"); of a hyphenated head, its last part ("African-American"
    of "African-Americans").
    """
    words = form.split()
    if not words:
        return ()
    i = words.index("of", 1) - 1 if "of" in words[1:-1] else len(words) - 1
    head, lead = words[i], ""
    if (m := _HYPHENATED.fullmatch(head)) is not None:
        lead, head = m.groups()
    return tuple(" ".join([*words[:i], lead + v, *words[i + 1 :]]) for v in sorted(word_variants(head)))


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
