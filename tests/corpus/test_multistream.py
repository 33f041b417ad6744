"""Multistream dumps read in parallel: the same pages, in the same order, as the sequential reader."""

from __future__ import annotations

import bz2
import logging
from pathlib import Path

import pytest

from memtrain.corpus import CorpusStats, iter_passages
from memtrain.corpus.multistream import find_index, iter_pages_parallel, read_offsets, write_multistream
from memtrain.corpus.sources import _files
from memtrain.corpus.wikixml import iter_pages
from memtrain.errors import MemtrainError


def _pages(dump_parts, n: int) -> list[str]:
    extra = [  # pages the reader skips, so skip counts are compared too
        dump_parts.page_xml("Talk:Topic 3", "A talk page about [[Topic 3]].", ns=1, pid=900),
        dump_parts.page_xml("Old name", "#REDIRECT [[Topic 1]]", pid=901),
    ]
    pages = [
        dump_parts.page_xml(
            f"Topic {i}",
            f"'''Topic {i}''' is an article about [[Subject {i}]] written in {1900 + i} by "
            f"[[Ada Lovelace|Lady Lovelace]], with enough words to make passage number {i} long. " * 3,
            pid=i + 1,
        )
        for i in range(n)
    ]
    return pages[:5] + extra + pages[5:]


def write_dump(folder: Path, dump_parts, n_pages: int = 23, per_stream: int = 4,
               name: str = "enwiki-20240601-pages-articles-multistream.xml.bz2") -> tuple[Path, Path]:
    """A multistream dump as Wikimedia writes it: header stream, streams of ``per_stream`` pages (each
    ``bz2.compress``-ed alone), the closing-tag stream, and the ``offset:page_id:title`` index."""
    pages = _pages(dump_parts, n_pages)
    data = bz2.compress(dump_parts.HEADER.encode())
    lines = []
    for s in range(0, len(pages), per_stream):
        for j, page in enumerate(pages[s : s + per_stream]):
            title = page.split("<title>")[1].split("</title>")[0]
            lines.append(f"{len(data)}:{s + j + 1}:{title}\n")
        data += bz2.compress("".join(pages[s : s + per_stream]).encode())
    data += bz2.compress(dump_parts.FOOTER.encode())
    dump = folder / name
    dump.write_bytes(data)
    index = folder / name.replace("multistream", "multistream-index").replace(".xml", ".txt")
    index.write_bytes(bz2.compress("".join(lines).encode()))
    return dump, index


def _sequential(dump: Path) -> tuple[list, dict]:
    stats = CorpusStats()
    return list(iter_pages(dump, stats)), stats.as_dict()


@pytest.mark.parametrize("workers,per_task", [(2, 1), (2, 3), (3, 2), (1, 2)])
def test_parallel_read_equals_sequential(dump_parts, tmp_path, workers, per_task):
    dump, index = write_dump(tmp_path, dump_parts)
    assert find_index(dump) == index
    want, want_stats = _sequential(dump)
    assert len(want) == 23 and want_stats["skipped"] == {"namespace": 1, "redirect": 1}
    stats = CorpusStats()
    got = list(iter_pages_parallel(dump, workers=workers, stats=stats, streams_per_task=per_task))
    assert got == want
    assert stats.as_dict() == want_stats


def test_build_source_reads_in_parallel_with_the_same_passages(dump_parts, tmp_path, monkeypatch):
    dump, index = write_dump(tmp_path, dump_parts)
    seq_stats, par_stats = CorpusStats(), CorpusStats()
    seq = list(iter_passages(str(dump), stats=seq_stats))
    import memtrain.corpus.sources as sources

    used = []
    real = sources.iter_pages_parallel
    monkeypatch.setattr(sources, "iter_pages_parallel", lambda *a, **k: used.append(a) or real(*a, **k))
    par = list(iter_passages(str(dump), stats=par_stats, workers=2))
    assert used and used[0][1] == index  # the index beside the dump was found and used
    assert par == seq and len(seq) >= 23
    assert par_stats.as_dict() == seq_stats.as_dict()
    # a folder holding the dump and its index reads the dump once; the index is not a corpus file
    assert _files(tmp_path) == [dump]
    assert list(iter_passages(str(tmp_path), workers=2)) == seq


def test_index_names_of_dumps_wikimedia_org(tmp_path):
    for dump, index in [
        ("enwiki-20240601-pages-articles-multistream.xml.bz2",
         "enwiki-20240601-pages-articles-multistream-index.txt.bz2"),
        ("enwiki-20240601-pages-articles-multistream1.xml-p1p41242.bz2",
         "enwiki-20240601-pages-articles-multistream-index1.txt-p1p41242.bz2"),
        ("x-multistream.xml.bz2", "x-multistream-index.txt"),  # an uncompressed index
    ]:
        (tmp_path / dump).write_bytes(b"BZh")
        assert find_index(tmp_path / dump) is None
        (tmp_path / index).write_text("")
        assert find_index(tmp_path / dump) == tmp_path / index
    assert find_index(tmp_path / "enwiki-20240601-pages-articles.xml.bz2") is None  # not multistream


