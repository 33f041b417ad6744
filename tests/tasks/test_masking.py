"""Masking and the leak check: every form, case-insensitive, word-bounded, longest first."""

from __future__ import annotations

import pytest

from memtrain.tasks.masking import (
    count_mentions,
    is_maskable_form,
    leaks,
    mask_entity,
    normalize_forms,
)


def test_masks_every_occurrence_case_insensitively():
    out, n = mask_entity("Paris is big. PARIS, paris and Paris.", ["Paris"])
    assert out == "[MASK] is big. [MASK], [MASK] and [MASK]."
    assert n == 4


def test_word_boundary_keeps_longer_words():
    out, n = mask_entity("A Parisian in Paris; Paris-based; SubParis", ["Paris"])
    assert out == "A Parisian in [MASK]; [MASK]-based; SubParis"
    assert n == 2
    assert not leaks("A Parisian café", ["Paris"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the U.S. army", "the [MASK] army"),
        ("born in the U.S.", "born in the [MASK]"),
        ("(U.S.) flag", "([MASK]) flag"),
        ("the U.S.A. is", "the U.S.A. is"),  # a different, longer token: not this form
        ("USA", "USA"),
    ],
)
def test_forms_with_punctuation(text, expected):
    assert mask_entity(text, ["U.S."])[0] == expected


def test_forms_ending_in_symbols():
    assert mask_entity("C++ and C++17 and C#", ["C++", "C#"])[0] == "[MASK] and C++17 and [MASK]"


def test_longest_form_first():
    out, n = mask_entity("New York City is in New York, not York.", ["York", "New York", "New York City"])
    assert out == "[MASK] is in [MASK], not [MASK]."
    assert n == 3
    assert normalize_forms(["York", "new york", "New York City", "New York"]) == (
        "New York City", "new york", "York",
    )


def test_whitespace_in_forms_matches_any_whitespace():
    assert mask_entity("New\nYork and New   York", ["New York"]) == ("[MASK] and [MASK]", 2)


def test_custom_token_and_no_forms():
    assert mask_entity("Ada Lovelace wrote", ["Ada Lovelace"], token="[TARGET]")[0] == "[TARGET] wrote"
    assert mask_entity("unchanged", []) == ("unchanged", 0)
    assert mask_entity("unchanged", ["  "]) == ("unchanged", 0)


def test_regex_metacharacters_are_literal():
    assert mask_entity("a.b axb (x) x", ["a.b", "(x)"])[0] == "[MASK] axb [MASK] x"


def test_leaks():
    assert leaks("he went to paris", ["Paris"])
    assert leaks("x Ile-de-France", ["France", "Paris"])
    assert not leaks("he went to [MASK]", ["Paris", "City of Light"])
    assert not leaks("anything", [])
    assert count_mentions("Paris, paris, Parisian", ["Paris"]) == 2


def test_masked_text_never_leaks():
    text = "The United States (US, U.S.) -- us and the U.S. of America; united states."
    forms = ["United States", "U.S.", "US"]
    masked, _ = mask_entity(text, forms)
    assert not leaks(masked, forms)


def test_maskable_forms():
    assert is_maskable_form("Paris")
    assert is_maskable_form("1969")
    assert not is_maskable_form("the")
    assert not is_maskable_form("UK", min_chars=3)
    assert is_maskable_form("UK", min_chars=2)
    assert not is_maskable_form("--")
    assert not is_maskable_form("Mask")  # would rewrite the [MASK] placeholders themselves
    assert not is_maskable_form("Target Corporation")


