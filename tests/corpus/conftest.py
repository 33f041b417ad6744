"""Fixtures for corpus tests: hand-written MediaWiki dumps and the real gensim dump excerpt."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from xml.sax.saxutils import escape

import pytest

HEADER = (
    '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
    "  <siteinfo><sitename>Wikipedia</sitename><dbname>enwiki</dbname></siteinfo>\n"
)
FOOTER = "</mediawiki>\n"


def page_xml(title: str, text: str | None, ns: int = 0, redirect: str | None = None, pid: int = 1) -> str:
    """One <page> element as a real dump writes it (text XML-escaped, optional <redirect>)."""
    red = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    body = (
        '      <text xml:space="preserve" />\n'
        if text is None
        else (f'      <text xml:space="preserve">{escape(text)}</text>\n')
    )
    return (
        f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{pid}</id>\n{red}"
        f"    <revision>\n      <id>{pid * 10}</id>\n      <model>wikitext</model>\n{body}    </revision>\n"
        "  </page>\n"
    )


FRANCE = """{{Infobox country
| conventional_long_name = French Republic
| population_estimate = 67,000,000 {{increase}}
}}
'''France''' is a country in [[Western Europe]].<ref name="cia">{{cite web |url=http://example.org |title=World Factbook}}</ref> Its capital is [[Paris|the capital]], and it borders [[germany|Germany]].<ref name="short" />
[[File:Flag of France.svg|thumb|The flag, designed by [[Jacques-Louis David]] in 1794]]
The country has many <b>famous</b> [[cathedral]]s and the [[new_york_city#Trivia|Statue of Liberty]] was a gift.

== Geography ==
{| class="wikitable"
|-
! Region !! Area
|-
| Brittany || 27,208 km2
|}
France spans the [[Alps]] and the [[Pyrenees]]. The [[Loire]] is its longest river.<!-- a hidden comment -->

== References ==
{{reflist}}
* Some referenced book by Jane Doe.

[[Category:Countries in Europe]]
[[de:Frankreich]]
"""  # noqa: E501

SAMPLE_PAGES = [
    ("France", FRANCE, {}),
    ("Paris", "'''Paris''' is the capital of [[France]] and lies on the [[Seine]] river.", {}),
    ("Lutetia", "#REDIRECT [[Paris]]", {"redirect": "Paris"}),
    ("Paname", "#redirect [[Paris]] {{R from nickname}}", {}),
    ("Mercury (disambiguation)", "'''Mercury''' may refer to:\n* [[Mercury (planet)]]", {}),
    ("Jaguar (name)", "'''Jaguar''' may refer to:\n* [[Jaguar]], a cat\n\n{{disambiguation}}", {}),
    ("Wikipedia:About", "Project page text about [[Wikipedia]].", {"ns": 4}),
    ("Blank", None, {}),
    ("Stub", "{{stub}}\n[[Category:Stubs]]", {}),
]


@pytest.fixture
def hand_written_france() -> str:
    """The wikitext of the hand-written France article (infobox, refs, table, File, sections)."""
    return FRANCE


@pytest.fixture
def make_dump(tmp_path: Path) -> Callable[..., Path]:
    """``make_dump(pages, name="dump.xml", compress=None)`` writes a dump and returns its path."""

    def make(pages=SAMPLE_PAGES, name: str = "dump.xml", compress: str | None = None) -> Path:
        xml = HEADER + "".join(page_xml(t, x, pid=i + 1, **kw) for i, (t, x, kw) in enumerate(pages)) + FOOTER
        data = xml.encode("utf-8")
        if compress == "bz2":
            import bz2

            data = bz2.compress(data)
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return make


@pytest.fixture(scope="session")
def dump_parts() -> SimpleNamespace:
    """HEADER, FOOTER and page_xml(...) for tests that assemble a dump themselves."""
    return SimpleNamespace(HEADER=HEADER, FOOTER=FOOTER, page_xml=page_xml)


@pytest.fixture(scope="session")
def gensim_dump() -> Path:
    """The real 206-page enwiki excerpt inside PyPI gensim (found without importing gensim)."""
    if importlib.util.find_spec("gensim") is None:
        pytest.skip("gensim not installed (pip install 'gensim>=4.3')")
    from memtrain.corpus import resolve_source

    return Path(resolve_source("embedded"))
