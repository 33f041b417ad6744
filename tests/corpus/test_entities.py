"""Entity extractors: the documented rules, keys, merging and the pluggable registry."""

from __future__ import annotations

import importlib.util

import pytest

from memtrain.corpus import entities as ent
from memtrain.corpus import extract_entities, normalize_key, register_extractor
from memtrain.errors import MemtrainError
from memtrain.records import Entity


def _spans(text: str) -> list[tuple[str, str]]:
    found = extract_entities(text, "rules")
    for e in found:
        assert text[e.start : e.end] == e.text
    return [(e.label, e.text) for e in found]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("He met Albert Einstein in Princeton.", [("NAME", "Albert Einstein"), ("NAME", "Princeton")]),
        ("They moved to New York City later.", [("NAME", "New York City")]),
        ("It was signed on 4 July 1776 there.", [("DATE", "4 July 1776")]),
        ("It was signed on July 4, 1776 there.", [("DATE", "July 4, 1776")]),
        ("Popular in the 1990s and in 2001.", [("DATE", "1990s"), ("DATE", "2001")]),
        ("Built in the 19th century.", [("DATE", "19th century")]),
        (
            "About 42 or 1,500 or 3.14 or 7 items.",
            [("NUMBER", "42"), ("NUMBER", "1,500"), ("NUMBER", "3.14")],
        ),
        ("The cat sat. However it left.", []),  # sentence-initial capitals are not names
        ("The Bank of England opened.", [("NAME", "Bank of England")]),  # leading "The" stripped
        ("In July 1776 it began.", [("DATE", "July 1776")]),
        ("A speech by John F. Kennedy.", [("NAME", "John F. Kennedy")]),
        ("The 3rd and B52 are not numbers.", []),
        ("It was Nature's way.", [("NAME", "Nature")]),
    ],
)
def test_rules(text, expected):
    assert _spans(text) == expected


def test_rules_year_range():
    years = [e.text for e in extract_entities("In 999, 1000, 2099 and 2100.", "rules") if e.label == "DATE"]
    assert years == ["1000", "2099"]


@pytest.mark.parametrize(
    ("surface", "key"),
    [("New  York\nCity", "new york city"), ("1,000", "1000"), ("3.14", "3.14"),
     ("July 4, 1776", "july 4 1776"), ("O'Brien", "o brien"), ("“Café”", "café"), ("U.S.", "u s")],
)  # fmt: skip
def test_normalize_key(surface, key):
    assert normalize_key(surface) == key


def test_merge_prefers_earlier_groups_and_dedupes():
    a = [Entity(0, 5, "Paris", "LINK", "Paris")]
    b = [
        Entity(0, 5, "Paris", "NAME", "paris"),
        Entity(3, 9, "is big", "NAME", "x"),
        Entity(10, 12, "ok", "N", "ok"),
    ]
    merged = ent.merge_entities([a, b, list(b)])
    assert [(e.start, e.end, e.label) for e in merged] == [(0, 5, "LINK"), (10, 12, "N")]


def test_registry_plugs_in_new_extractors():
    calls = []

    def factory():
        calls.append(1)
        return lambda text: [Entity(0, 3, text[:3], "TEST", text[:3].lower())]

    register_extractor("first3", factory)
    try:
        assert "first3" in ent.available_extractors()
        out = extract_entities("Foo 1999 bar", "first3+rules")
        assert [(e.label, e.text) for e in out] == [("TEST", "Foo"), ("DATE", "1999")]
        extract_entities("Bar", "first3")
        assert calls == [1]  # the factory runs once
    finally:
        ent._FACTORIES.pop("first3", None)
        ent._LOADED.pop("first3", None)


def test_unknown_extractor_is_a_clear_error():
    with pytest.raises(MemtrainError, match="unknown entity extractor 'ner'.*rules"):
        extract_entities("x", "ner")


def test_auto_and_none_specs():
    assert ent.parse_methods("auto", wiki=True) == ["links", "rules"]
    assert ent.parse_methods("auto", wiki=False) == ["rules"]
    assert ent.parse_methods("none", wiki=True) == []
    assert extract_entities("Albert Einstein met Niels Bohr.", "none") == []


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is not None for m in ent.SPACY_MODELS),
    reason="a spaCy model is installed",
)
def test_spacy_without_a_model_names_the_fix():
    ent._LOADED.pop("spacy", None)
    with pytest.raises(MemtrainError, match=r"memtrain\[spacy\]|entities=rules"):
        extract_entities("Albert Einstein", "spacy")


def test_spacy_ner_on_a_real_page_and_in_a_build(tmp_path):
    """The paper's NER path, end to end: spaCy entities on the embedded dump, combined with wiki links."""
    pytest.importorskip("spacy")
    if not any(importlib.util.find_spec(m) for m in ent.SPACY_MODELS):
        pytest.skip("no spaCy English model installed")
    pytest.importorskip("gensim")
    from memtrain.corpus import iter_passages

    passages = list(iter_passages("embedded", entities="spacy", limit_pages=3))
    labels = {e.label for p in passages for e in p.entities}
    assert {"PERSON", "GPE", "DATE"} & labels and "LINK" not in labels
    for p in passages[:20]:
        assert all(p.text[e.start : e.end] == e.text for e in p.entities)  # offsets point at the mention
    both = list(iter_passages("embedded", entities="links+spacy", limit_pages=3))
    assert {"LINK", "PERSON"} <= {e.label for p in both for e in p.entities}

    from memtrain.cli import main
    from memtrain.tasks.taskset import load_tasks, read_manifest

    out = tmp_path / "spacy_tasks"
    assert main(["data", "build", "cpu", f"out={out}", "entities=spacy", "limit_pages=12", "num_tasks=4",
                 "e2e.min_mentions=1", "progress=false"]) == 0
    tasks = load_tasks(out)
    assert tasks and {t.meta["answer_label"] for t in tasks} <= {
        "PERSON", "GPE", "ORG", "DATE", "NORP", "LOC", "FAC", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE",
        "PRODUCT", "CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT", "TIME"}
    assert read_manifest(out).config["entities"] == "spacy"
