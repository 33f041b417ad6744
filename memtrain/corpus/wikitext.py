"""Wikitext -> plain paragraphs, with every article link kept as an entity span.

:func:`clean_wikitext` is a hand-written single-pass scanner: a few compiled regexes plus two bracket
matchers, each linear in the page length, with no full parse of the page. The tests check it case by case
and against a differential oracle built on ``mwparserfromhell`` (``tests/corpus/mwp_oracle.py``), which
applies the same rules to a real parse tree and shares this module's line/paragraph assembly and link
classification; the two differ only where markup is broken or ambiguous (e.g. a misbalanced ``{{...}}``
makes the scanner drop the rest of its paragraph, while the parser keeps the prose).

What is kept and dropped (the rendering rules tests check):
- dropped with their content: comments, templates ``{{...}}`` (nested), tables ``{| ... |}``, ``<ref>``
  and other non-prose tags (math, gallery, timeline, source, ...), File:/Image:/Media:/Category: links,
  interlanguage links, magic words, and the sections References/External links/See also/Further
  reading/Notes/... with their sub-sections;
- kept as text: the inner text of formatting tags (``<b>x</b>`` -> ``x``), link anchors (``[[Paris|the
  capital]]`` -> ``the capital``, link trails ``[[cat]]s`` -> ``cats``), external link labels;
- removed markup: bold/italic quotes, list bullets, heading markup (headings become paragraph breaks).

Each article link becomes ``Entity(label="LINK", key=<normalised target>)`` with offsets into the
paragraph's final text.
"""

from __future__ import annotations

import html
import re

from memtrain.records import Entity

# Tags whose whole content is not prose. Self-closing forms (<ref name=x />) are dropped too.
_DROP_TAGS = (
    "ref|references|math|chem|ce|gallery|timeline|imagemap|source|syntaxhighlight|score|hiero|graph|"
    "mapframe|maplink|templatedata|pre|inputbox|categorytree|noinclude"
)
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_DROP_TAG_RE = re.compile(rf"<(?:{_DROP_TAGS})\b[^<>]*?/>|<({_DROP_TAGS})\b[^<>]*>.*?</\1\s*>", re.S | re.I)
_NESTED = re.compile(r"\{\{|\}\}|\{\||\|\}(?!\})")  # "|}}" closes a template ("{{IPAc-en|k|}}"), not a table
_FILE_OPEN = re.compile(r"\[\[\s*(?:file|image|media)\s*:", re.I)
_HEADING = re.compile(r"(={1,6})\s*(.*?)\s*\1\s*$")
_LIST_PREFIX = re.compile(r"[*#:;]+\s*")
_EXTLINK = re.compile(r"\[(?:https?://|ftp://|//)[^\s\]]*\s*([^\]]*)\]")
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
_QUOTES = re.compile(r"''+")
_JUNK = re.compile(r"\{\{|\}\}|\{\||\|\}|\[\[|\]\]|__[A-Z]+__")
_WS = re.compile(r"\s+")
_EMPTY_PARENS = re.compile(r"\s*\(\s*[,;:]?\s*\)")  # what "Asia ({{IPA|...}})" leaves behind
_TRAIL = re.compile(r"[a-z]+")
_PARENS = re.compile(r"\s*\(.*\)\s*$")
_INTERLANG = re.compile(r"[a-z]{2,3}(?:-[a-z]{2,8})*|simple")

DROP_SECTIONS = frozenset(
    {
        "references", "external links", "see also", "further reading", "notes", "footnotes", "citations",
        "bibliography", "sources", "notes and references", "references and notes", "works cited",
        "general references", "external link", "reference", "note",
    }
)  # fmt: skip
# Link namespaces whose link renders nothing in the article body (images, categories).
_DROP_NS = frozenset({"file", "image", "media", "category"})
# Namespaces and interwiki prefixes whose links render text but do not point at an article.
_OTHER_NS = frozenset(
    {
        "wikipedia", "wp", "project", "template", "help", "portal", "user", "user talk", "talk", "special",
        "draft", "module", "book", "mediawiki", "timedtext", "wikt", "wiktionary", "w", "s", "q", "b", "n",
        "v", "voy", "commons", "wikisource", "wikiquote", "wikibooks", "wikinews", "wikiversity", "meta",
        "species", "wikispecies", "d", "wikidata", "mw", "c", "m", "foundation",
    }
)  # fmt: skip

_ARTICLE, _TEXT, _DROP = 0, 1, 2

Paragraph = tuple[str, list[Entity]]


