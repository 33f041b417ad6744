"""Test-only differential oracle: the wikitext rendering rules applied to a real mwparserfromhell tree.

:func:`memtrain.corpus.wikitext.clean_wikitext` (the package's single-pass scanner) is checked against
:func:`clean_wikitext_mwp` here: both feed the same line/paragraph assembly and link classification
(imported from :mod:`memtrain.corpus.wikitext`), so on well-formed markup their output is identical and
they differ only where markup is broken or ambiguous (e.g. a misbalanced ``{{...}}`` makes the scanner
drop the rest of its paragraph, while the parser keeps the prose).

Needs ``mwparserfromhell`` (a dev-only dependency); import this module after
``pytest.importorskip("mwparserfromhell")``. :func:`oracle_passages` runs
:func:`~memtrain.corpus.iter_passages` with this renderer in place of the scanner.
"""

from __future__ import annotations

import re
from unittest import mock

import mwparserfromhell
from mwparserfromhell import nodes as N

from memtrain.corpus import sources
from memtrain.corpus.wikitext import (
    _DROP,
    _DROP_TAGS,
    _FILE_OPEN,
    _TRAIL,
    DROP_SECTIONS,
    Paragraph,
    _classify,
    _Line,
    _Paragraphs,
    _plain,
    _section_skip,
)
from memtrain.records import Passage

_DROP_TAG_NAMES = frozenset(_DROP_TAGS.split("|"))
_LIST_MARKUP = frozenset("*#:;")
_OPENER = re.compile(r"\{\{|(?:^|(?<=[\n:]))\{\|")  # a template/table the parser could not close


class _TreeRenderer:
    """Walks an mwparserfromhell tree, feeding the same line and paragraph assembly as the fast scanner.

    Mapping of nodes: templates, arguments, comments, tables, non-prose tags and File/Category/interlanguage
    links render nothing; formatting tags render their contents; list markers and ``----`` render nothing;
    a heading ends the paragraph and may open a dropped section; a link renders its anchor plus its trail
    (the letters right after ``]]``). Text, HTML entities and bare URLs are kept as raw wikitext and go
    through the fast backend's ``_plain`` at each link or line end, so quotes, stray markup, entities,
    empty parentheses and whitespace are treated identically.

    Blank lines decide paragraphs as in the fast backend: a line holding only dropped constructs
    (templates, comments, refs, tables, File links) counts as blank and ends the paragraph; a line holding
    anything else (a category link, a lone list marker) is skipped without ending it.
    """

    def __init__(self, drop_sections: frozenset[str]) -> None:
        self.drop_sections = drop_sections
        self.paras = _Paragraphs()
        self.skip_level = 0
        self.cutting = False  # inside an unclosed template/table: drop up to the next blank line
        self._new_line()

    def _new_line(self) -> None:
        self.line = _Line()
        self.buf: list[str] = []  # raw text since the last link, rendered by _plain at once
        self.content = False  # anything on this line that is not a dropped construct
        self.first = ""  # first non-space raw character of the line ("" if it began with a node)
        self.skip = False  # the whole line is ignored (horizontal rule, broken-table leftovers)

    def end_line(self) -> None:
        if not self.content:
            self.paras.flush()
        elif not self.skip and not self.skip_level and self.first not in ("|", "!"):
            if self.buf:
                self.line.add(_plain("".join(self.buf)))
            text, ents = self.line.finish()
            if text:
                self.paras.add(text, ents)
        self._new_line()

    def text(self, s: str) -> None:
        """Raw text: split into lines; an unclosed ``{{``/``{|`` drops everything to the next blank line."""
        parts = s.split("\n")
        for i, part in enumerate(parts):
            if i:
                self.end_line()
                if self.cutting and not part.strip() and i < len(parts) - 1:
                    self.cutting = False  # a blank line ends the unclosed construct's paragraph
                    continue
            if self.cutting:
                continue
            m = _OPENER.search(part)
            if m is not None:
                part = part[: m.start()]
                self.cutting = True
            if part.strip():
                if not self.content and not self.first:
                    self.first = part.lstrip()[0]
                self.content = True
            if part:
                self.buf.append(part)

    def raw(self, s: str) -> None:
        """Raw wikitext that is content but never splits a line (HTML entities, bare URLs)."""
        if self.cutting:
            return
        self.content = True
        self.buf.append(s)

    def walk(self, nodes: list) -> None:
        trail_skip = 0
        for i, node in enumerate(nodes):
            if isinstance(node, N.Heading):
                self.heading(node)
                continue
            if self.skip_level:
                if isinstance(node, N.Text) and "\n" in node.value:
                    self.text("\n" * node.value.count("\n"))  # keep line structure while skipping
                elif isinstance(node, N.Tag) and node.contents is not None:
                    self.walk(node.contents.nodes)  # a heading may hide inside
                continue
            if isinstance(node, N.Text):
                self.text(node.value[trail_skip:])
                trail_skip = 0
            elif isinstance(node, N.Wikilink):
                trail_skip = self.wikilink(node, nodes[i + 1] if i + 1 < len(nodes) else None)
            elif isinstance(node, N.Tag):
                self.tag(node)
            elif isinstance(node, N.ExternalLink):
                if node.brackets:
                    if node.title is not None:
                        self.raw(_flat(node.title.nodes))
                    else:
                        self.raw("")
                else:
                    self.raw(str(node.url))
            elif isinstance(node, N.HTMLEntity):
                self.raw(str(node))
            # Template, Argument, Comment: render nothing and do not count as content

    def heading(self, node) -> None:  # noqa: ANN001
        self.end_line()
        self.paras.flush()
        self.cutting = False
        title = _flat(node.title.nodes)
        self.skip_level = _section_skip(self.skip_level, node.level, title, self.drop_sections)

    def tag(self, node) -> None:  # noqa: ANN001
        markup = node.wiki_markup
        name = str(node.tag).strip().lower()
        if markup == "{|" or name in _DROP_TAG_NAMES:
            return
        if self.cutting:
            return
        if markup in _LIST_MARKUP:
            if markup == ":" and self.content:
                self.buf.append(":")  # "; term: definition" keeps its colon, as in the fast scanner
            self.content = True
            return
        self.content = True
        if markup == "----":
            self.skip = True
        elif node.contents is not None and not node.self_closing:
            self.walk(node.contents.nodes)

    def wikilink(self, node, nxt) -> int:  # noqa: ANN001
        """Render a link; returns how many trail letters to take off the next text node."""
        if self.cutting:
            return 0
        kind, key, anchor = _classify_node(node)
        if kind == _DROP:
            if not _FILE_OPEN.match(str(node)):
                self.content = True  # category/interlanguage links: content, but render nothing
            return 0
        self.content = True
        trail = _TRAIL.match(nxt.value) if isinstance(nxt, N.Text) else None
        if self.buf:
            self.line.add(_plain("".join(self.buf)))
            self.buf.clear()
        self.line.link(kind, key, _plain(anchor).strip() + (trail.group() if trail else ""))
        return trail.end() if trail else 0

    def finish(self) -> list[Paragraph]:
        self.end_line()
        self.paras.flush()
        return self.paras.done


