"""Reading MediaWiki dumps: rendering, skips, damaged files, and the real gensim excerpt."""

from __future__ import annotations

import bz2
import logging

import pytest

from memtrain.corpus import CorpusStats, iter_passages
from memtrain.errors import MemtrainError

MARKUP = ("[[", "]]", "{{", "}}", "<ref", "|}", "{|", "''")


def _read(path, **kw):
    stats = CorpusStats()
    passages = list(iter_passages(str(path), stats=stats, min_passage_words=1, **kw))
    return passages, stats


def test_hand_written_dump_renders_prose_and_links(make_dump):
    passages, stats = _read(make_dump())
    assert {p.title for p in passages} == {"France", "Paris"}
    france = "\n".join(p.text for p in passages if p.title == "France")
    for m in MARKUP:
        assert m not in france
    # kept: prose, bold text, the inner text of formatting tags, link anchors and link trails
    assert "France is a country in Western Europe." in france
    assert "Its capital is the capital, and it borders Germany." in france
    assert "many famous cathedrals" in france
    assert "France spans the Alps and the Pyrenees." in france
    # dropped: infobox, table, refs, File caption (with its nested link), comment, categories,
    # interlanguage links and the References section
    for gone in (
        "French Republic",
        "67,000,000",
        "Brittany",
        "World Factbook",
        "flag",
        "Jacques-Louis",
        "hidden comment",
        "Countries in Europe",
        "Frankreich",
        "Jane Doe",
        "Geography",
    ):
        assert gone not in france, gone
    assert stats.skipped["redirect"] == 2
    assert stats.skipped["disambiguation"] == 2
    assert stats.skipped["namespace"] == 1
    assert stats.skipped["no_text"] == 1
    assert stats.skipped["empty"] == 1
    assert stats.pages == 2 and stats.passages == len(passages)


def test_link_entities_have_exact_offsets_and_normalised_keys(make_dump):
    passages, _ = _read(make_dump(), entities="links")
    links = {(e.text, e.key) for p in passages for e in p.entities}
    for p in passages:
        for e in p.entities:
            assert e.label == "LINK"
            assert p.text[e.start : e.end] == e.text
    assert ("the capital", "Paris") in links  # [[Paris|the capital]]
    assert ("Germany", "Germany") in links  # [[germany|Germany]]: first letter upper-cased
    assert ("cathedrals", "Cathedral") in links  # link trail kept in the anchor
    assert ("Statue of Liberty", "New york city") in links  # underscores and #section normalised
    assert not any("Jacques" in t or "Frankreich" in k for t, k in links)


def test_auto_entities_keep_links_and_drop_overlapping_rule_spans(make_dump):
    passages, stats = _read(make_dump(), entities="auto")
    france = [p for p in passages if p.title == "France"]
    ents = [e for p in france for e in p.entities]
    assert any(e.label == "LINK" and e.text == "Western Europe" for e in ents)
    # "Western Europe" is a link: the NAME rule must not add a second, overlapping span
    spans = sorted((e.start, e.end) for p in france for e in p.entities)
    for p in france:
        es = sorted(p.entities, key=lambda e: e.start)
        assert all(a.end <= b.start for a, b in zip(es, es[1:], strict=False))
    assert len(spans) == len(ents)
    assert stats.entity_labels["LINK"] >= 5


