"""Source resolution and argument checks: every user mistake is a MemtrainError naming the input."""

from __future__ import annotations

import importlib.util

import pytest

from memtrain.corpus import EMBEDDED_CORPUS, iter_passages, resolve_source
from memtrain.corpus import sources as src
from memtrain.errors import MemtrainError


def test_embedded_resolves_to_gensims_dump(gensim_dump):
    path = resolve_source(EMBEDDED_CORPUS)
    assert path.endswith("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    assert path == str(gensim_dump)


def test_embedded_without_gensim_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gensim" else real(name, *a)
    )
    with pytest.raises(MemtrainError, match=r"pip install 'gensim>=4.3'"):
        resolve_source("embedded")


@pytest.mark.parametrize(
    ("source", "match"),
    [("", "empty corpus source"), ("/no/such/dump.xml.bz2", "no such file"), ("hf:", "hf:NAME"),
     ("hf:a:b:c", "hf:NAME")],
)  # fmt: skip
def test_bad_sources(source, match):
    with pytest.raises(MemtrainError, match=match):
        resolve_source(source)


def test_unknown_format_and_empty_folder(tmp_path):
    (tmp_path / "data.csv").write_text("title,text\n")
    with pytest.raises(MemtrainError, match="data.csv.*unknown format"):
        resolve_source(str(tmp_path / "data.csv"))
    with pytest.raises(MemtrainError, match="holds no corpus files"):
        resolve_source(str(tmp_path))


def test_hf_source_keeps_its_split():
    assert resolve_source("hf:wikitext") == "hf:wikitext:train"
    assert resolve_source("hf:org/name:validation") == "hf:org/name:validation"


def test_errors_come_before_the_first_passage(tmp_path):
    # iter_passages validates eagerly: no need to start iterating to see the mistake
    with pytest.raises(MemtrainError, match="no such file"):
        iter_passages(str(tmp_path / "missing.jsonl"))
    with pytest.raises(MemtrainError, match="min_passage_words"):
        iter_passages("embedded", min_passage_words=50, max_passage_words=10)
    with pytest.raises(MemtrainError, match="limit_pages"):
        iter_passages("embedded", limit_pages=-1)
    with pytest.raises(MemtrainError, match="unknown entity extractor"):
        iter_passages("embedded", entities="links+magic")


def test_kind_by_name():
    from pathlib import Path

    assert src._kind(Path("x.jsonl.gz")) == ("json", "x")
    assert src._kind(Path("enwiki-pages-articles-multistream.xml.bz2")) == (
        "wiki",
        "enwiki-pages-articles-multistream",
    )
    assert src._kind(Path("a.parquet")) == ("parquet", "a")
    assert src._kind(Path("a.csv")) is None