def _classify_node(node) -> tuple[int, str, str]:  # noqa: ANN001
    """``_classify`` of a parsed link, its anchor flattened (templates, refs, nested links resolved)."""
    title = str(node.title)
    if node.text is None:
        return _classify(title)
    return _classify(title + "|" + _flat(node.text.nodes))


def _flat(nodes: list) -> str:
    """Raw wikitext of a fragment with templates, comments, dropped tags and links resolved (no lines)."""
    out: list[str] = []
    for node in nodes:
        if isinstance(node, (N.Text, N.HTMLEntity)):
            out.append(str(node))
        elif isinstance(node, N.Wikilink):
            kind, _, anchor = _classify_node(node)
            if kind != _DROP:
                out.append(anchor)
        elif isinstance(node, N.Tag):
            if node.wiki_markup == "{|" or str(node.tag).strip().lower() in _DROP_TAG_NAMES:
                continue
            if node.contents is not None and not node.self_closing and node.wiki_markup not in _LIST_MARKUP:
                out.append(_flat(node.contents.nodes))
        elif isinstance(node, N.ExternalLink):
            if not node.brackets:
                out.append(str(node.url))
            elif node.title is not None:
                out.append(_flat(node.title.nodes))
        elif isinstance(node, N.Heading):
            out.append(_flat(node.title.nodes))
    return "".join(out)


def clean_wikitext_mwp(wikitext: str, drop_sections: frozenset[str] = DROP_SECTIONS) -> list[Paragraph]:
    """:func:`~memtrain.corpus.wikitext.clean_wikitext`'s contract, computed from a full parse tree."""
    tree = mwparserfromhell.parse(wikitext, skip_style_tags=True)
    r = _TreeRenderer(drop_sections)
    r.walk(tree.nodes)
    return r.finish()


def oracle_passages(source: str, **kwargs) -> list[Passage]:  # noqa: ANN003
    """``list(iter_passages(source, **kwargs))`` of a MediaWiki dump, rendered by :func:`clean_wikitext_mwp`.

    Swaps the renderer :mod:`memtrain.corpus.sources` calls, and fails if the swap was never used (a
    refactor of ``sources`` would otherwise make the comparison silently test the scanner against itself).
    """
    calls = 0

    def render(wikitext: str) -> list[Paragraph]:
        nonlocal calls
        calls += 1
        return clean_wikitext_mwp(wikitext)

    with mock.patch.object(sources, "clean_wikitext", render):
        passages = list(sources.iter_passages(source, **kwargs))
    assert calls or not passages, "memtrain.corpus.sources no longer renders pages through clean_wikitext"
    return passages
