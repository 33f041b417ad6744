"""Record sources: JSON lines, Parquet, plain text, folders, Hugging Face datasets, and the real leads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from memtrain.corpus import CorpusStats, iter_passages
from memtrain.errors import MemtrainError

LEAD = (
    "Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity. "
    "She was the first woman to win a Nobel Prize, in 1903, and the only person to win it in two sciences."
)
RECORDS = [
    {
        "title": "Marie Curie",
        "text": LEAD + "\n" + "She was born in Warsaw on 7 November 1867 to a family of teachers.",
    },
    {
        "title": "Warsaw",
        "text": "Warsaw is the capital and largest city of Poland, with about 1,860,000 residents in 2021.",
    },
]


def _read(path, **kw):
    stats = CorpusStats()
    kw.setdefault("min_passage_words", 5)
    return list(iter_passages(str(path), stats=stats, **kw)), stats


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_bad_lines_are_counted_not_fatal(tmp_path):
    path = tmp_path / "leads.jsonl"
    good = [json.dumps(r).encode() for r in RECORDS]
    lines = [good[0], b'{"title": "Bad", "text": "caf\xe9 in latin-1"}', b"{not json", b"[1, 2]",
             b'{"name": "no fields"}', b"", good[1]]  # fmt: skip
    path.write_bytes(b"\n".join(lines) + b"\n")
    passages, stats = _read(path)
    assert {p.title for p in passages} == {"Marie Curie", "Warsaw"}
    assert stats.skipped["non_utf8"] == 1
    assert stats.skipped["bad_record"] == 2
    assert stats.skipped["missing_field"] == 1
    assert stats.pages == 2


def test_records_get_rule_entities_with_exact_offsets(tmp_path):
    passages, stats = _read(_write_jsonl(tmp_path / "r.jsonl", RECORDS))
    found = {(e.label, e.text) for p in passages for e in p.entities}
    for p in passages:
        for e in p.entities:
            assert p.text[e.start : e.end] == e.text
    assert {
        ("NAME", "Nobel Prize"),
        ("DATE", "1903"),
        ("DATE", "7 November 1867"),
        ("NAME", "Poland"),
    } <= found
    assert ("NUMBER", "1,860,000") in found
    assert "LINK" not in stats.entity_labels
    assert [p.pid for p in passages] == ["r:Marie Curie:0", "r:Warsaw:0"]


def test_custom_field_names_and_a_clear_error_for_wrong_ones(tmp_path):
    rows = [{"name": r["title"], "body": r["text"]} for r in RECORDS]
    path = _write_jsonl(tmp_path / "custom.jsonl", rows)
    passages, _ = _read(path, title_field="name", text_field="body")
    assert len(passages) == 2
    with pytest.raises(MemtrainError, match="'title'.*'text'"):
        _read(path)


def test_parquet_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "a" / "leads.parquet")
    _write_jsonl(tmp_path / "b" / "leads.jsonl", RECORDS)
    from_parquet, _ = _read(tmp_path / "a" / "leads.parquet")
    from_jsonl, _ = _read(tmp_path / "b" / "leads.jsonl")
    assert from_parquet and [p.to_dict() for p in from_parquet] == [p.to_dict() for p in from_jsonl]
    with pytest.raises(MemtrainError, match="no column 'body'"):
        _read(tmp_path / "a" / "leads.parquet", text_field="body")


def test_folder_of_files_and_duplicate_titles(tmp_path):
    _write_jsonl(tmp_path / "one.jsonl", RECORDS)
    _write_jsonl(tmp_path / "two.jsonl", [RECORDS[1], RECORDS[1]])
    (tmp_path / "notes.txt").write_text(
        "A plain text file about Ada Lovelace,\nwrapped over lines.\n\nSecond one."
    )
    (tmp_path / "ignored.csv").write_text("a,b\n")
    passages, stats = _read(tmp_path, min_passage_words=1)
    assert stats.files == 3
    pids = [p.pid for p in passages]
    assert "two:Warsaw:0" in pids and "two:Warsaw:1" in pids and len(set(pids)) == len(pids)
    txt = [p for p in passages if p.title == "notes"]
    assert txt[0].text == "A plain text file about Ada Lovelace, wrapped over lines.\nSecond one."


def test_real_wikipedia_leads(shared_data):
    path = shared_data / "wikipedia" / "enwiki_vital_articles_lead_extracts-00.jsonl"
    passages, stats = _read(path, limit_pages=300, min_passage_words=20)
    assert stats.pages == 300 and len(passages) >= 300
    labels = {e.label for p in passages for e in p.entities}
    assert {"NAME", "DATE", "NUMBER"} <= labels
    for p in passages:
        assert 20 <= len(p.text.split()) <= 200
        for e in p.entities:
            assert p.text[e.start : e.end] == e.text and e.key == e.key.lower()
    assert sum(bool(p.entities) for p in passages) > 0.7 * len(passages)


def test_hf_sources_offline(tmp_path):
    """A local dataset folder loads through ``datasets``; an unreachable Hub name is a clear error."""
    pytest.importorskip("datasets")
    _write_jsonl(tmp_path / "train.jsonl", RECORDS)
    code = (
        "import sys\n"
        "from memtrain.corpus import iter_passages\n"
        "from memtrain.errors import MemtrainError\n"
        "ps = list(iter_passages('hf:' + sys.argv[1], min_passage_words=5))\n"
        "print('LOCAL', [p.pid for p in ps], sorted({e.label for p in ps for e in p.entities}))\n"
        "try:\n    list(iter_passages('hf:memtrain-test/no-such-dataset:validation'))\n"
        "except MemtrainError as e:\n    print('MEMTRAIN_ERROR', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True, timeout=180
    )
    assert (
        f"LOCAL ['{tmp_path}:Marie Curie:0', '{tmp_path}:Warsaw:0'] ['DATE', 'NAME', 'NUMBER']" in out.stdout
    ), out.stdout + out.stderr[-2000:]
    assert "MEMTRAIN_ERROR hf:memtrain-test/no-such-dataset:validation" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize(
    ("bad", "reason", "where"),
    [(b'{"title": "Bad", "text": "caf\xe9 in latin-1"}', "non_utf8", "line 2"),
     (b"{not json", "bad_record", "line 2"), (b"[1, 2]", "bad_record", "record 2"),
     (b'{"name": "no fields"}', "missing_field", "record 2 (fields: name)")],
)  # fmt: skip
def test_every_lost_record_is_a_loss_and_strict_stops_at_it(tmp_path, bad, reason, where):
    """Each kind of damaged record is counted as a loss by reason; strict=True names file and line."""
    path = tmp_path / "leads.jsonl"
    good = [json.dumps(r).encode() for r in RECORDS]
    path.write_bytes(b"\n".join([good[0], bad, good[1]]) + b"\n")
    passages, stats = _read(path)
    assert len(passages) == 2 and stats.losses() == {reason: 1}
    with pytest.raises(MemtrainError, match=rf"leads.jsonl, {re.escape(where)}: .*\({reason}\); strict=true"):
        list(iter_passages(str(path), stats=CorpusStats(strict=True), min_passage_words=5))


def test_filtered_input_is_not_a_loss(tmp_path):
    """Short passages and the like are the reader's choice, not damage: no loss, strict reads on."""
    path = _write_jsonl(tmp_path / "r.jsonl", [*RECORDS, {"title": "Short", "text": "Too short."}])
    stats = CorpusStats(strict=True)
    assert len(list(iter_passages(str(path), stats=stats, min_passage_words=5))) == 2
    assert stats.skipped and stats.losses() == {}


def test_wrong_field_names_error_names_the_settings(tmp_path):
    from memtrain.recipes.build_tasks import BuildConfig

    path = _write_jsonl(tmp_path / "r.jsonl", [{"name": r["title"], "body": r["text"]} for r in RECORDS])
    with pytest.raises(MemtrainError, match=r"fields found: body, name.*title_field=NAME and text_field="):
        _read(path)
    assert {"title_field", "text_field"} <= set(vars(BuildConfig()))  # the settings the message names exist