def link_key(target: str) -> str:
    """Canonical article title of a link target, as MediaWiki resolves it.

    Drops ``#section``, turns underscores into spaces, collapses whitespace and upper-cases the first
    letter (English Wikipedia titles are first-letter case-insensitive), so ``[[paris#History|x]]`` and
    ``[[Paris]]`` share the key ``Paris``.
    """
    t = target.split("#", 1)[0]
    if "&" in t:
        t = html.unescape(t)
    t = _WS.sub(" ", t.replace("_", " ")).strip()
    return t[:1].upper() + t[1:]


def strip_nested(text: str) -> str:
    """Remove templates ``{{...}}`` and tables ``{|...|}``, nested in each other, in one linear pass.

    A table opens only at the start of a line (MediaWiki's rule). An opener never closed is dropped up to
    the end of its paragraph rather than swallowing the rest of the page.
    """
    if "{" not in text:
        return text
    out: list[str] = []
    stack: list[str] = []
    last = 0  # start of the text not yet copied
    opened_at = 0  # where the outermost open construct began
    pos = 0
    n = len(text)
    while pos < n:
        for m in _NESTED.finditer(text, pos):
            tok = m.group()
            s = m.start()
            if tok == "{{" or (tok == "{|" and (s == 0 or text[s - 1] in "\n:")):
                if not stack:
                    out.append(text[last:s])
                    opened_at = s
                stack.append(tok)
            elif tok == "}}" and stack:
                while stack and stack[-1] != "{{":  # a table left open inside a template ends with it
                    stack.pop()
                if stack:
                    stack.pop()
                if not stack:
                    last = m.end()
            elif tok == "|}" and stack and stack[-1] == "{|":
                stack.pop()
                if not stack:
                    last = m.end()
        if not stack:
            out.append(text[last:])
            break
        # Unclosed opener: drop to the end of its paragraph, then continue scanning after it.
        cut = text.find("\n\n", opened_at)
        if cut < 0:
            break
        stack.clear()
        last = pos = cut
    return "".join(out)


def _match_close(line: str, start: int) -> int:
    """Index of the ``]]`` closing the ``[[`` at ``start`` (links nest inside File captions), or -1."""
    depth = 1
    i = start + 2
    while True:
        c = line.find("]]", i)
        if c < 0:
            return -1
        o = line.find("[[", i, c)
        if o < 0:
            depth -= 1
            if depth == 0:
                return c
            i = c + 2
        else:
            depth += 1
            i = o + 2


def strip_files(text: str) -> str:
    """Remove File:/Image: links, whose captions may span lines and hold nested links."""
    out: list[str] = []
    pos = 0
    while True:
        m = _FILE_OPEN.search(text, pos)
        if m is None:
            break
        out.append(text[pos : m.start()])
        close = _match_close(text, m.start())
        if close < 0:  # unclosed: drop the rest of its line only
            nl = text.find("\n", m.end())
            pos = len(text) if nl < 0 else nl
        else:
            pos = close + 2
    out.append(text[pos:])
    return "".join(out)


def _plain(s: str) -> str:
    """Render a stretch of wikitext without links: tags, quotes, external links, entities, whitespace."""
    if "[" in s:
        s = _EXTLINK.sub(r"\1", s)
    if "<" in s:
        s = _TAG.sub("", s)
    if "''" in s:
        s = _QUOTES.sub("", s)
    if "{" in s or "}" in s or "[" in s or "]" in s or "__" in s:
        s = _JUNK.sub("", s)
    if "&" in s:
        s = html.unescape(s)
    if "(" in s:
        s = _EMPTY_PARENS.sub("", s)
    return _WS.sub(" ", s)


def _classify(inner: str) -> tuple[int, str, str]:
    """(kind, key, anchor wikitext) of a link's inner text ``target|anchor``."""
    target, pipe, anchor = inner.partition("|")
    t = target.strip()
    colon_first = t.startswith(":")
    if colon_first:
        t = t[1:].lstrip()
    prefix, colon, rest = t.partition(":")
    if colon:
        p = prefix.strip().lower()
        if p in _DROP_NS:
            return (_TEXT, "", anchor if pipe else t) if colon_first else (_DROP, "", "")
        if p in _OTHER_NS or _INTERLANG.fullmatch(prefix.strip()):
            if not pipe and not colon_first and _INTERLANG.fullmatch(prefix.strip()):
                return _DROP, "", ""  # interlanguage link: rendered in the sidebar, not the text
            return _TEXT, "", anchor if pipe else rest
    if pipe and not anchor.strip():  # pipe trick: [[Paris (France)|]] renders "Paris"
        anchor = _PARENS.sub("", t)
    elif not pipe:
        anchor = target
    key = link_key(t)
    return (_ARTICLE, key, anchor) if key else (_TEXT, "", anchor)