def test_matcher_equals_the_lookbehind_regex():
    """FormMatcher checks the left boundary by hand; it must agree with the plain look-around regex."""
    import re

    from memtrain.tasks.masking import _form_regex, form_pattern

    texts = [
        "xa-b c, a-b c and b c", "U.S.A and U.S. x (U.S.)",
        "Paris Parisian xParis _Paris Paris_ (Paris) PARIS",
        "Ünïcode Ärger ärger Ärgernis", "new  york\tNew York-based NewYork",
    ]
    for forms in [("a-b c", "b c"), ("U.S.",), ("Paris",), ("Ärger",), ("New York", "York")]:
        forms = normalize_forms(forms)
        ref = re.compile(r"(?<!\w)(?:" + "|".join(_form_regex(f) for f in forms) + r")(?!\w)", re.IGNORECASE)
        pat = form_pattern(forms)
        for text in texts:
            assert list(pat.finditer(text)) == [m.span() for m in ref.finditer(text)], (forms, text)
            assert mask_entity(text, forms) == ref.subn("[MASK]", text)


def test_masking_a_name_leaves_no_identifying_part_on_real_pages():
    """On the embedded dump, masking "William Godwin" must not leave a bare "Godwin" behind (it did)."""
    pytest.importorskip("gensim")
    from memtrain.corpus import iter_passages
    from memtrain.tasks.e2e import PassagePool
    from memtrain.tasks.masking import identifying_parts, with_parts

    passages = list(iter_passages("embedded", entities="auto", limit_pages=20))
    pool = PassagePool(passages)
    checked = 0
    for p in passages:
        for e in p.entities:
            forms = pool.forms(e.key)
            parts = [x for f in forms for x in identifying_parts(f)]
            if not parts or not leaks(mask_entity(p.text, forms)[0], parts):
                continue  # no part of this name stands alone in the passage
            checked += 1
            masked, _ = mask_entity(p.text, with_parts(forms))
            assert not leaks(masked, [*forms, *parts]), (p.title, e.key)
    assert checked > 50  # bare surnames and unqualified names are common on real pages
    godwin = [e for p in passages if p.title == "Anarchism" for e in p.entities if e.key == "William Godwin"]
    assert godwin and "Godwin" in identifying_parts("William Godwin")


def test_identifying_parts_rule():
    from memtrain.tasks.masking import identifying_parts

    assert identifying_parts("Barack Obama") == ("Obama",)
    assert set(identifying_parts("New York City")) == {"New York", "York City"}
    assert identifying_parts("Paris, Texas") == ("Paris",)
    assert identifying_parts("Japanese tea ceremony") == ()  # not a proper name: no parts
    assert identifying_parts("Paris") == ()


# ------------------------------------------------------------------------------------------ derived forms


def masked(text: str, *forms: str) -> str:
    from memtrain.tasks.masking import with_parts

    return mask_entity(text, with_parts(forms))[0]


@pytest.mark.parametrize(
    ("form", "text", "expected"),
    [
        ("Algeria", "the Algerian President met Algerians", "the [MASK] President met [MASK]"),
        ("Angola", "the first Angolan, Angolans' and Angola's", "the first [MASK], [MASK]' and [MASK]'s"),
        ("Christian", "Arab Christians and Christianity", "Arab [MASK] and [MASK]"),
        ("cognitive science", "the cognitive sciences", "the [MASK]"),
        ("Azerbaijanis", "an Azerbaijani in Azerbaijan", "an [MASK] in [MASK]"),
        ("Italian", "Italians of Italy", "[MASK] of [MASK]"),  # the irregular table
        ("Japan", "Japanese", "[MASK]"), ("Japanese", "Japan", "[MASK]"), ("China", "Chinese", "[MASK]"),
        ("Israel", "Israeli and Israelis", "[MASK] and [MASK]"), ("Mexico", "Mexican", "[MASK]"),
        ("Afghanistan", "Afghans", "[MASK]"), ("Iceland", "Icelandic", "[MASK]"),
        ("France", "the French", "the [MASK]"), ("French", "in France", "in [MASK]"),
        ("feminism", "feminists", "[MASK]"), ("Buddhist", "Buddhism", "[MASK]"),
        ("telescopes", "a telescope", "a [MASK]"), ("city", "cities", "[MASK]"),
        ("North Africa", "North African states", "[MASK] states"),
        ("President of the United States", "Presidents of the United States", "[MASK]"),
    ],
)  # fmt: skip
def test_derived_forms_are_masked(form, text, expected):
    assert masked(text, form) == expected