def test_truncated_bz2_keeps_pages_before_the_cut(dump_parts, tmp_path, caplog):
    HEADER, FOOTER, page_xml = dump_parts.HEADER, dump_parts.FOOTER, dump_parts.page_xml

    pages = [
        page_xml(
            f"Topic {i}",
            f"Topic {i} is an article about [[Subject {i}]] written in {1900 + i} "
            f"with some words to make passage number {i} long enough. " * 3,
            pid=i + 1,
        )
        for i in range(40)
    ]
    streams = [bz2.compress(HEADER.encode())]
    streams += [bz2.compress("".join(pages[i : i + 5]).encode()) for i in range(0, 40, 5)]
    streams.append(bz2.compress(FOOTER.encode()))
    data = b"".join(streams)
    full = tmp_path / "full.xml.bz2"
    full.write_bytes(data)
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(data[: len(data) // 2])

    whole, _ = _read(full)
    assert len({p.title for p in whole}) == 40
    with caplog.at_level(logging.WARNING):
        kept, stats = _read(cut)
    titles = [p.title for p in kept]
    assert 5 <= len(set(titles)) < 40
    assert titles == [p.title for p in whole][: len(titles)]  # a prefix of the full read, in order
    assert stats.skipped["truncated_stream"] == 1
    assert "truncated" in caplog.text


def test_truncated_real_dump_keeps_pages(gensim_dump, tmp_path):
    data = gensim_dump.read_bytes()
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(data[: len(data) // 2])
    stats = CorpusStats()
    passages = list(iter_passages(str(cut), entities="links", stats=stats))
    assert passages and stats.skipped["truncated_stream"] == 1
    assert 0 < stats.pages < 98


def test_malformed_xml_keeps_pages_before_the_error(dump_parts, tmp_path, caplog):
    HEADER, page_xml = dump_parts.HEADER, dump_parts.page_xml

    good = page_xml("Paris", "'''Paris''' is the capital of [[France]] on the [[Seine]].")
    bad = "  <page><title>Broken</title><ns>0</ns><revision><text>oops</tex></revision></page>\n"
    path = tmp_path / "bad.xml"
    path.write_text(HEADER + good + bad + page_xml("Lyon", "Lyon is a city.") + "</mediawiki>\n")
    with caplog.at_level(logging.WARNING):
        passages, stats = _read(path)
    assert [p.title for p in passages] == ["Paris"]
    assert stats.skipped["malformed_xml"] == 1
    assert "malformed XML" in caplog.text


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.xml", b"just some notes, not a dump\n"),
        ("data.xml.bz2", b"BZh9" + b"\x00garbage" * 50),
        ("empty.xml", b""),
        ("page.xml", b"<html><body>a web page</body></html>"),
    ],
)
def test_non_dump_file_raises_naming_it(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MemtrainError, match=name.replace(".", r"\.")):
        list(iter_passages(str(path)))


def test_bz2_and_plain_dumps_read_the_same(make_dump):
    plain, _ = _read(make_dump(name="a.xml"))
    packed, _ = _read(make_dump(name="a.xml.bz2", compress="bz2"))
    assert [p.to_dict() for p in plain] == [p.to_dict() for p in packed]


def test_limit_pages_and_deterministic_ids(make_dump):
    path = make_dump()
    one, stats = _read(path, limit_pages=1)
    assert {p.title for p in one} == {"France"} and stats.pages == 1
    again, _ = _read(path, limit_pages=1)
    assert [p.pid for p in one] == [p.pid for p in again]
    assert [p.pid for p in one] == [f"dump:France:{i}" for i in range(len(one))]


# ------------------------------------------------------------------------------------------------
# The real dump excerpt shipped in gensim (206 pages of English Wikipedia)


@pytest.fixture(scope="module")
def embedded():
    stats = CorpusStats()
    return list(iter_passages("embedded", stats=stats)), stats


def test_embedded_dump_passages_are_clean(gensim_dump, embedded):
    passages, stats = embedded
    assert len(passages) > 1000 and stats.pages > 50
    for p in passages:
        for m in ("[[", "{{", "<ref", "|}"):
            assert m not in p.text, (m, p.pid)
        assert 20 <= len(p.text.split()) <= 200
    assert len({p.pid for p in passages}) == len(passages)
    assert all(p.pid.startswith("embedded:") for p in passages)


def test_embedded_dump_entities(gensim_dump, embedded):
    passages, stats = embedded
    labels = set()
    for p in passages:
        for e in p.entities:
            assert p.text[e.start : e.end] == e.text, (p.pid, e)
            labels.add(e.label)
            if e.label == "LINK":
                assert e.key and e.key[0] == e.key[0].upper()
                assert "_" not in e.key and "#" not in e.key and "  " not in e.key
    assert {"LINK", "NAME", "DATE", "NUMBER"} <= labels
    assert stats.skipped["redirect"] > 50
    assert stats.skipped["disambiguation"] >= 1
    anarchism = " ".join(p.text for p in passages if p.title == "Anarchism")
    assert "anarchism" in anarchism.lower() and "References" not in anarchism


def test_read_ahead_sync_and_progress_agree(make_dump, monkeypatch):
    from memtrain.corpus import wikixml

    path = make_dump(name="p.xml.bz2", compress="bz2")
    threaded, _ = _read(path, progress=True)
    monkeypatch.setattr(wikixml, "READ_AHEAD", False)
    sync, _ = _read(path)
    assert threaded and [p.to_dict() for p in threaded] == [p.to_dict() for p in sync]


def test_stopping_early_stops_the_reader_thread(gensim_dump):
    import threading

    before = threading.active_count()
    it = iter_passages("embedded")
    first = next(it)
    assert first.title and threading.active_count() == before + 1
    it.close()
    assert threading.active_count() == before


def _oracle():
    """The mwparserfromhell oracle's passage reader (tests/corpus/mwp_oracle.py); skips without it."""
    pytest.importorskip("mwparserfromhell")
    from mwp_oracle import oracle_passages

    return oracle_passages


@pytest.fixture(scope="module")
def embedded_mwp(gensim_dump):
    oracle_passages = _oracle()
    stats = CorpusStats()
    return oracle_passages("embedded", entities="links", stats=stats), stats


def _link_keys(passages, titles):
    return {e.key for p in passages if p.title in titles for e in p.entities if e.label == "LINK"}


def test_embedded_dump_mwparserfromhell_oracle_agrees_with_fast(gensim_dump, embedded, embedded_mwp):
    fast, fast_stats = embedded
    mwp, mwp_stats = embedded_mwp
    assert mwp_stats.pages == fast_stats.pages and len(mwp) > 1000
    for p in mwp:
        for m in ("[[", "{{", "<ref", "|}"):
            assert m not in p.text, (m, p.pid)
        for e in p.entities:
            assert p.text[e.start : e.end] == e.text, (p.pid, e)
    first = list(dict.fromkeys(p.title for p in fast))[:20]
    a, b = _link_keys(fast, first), _link_keys(mwp, first)
    assert len(a) > 1000
    assert len(a & b) / len(a | b) >= 0.97  # measured 0.998 (3633 vs 3640 keys): they differ on broken markup
    # most articles render to exactly the same passages
    same = sum([p.text for p in fast if p.title == t] == [p.text for p in mwp if p.title == t] for t in first)
    assert same >= 15  # measured 18 of 20


def test_hand_written_dump_reads_the_same_with_the_oracle(make_dump):
    oracle_passages = _oracle()
    path = make_dump()
    fast, _ = _read(path)
    mwp = oracle_passages(str(path), stats=CorpusStats(), min_passage_words=1)
    assert [p.to_dict() for p in mwp] == [p.to_dict() for p in fast]


def test_truncated_dump_is_a_loss_and_strict_stops_at_it(gensim_dump, tmp_path):
    data = gensim_dump.read_bytes()
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(data[: len(data) // 3])
    stats = CorpusStats()
    assert list(iter_passages(str(cut), entities="links", stats=stats))
    assert stats.losses() == {"truncated_stream": 1}
    whole = CorpusStats(strict=True)
    assert list(iter_passages(str(gensim_dump), entities="links", stats=whole)) and whole.losses() == {}
    with pytest.raises(MemtrainError, match=r"cut.xml.bz2: the compressed stream is truncated.*strict=true"):
        list(iter_passages(str(cut), entities="links", stats=CorpusStats(strict=True)))