def test_damaged_stream_keeps_what_the_sequential_reader_keeps(dump_parts, tmp_path, caplog):
    dump, index = write_dump(tmp_path, dump_parts)
    offsets = read_offsets(index)
    data = bytearray(dump.read_bytes())
    mid = offsets[3] + (offsets[4] - offsets[3]) // 2
    data[mid : mid + 40] = b"\x00" * 40  # corrupt the 4th page stream
    dump.write_bytes(bytes(data))
    want, want_stats = _sequential(dump)
    assert 0 < len(want) < 23
    stats = CorpusStats()
    with caplog.at_level(logging.WARNING):
        got = list(iter_pages_parallel(dump, workers=2, stats=stats, streams_per_task=1))
    assert got == want  # the pages before the damaged stream, and nothing after it
    # the sequential reader's BZ2File takes a corrupt stream that follows a good one for trailing junk
    # and ends the file there, so it reports the XML cut short; the parallel reader names the real cause
    seq_skips, par_skips = want_stats.pop("skipped"), stats.as_dict()
    assert par_skips.pop("skipped") == {**{k: v for k, v in seq_skips.items() if k != "malformed_xml"},
                                        "truncated_stream": 1}
    assert seq_skips.get("malformed_xml", 0) + seq_skips.get("truncated_stream", 0) == 1
    assert par_skips == want_stats
    assert "truncated or corrupt" in caplog.text


def test_missing_index_is_a_clear_error(dump_parts, tmp_path):
    dump, index = write_dump(tmp_path, dump_parts)
    with pytest.raises(MemtrainError, match="index .*not found"):
        list(iter_pages_parallel(dump, index=tmp_path / "nope-index.txt.bz2", workers=2))
    index.unlink()
    with pytest.raises(MemtrainError, match="no multistream index beside it"):
        list(iter_pages_parallel(dump, workers=2))
    # iter_passages without an index falls back to the sequential reader
    assert len({p.title for p in iter_passages(str(dump), workers=2)}) == 23


@pytest.mark.parametrize(
    "content,match",
    [
        (b"this is not an index\n", "not an index line offset:page_id:title"),
        (b"600:1:A\n500:2:B\n", "comes after 600"),
        (b"", "lists no streams"),
        (b"10000000:1:Far away\n", "past the end of the dump"),
        (b"+7", "does not end at byte"),  # the first stream's offset moved 7 bytes into it
        (b"+7,1", "not the start of a bz2 stream|does not end at byte"),  # the second's
        (bz2.compress(b"600:1:A\n" * 1000)[:-30], "unreadable"),  # a cut .bz2 index
    ],
)
def test_corrupt_index_is_a_clear_error(dump_parts, tmp_path, content, match):
    dump, index = write_dump(tmp_path, dump_parts)
    if content.startswith(b"+7"):  # shift one offset of the real index into the middle of its stream
        offsets = read_offsets(index)
        at = 1 if content.endswith(b",1") else 0
        offsets[at] += 7
        content = "".join(f"{o}:{i + 1}:Topic {i}\n" for i, o in enumerate(offsets)).encode()
    index.write_bytes(content)
    with pytest.raises(MemtrainError, match=match):
        list(iter_pages_parallel(dump, workers=2))


def test_real_dump_repacked_as_multistream(gensim_dump, tmp_path):
    dump, index = write_multistream(gensim_dump, tmp_path / "enwiki-multistream.xml.bz2", pages_per_stream=10)
    assert find_index(dump) == index and len(read_offsets(index)) == 10
    want = list(iter_pages(gensim_dump))
    assert list(iter_pages(dump)) == want  # the re-packed file holds the same articles
    assert list(iter_pages_parallel(dump, workers=2, streams_per_task=2)) == want
    seq = list(iter_passages(str(dump)))
    assert list(iter_passages(str(dump), workers=2)) == seq
    assert [(p.title, p.text, p.entities) for p in seq] == [
        (p.title, p.text, p.entities) for p in iter_passages(str(gensim_dump))]


def test_data_build_from_a_multistream_dump_is_identical_for_any_workers(gensim_dump, tmp_path):
    from memtrain.config import load_config
    from memtrain.recipes.build_tasks import BuildConfig, build

    dump, _ = write_multistream(gensim_dump, tmp_path / "enwiki-multistream.xml.bz2", pages_per_stream=10)
    cpu = load_config(BuildConfig, "data", "cpu").e2e
    shards = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        build(BuildConfig(corpus=str(dump), out=str(out), e2e=cpu, num_tasks=6, shard_size=3, limit_pages=30,
                          workers=workers, progress=False))
        shards.append({p.name: p.read_bytes() for p in sorted(out.glob("shard-*.*"))})
    assert len(shards[0]) == 2 and shards[0] == shards[1]


@pytest.mark.parametrize("where", ["at a stream boundary", "inside a stream"])
def test_truncated_dump_with_its_index_is_a_loss_not_an_index_error(dump_parts, tmp_path, where):
    """A multistream dump cut short of what its index lists keeps the pages before the cut and counts
    ``truncated_stream``, like the sequential reader; it is not mistaken for another dump's index."""
    dump, index = write_dump(tmp_path, dump_parts)
    whole = list(iter_pages(dump))
    offsets = read_offsets(index)
    cut = offsets[3] if where == "at a stream boundary" else offsets[3] + 40
    dump.write_bytes(dump.read_bytes()[:cut])
    stats = CorpusStats()
    got = list(iter_pages_parallel(dump, workers=2, stats=stats, streams_per_task=1))
    assert len(list(iter_pages(dump))) <= len(got) < len(whole) and got == whole[: len(got)]
    assert stats.losses() == {"truncated_stream": 1}
    with pytest.raises(MemtrainError, match="truncated"):
        list(iter_pages_parallel(dump, workers=2, stats=CorpusStats(strict=True)))