@pytest.mark.parametrize(
    ("form", "text"),
    [
        ("Angola", "Angle, Angles, Anglo, angular"), ("India", "Indiana"), ("Paris", "a parish"),
        ("Williams", "William"), ("Gates", "a gate"), ("Evans", "Evan"), ("Georgian", "George"),
        ("Victorian", "Victory, Victor"), ("Chinese", "his chin"), ("Maltese", "malt"),
        ("Spanish", "a span"), ("Logan", "a logo"), ("Paul", "Pauli"), ("Bondi", "a bond"),
        ("Persian", "persist"), ("Julian", "July"), ("July", "Julian"), ("Corn", "Cornish"),
        ("Barbara", "barbarian"), ("Arta", "artist"), ("Roman", "Romanian"), ("Solaris", "solar"),
        ("UNITA", "United"), ("Genesis", "genes"), ("news", "new"), ("Ira", "Iran"),
    ],
)  # fmt: skip
def test_derived_forms_leave_unrelated_words(form, text):
    """Each pair is a rewrite that would hit a real, unrelated word without its guard (masking.py)."""
    assert masked(text, form) == text


def test_derived_forms_only_from_the_entitys_own_forms():
    from memtrain.tasks.masking import derived_forms, identifying_parts, with_parts

    assert "Mills" not in with_parts(["John Stuart Mill"])  # a part ("Mill") derives nothing
    assert "Mill" in identifying_parts("John Stuart Mill")
    assert derived_forms("U.S.") == derived_forms("NASA") == derived_forms("1969") == ()
    assert "mask" not in with_parts(["masks"]) and "Target" not in with_parts(["Targets"])  # placeholders


def test_trie_matcher_equals_the_flat_alternation():
    """The trie-compiled matcher finds exactly what the flat longest-first alternation finds."""
    import random
    import re

    from memtrain.tasks.masking import _form_regex, form_pattern, with_parts

    rng = random.Random(0)
    words = ["Angola", "Angolan", "angolans", "New York", "new  York City", "York", "Paris", "Parisian",
             "U.S.", "C++", "Ärger", "ß", "ſun", "SUN", "İstanbul", "cognitive science", "Azerbaijanis",
             "a-b c", "b c"]
    fillers = ["-", "(", "and", "xAngola", "Angolax", "sun", "Angolanss", "cognitive sciences."]
    for _ in range(2000):
        forms = normalize_forms(with_parts(rng.sample(words, rng.randint(1, 5))))
        text = " ".join(rng.choice(words + fillers) for _ in range(14))
        ref = re.compile(r"(?<!\w)(?:" + "|".join(_form_regex(f) for f in forms) + r")(?!\w)", re.IGNORECASE)
        got = list(form_pattern(forms).finditer(text))
        assert got == [m.span() for m in ref.finditer(text)], (forms, text)


def test_oracle_finds_what_masking_should_hide():
    """The independent checker of tests/tasks/derived_oracle.py, on hand-made cases."""
    from derived_oracle import derived_leaks

    assert derived_leaks("the Algerian President", ["Algeria"]) == [("Algeria", "Algerian")]
    assert derived_leaks("Arab Christians", ["Christian"]) == [("Christian", "Christians")]
    assert derived_leaks("the cognitive sciences", ["cognitive science"]) == [
        ("cognitive science", "cognitive sciences")]
    assert derived_leaks("an Azerbaijani", ["Azerbaijanis"]) == [("Azerbaijanis", "Azerbaijani")]
    assert derived_leaks("Angle, [MASK] and Indiana", ["Angola", "India"]) == []
    for form, text in [("Algeria", "the Algerian President"), ("Azerbaijanis", "an Azerbaijani")]:
        assert derived_leaks(masked(text, form), [form]) == []