class _Line:
    """One rendered line being assembled: text pieces plus LINK entities with offsets into it.

    Shared with the mwparserfromhell test oracle so both space, strip and offset text the same way.
    """

    __slots__ = ("out", "ents", "n", "ends_space")

    def __init__(self) -> None:
        self.out: list[str] = []
        self.ents: list[Entity] = []
        self.n = 0
        self.ends_space = True  # collapse the double space left where markup between two spaces was dropped

    def add(self, piece: str) -> None:
        if self.ends_space and piece.startswith(" "):
            piece = piece.lstrip(" ")
        if piece:
            self.out.append(piece)
            self.n += len(piece)
            self.ends_space = piece.endswith(" ")

    def link(self, kind: int, key: str, text: str) -> None:
        """Add a rendered link anchor (already stripped, trail included); article links become entities."""
        if not text:
            return
        start = self.n
        self.add(text)
        if kind == _ARTICLE and text.strip():
            self.ents.append(Entity(start, self.n, text, "LINK", key))

    def finish(self) -> Paragraph:
        text = "".join(self.out).rstrip()
        ents = self.ents
        lead = len(text) - len(text.lstrip())
        if lead:
            text = text[lead:]
            ents = [Entity(e.start - lead, e.end - lead, e.text, e.label, e.key) for e in ents]
        return text, ents


class _Paragraphs:
    """Rendered lines joined into paragraphs; a blank line or a heading ends one."""

    __slots__ = ("done", "text", "ents", "length")

    def __init__(self) -> None:
        self.done: list[Paragraph] = []
        self.text: list[str] = []
        self.ents: list[Entity] = []
        self.length = 0

    def flush(self) -> None:
        if self.text:
            self.done.append(("\n".join(self.text), self.ents.copy()))
        self.text.clear()
        self.ents.clear()
        self.length = 0

    def add(self, text: str, ents: list[Entity]) -> None:
        if self.text:
            self.length += 1  # the joining newline
        off = self.length
        for e in ents:
            self.ents.append(Entity(e.start + off, e.end + off, e.text, e.label, e.key))
        self.text.append(text)
        self.length += len(text)


def clean_line(line: str) -> Paragraph:
    """Render one line of wikitext; returns its text and LINK entities with offsets into that text."""
    out = _Line()
    pos = 0
    while True:
        a = line.find("[[", pos)
        if a < 0:
            break
        b = _match_close(line, a)
        if b < 0:
            break
        out.add(_plain(line[pos:a]))
        kind, key, anchor = _classify(line[a + 2 : b])
        pos = b + 2
        if kind == _DROP:
            continue
        trail = _TRAIL.match(line, pos)
        if trail:
            pos = trail.end()
        out.link(kind, key, _plain(anchor).strip() + (trail.group() if trail else ""))
    out.add(_plain(line[pos:]))
    return out.finish()


def clean_wikitext(wikitext: str, drop_sections: frozenset[str] = DROP_SECTIONS) -> list[Paragraph]:
    """Render an article's wikitext into paragraphs ``(text, link entities)``.

    Paragraphs break at blank lines and headings; consecutive non-blank lines of one paragraph (list
    items, wrapped prose) are joined with a newline.
    """
    text = _COMMENT.sub("", wikitext) if "<!--" in wikitext else wikitext
    if "<" in text:
        text = _DROP_TAG_RE.sub("", text)
    text = strip_nested(text)
    if "[[" in text:
        text = strip_files(text)
    paras = _Paragraphs()
    skip_level = 0  # > 0 while inside a dropped section of this heading level
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            paras.flush()
            continue
        if line[0] == "=":
            h = _HEADING.match(line)
            if h:
                paras.flush()
                skip_level = _section_skip(skip_level, len(h.group(1)), h.group(2), drop_sections)
                continue
        if skip_level:
            continue
        c = line[0]
        if c in "|!" or line.startswith("----"):
            continue  # leftovers of a broken table; horizontal rules
        if c in "*#:;":
            line = _LIST_PREFIX.sub("", line, count=1)
        lt, le = clean_line(line)
        if lt:
            paras.add(lt, le)
    paras.flush()
    return paras.done


def _section_skip(skip_level: int, level: int, title: str, drop_sections: frozenset[str]) -> int:
    """The skip level after a heading: a dropped section's sub-sections stay dropped."""
    if skip_level and level > skip_level:
        return skip_level
    return level if _plain(title).strip().lower() in drop_sections else 0
