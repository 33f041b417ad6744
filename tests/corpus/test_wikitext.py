"""Wikitext rendering and passage splitting, case by case."""

from __future__ import annotations

import pytest

from memtrain.corpus.passages import make_passages, split_long
from memtrain.corpus.wikitext import clean_wikitext, link_key, strip_nested
from memtrain.records import Entity

# Every rendering test runs on the package's scanner and on the mwparserfromhell oracle
# (tests/corpus/mwp_oracle.py): they share one output contract. The oracle cases skip without it.
parsers = pytest.mark.parametrize("parser", ["fast", "mwparserfromhell"])


def _renderer(parser: str):
    if parser == "fast":
        return clean_wikitext
    pytest.importorskip("mwparserfromhell")
    from mwp_oracle import clean_wikitext_mwp

    return clean_wikitext_mwp


def _render(wikitext: str, parser: str = "fast") -> tuple[str, list[Entity]]:
    paras = _renderer(parser)(wikitext)
    text = "\n\n".join(t for t, _ in paras)
    for t, ents in paras:
        for e in ents:
            assert t[e.start : e.end] == e.text
    return text, [e for _, ents in paras for e in ents]


@pytest.mark.parametrize(
    ("target", "key"),
    [("paris", "Paris"), ("New_York_City", "New York City"), ("Paris#History", "Paris"),
     ("  Rome  ", "Rome"), ("AT&amp;T", "AT&T"), ("iPhone", "IPhone")],
)  # fmt: skip
def test_link_key(target, key):
    assert link_key(target) == key


@pytest.mark.parametrize(
    ("wikitext", "text"),
    [
        ("a {{t|x={{inner}}}} b", "a b"),
        ("a\n{|\n| cell {{t}}\n|}\nb", "a\n\nb"),
        ("x {{unclosed\n\nnext paragraph", "x\n\nnext paragraph"),
        ("'''bold''' and ''italic'' and '''''both'''''", "bold and italic and both"),
        ("see [http://example.org the site] now", "see the site now"),
        ("<b>kept</b> <span style='x'>too</span><br/>", "kept too"),
        ("a<ref>note {{cite}}</ref> b<ref name=x/>.", "a b."),
        ("* one\n* two\n# three", "one\ntwo\nthree"),
        ("Asia ({{IPA|/ˈeɪʒə/}}) is big", "Asia is big"),
        ("A &amp; B&nbsp;C", "A & B C"),
        ("text __NOTOC__ more", "text more"),
        ("[[Category:X]]\n[[fr:Paris]]\n[[File:a.png|thumb|cap [[Link]] cap]]", ""),
        ("a\n[[Image:x.png|thumb|first line\nsecond [[Link]] line]]\nb", "a\n\nb"),
        ("; term: definition\n----\nnext", "term: definition\nnext"),
        ("'''[[Paris|the ''capital'']]''' {{lang|fr|x}}<!-- c -->", "the capital"),
    ],
)
@parsers
def test_rendering(wikitext, text, parser):
    assert _render(wikitext, parser)[0] == text


@parsers
def test_links_anchors_trails_and_namespaces(parser):
    text, ents = _render(
        "The [[cat]]s of [[Paris|the capital]], [[Rome (city)|]], [[wikt:foo|a word]], "
        "[[:Category:Cats|a category]] and [[#History|a section]].",
        parser,
    )
    assert text == "The cats of the capital, Rome, a word, a category and a section."
    assert [(e.text, e.key) for e in ents] == [
        ("cats", "Cat"),
        ("the capital", "Paris"),
        ("Rome", "Rome (city)"),
    ]


@parsers
def test_headings_break_paragraphs_and_reference_sections_are_dropped(parser):
    wikitext = (
        "Lead.\n== History ==\nOld.\n=== Detail ===\nMore.\n"
        "== See also ==\n* [[X]]\n=== Sub ===\nY\n== Legacy ==\nNew."
    )
    paras = [t for t, _ in _renderer(parser)(wikitext)]
    assert paras == ["Lead.", "Old.", "More.", "New."]


def test_scanner_and_oracle_render_the_hand_written_article_identically(hand_written_france):
    text, ents = _render(hand_written_france, "mwparserfromhell")
    assert (text, ents) == _render(hand_written_france, "fast")
    for m in ("[[", "]]", "{{", "}}", "<ref", "{|", "|}", "''", "<b>"):
        assert m not in text
    keys = {(e.text, e.key) for e in ents}
    assert {("the capital", "Paris"), ("Germany", "Germany"), ("cathedrals", "Cathedral"),
            ("Statue of Liberty", "New york city")} <= keys  # fmt: skip
    for gone in ("French Republic", "World Factbook", "Brittany", "Jacques-Louis", "Frankreich", "Jane Doe"):
        assert gone not in text, gone


def test_template_ending_in_an_empty_parameter_is_not_a_table_close():
    # "|}}" ends the template; read as a table close "|}" it left the template open and cut the paragraph
    text = "The aardvark ({{IPAc-en|ˈ|ɑr|k|}}; Orycteropus afer) is a mammal.\n\n{|\n| cell\n|}\nafter"
    assert strip_nested(text) == "The aardvark (; Orycteropus afer) is a mammal.\n\n\nafter"


def test_strip_nested_is_linear_on_deep_input():
    deep = "{{" * 2000 + "x" + "}}" * 2000
    assert strip_nested("a" + deep + "b") == "ab"


def _ent(text: str, surface: str) -> Entity:
    s = text.index(surface)
    return Entity(s, s + len(surface), surface, "LINK", surface)


def test_split_long_cuts_at_sentences_not_inside_entities():
    text = "Alpha beta gamma. Mr. Smith met Dr. Jones. The U.S. Army came. Delta epsilon zeta eta."
    ents = [_ent(text, "Mr. Smith met Dr. Jones")]
    pieces = split_long(text, ents, max_words=5)
    assert [p for p, _ in pieces] == [
        "Alpha beta gamma.", "Mr. Smith met Dr. Jones.", "The U.S. Army came.", "Delta epsilon zeta eta."
    ]  # fmt: skip
    (piece, pents) = pieces[1]
    assert piece[pents[0].start : pents[0].end] == "Mr. Smith met Dr. Jones"


def test_split_long_cuts_overlong_sentences_at_words():
    text = " ".join(f"w{i}" for i in range(25))
    pieces = split_long(text, [], max_words=10)
    assert [len(p.split()) for p, _ in pieces] == [10, 10, 5]
    assert " ".join(p for p, _ in pieces) == text


def test_make_passages_merges_short_paragraphs_and_keeps_offsets():
    paras = [("One two three.", []), ("Four [five] six.", []), ("Seven.", [])]
    t = paras[1][0]
    paras[1] = (t, [_ent(t, "[five]")])
    out = make_passages(paras, max_words=6, min_words=1)
    assert [p for p, _ in out] == ["One two three.\nFour [five] six.", "Seven."]
    text, ents = out[0]
    assert text[ents[0].start : ents[0].end] == "[five]"
    dropped = []
    out = make_passages(paras, max_words=6, min_words=2, on_drop=dropped.append)
    assert [p for p, _ in out] == ["One two three.\nFour [five] six."] and dropped == ["short_passage"]
