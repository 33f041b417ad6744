"""Corpus readers: turn dumps and record files into :class:`~memtrain.records.Passage` streams.

``iter_passages(source)`` is the entry point; ``source`` is ``"embedded"`` (gensim's real enwiki dump
excerpt), a MediaWiki dump, ``.jsonl``/``.parquet``/``.txt`` files or a folder of them, or
``hf:NAME[:SPLIT]``. Entity extractors are pluggable (:mod:`memtrain.corpus.entities`).
"""

from memtrain.corpus.entities import (
    available_extractors,
    extract_entities,
    normalize_key,
    register_extractor,
    rules_extractor,
)
from memtrain.corpus.sources import EMBEDDED_CORPUS, iter_passages, resolve_source
from memtrain.corpus.stats import CorpusStats
from memtrain.corpus.wikitext import clean_wikitext, link_key

__all__ = [
    "EMBEDDED_CORPUS",
    "CorpusStats",
    "available_extractors",
    "clean_wikitext",
    "extract_entities",
    "iter_passages",
    "link_key",
    "normalize_key",
    "register_extractor",
    "resolve_source",
    "rules_extractor",
]
