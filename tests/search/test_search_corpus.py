"""The local search corpus: `memtrain data build kind=search_corpus` on a fake shared/data folder, and on
the real one when present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memtrain.config import load_config
from memtrain.errors import MemtrainError
from memtrain.io import write_jsonl
from memtrain.recipes.build_tasks import BuildConfig, build
from memtrain.records import Hit
from memtrain.scoring import normalize_answer
from memtrain.search.backends import LocalIndex
from memtrain.search.corpus import (
    AnswerFinder,
    dedup_key,
    has_answer,
    load_answerable_nq,
    load_passages,
    normalise,
    passage_id,
)

LYON = "Lyon is a city in France. It lies where the Rhone meets the Saone."


def fake_shared_data(root: Path) -> Path:
    """Every source in its real layout; one HotpotQA and one MuSiQue paragraph repeat a Wikipedia lead up to
    case, punctuation and spacing, one HotpotQA paragraph repeats inside HotpotQA."""
    write_jsonl(root / "wikipedia" / "leads-00.jsonl", [
        {"title": "Lyon", "text": LYON, "description": "city", "topic": "Geography"},
        {"title": "Paris", "text": "Paris is the capital of France.", "description": "", "topic": ""},
    ])
    write_jsonl(root / "wikipedia" / "leads-01.jsonl", [
        {"title": "Quark", "text": "A quark is an elementary particle.", "description": "", "topic": ""},
    ])
    ctx = [{"id": "0", "title": "Lyon", "paragraph_text": "lyon is a city in France -- it lies where the "
            "RHONE meets the Saone", "is_supporting": True},
           {"id": "1", "title": "Shirley Temple", "paragraph_text": "Shirley Temple  was Chief of Protocol.",
            "is_supporting": True},
           {"id": "2", "title": "Empty", "paragraph_text": "  ...  ", "is_supporting": False}]
    write_jsonl(root / "hotpotqa" / "hotpot.jsonl", [
        {"question_id": "a", "question_text": "q?", "answers_objects": [{"spans": ["x"]}], "contexts": ctx},
        {"question_id": "b", "question_text": "q2?", "answers_objects": [{"spans": ["y"]}],
         "contexts": ctx[1:2]},
    ])
    (root / "musique").mkdir()
    (root / "musique" / "m.json").write_text(json.dumps([{"id": "m1", "paragraphs": [
        {"idx": 0, "title": "Quark", "paragraph_text": "A quark is an elementary particle!",
         "is_supporting": False},
        {"idx": 1, "title": "G. Stanley Hall", "paragraph_text": "Hall was the first president of the APA.",
         "is_supporting": True}]}]))
    (root / "squad").mkdir()
    (root / "squad" / "s.json").write_text(json.dumps({"version": "v2.0", "data": [
        {"title": "Super_Bowl_50", "paragraphs": [{"context": "Super Bowl 50 was played in 2016.",
                                                   "qas": []}]}]}))
    write_jsonl(root / "nq_open" / "NQ-open.dev.jsonl", [
        {"question": "who was chief of protocol", "answer": ["Shirley Temple"]},
        {"question": "where was super bowl 50", "answer": ["Levi's Stadium"]},
    ])
    return root


def cfg(data: Path, out: Path, *more: str) -> BuildConfig:
    return load_config(BuildConfig, "data", "search_corpus_cpu",
                       [f"out={out}", f"search_corpus.data={data}", "progress=false", *more])


def test_builds_a_deduplicated_wiki18_corpus_with_its_manifest(tmp_path, capsys):
    data, out = fake_shared_data(tmp_path / "data"), tmp_path / "corpus"
    m = build(cfg(data, out))
    rows = [json.loads(line) for line in (out / "passages.jsonl").read_text().splitlines()]
    assert [set(r) for r in rows] == [{"id", "contents"}] * 6
    assert [r["contents"] for r in rows] == [
        f'"Lyon"\n{LYON}', '"Paris"\nParis is the capital of France.',
        '"Quark"\nA quark is an elementary particle.',
        '"Shirley Temple"\nShirley Temple  was Chief of Protocol.',
        '"G. Stanley Hall"\nHall was the first president of the APA.',
        '"Super Bowl 50"\nSuper Bowl 50 was played in 2016.',  # SQuAD's "_" in titles printed as spaces
    ]  # the first copy of each duplicate kept, sources in order
    assert rows[0] == {"id": passage_id("wikipedia", dedup_key(LYON)), "contents": f'"Lyon"\n{LYON}'}
    assert rows[3]["id"].startswith("hotpotqa:") and rows[4]["id"].startswith("musique:")
    by = {s["name"]: s for s in m["sources"]}
    assert {k: (v["read"], v["kept"], v["duplicates"], v["empty"]) for k, v in by.items()} == {
        "wikipedia": (3, 3, 0, 0), "hotpotqa": (4, 1, 2, 1), "musique": (2, 1, 1, 0), "squad": (1, 1, 0, 0)}
    assert m["n_passages"] == 6 and m["duplicates_dropped"] == 3 and m["complete"]
    assert [f["bytes"] for f in by["wikipedia"]["files"]] == \
        [(data / "wikipedia" / n).stat().st_size for n in ("leads-00.jsonl", "leads-01.jsonl")]
    assert all(len(f["sha256"]) == 64 for s in m["sources"] for f in s["files"])
    assert json.loads((out / "manifest.json").read_text()) == m
    # NQ answerability: the first answer is in the pool (and retrieved), the second nowhere
    nq = load_answerable_nq(out)
    assert nq["who was chief of protocol"]["in_pool"] and nq["who was chief of protocol"]["bm25_rank"] == 1
    assert nq["where was super bowl 50"] == {"answers": ["Levi's Stadium"], "in_pool": False,
                                             "bm25_rank": None}
    assert m["answerable_nq"]["in_pool"] == 1 and m["answerable_nq"]["questions_unique"] == 2
    assert [p.id for p in load_passages(out)] == [r["id"] for r in rows]

    # re-run: nothing to do, nothing rewritten
    before = (out / "passages.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    assert build(cfg(data, out)) == m
    assert "up to date" in capsys.readouterr().out
    assert (out / "passages.jsonl").stat().st_mtime_ns == before

    # another configuration needs overwrite=true; then the corpus is replaced
    with pytest.raises(MemtrainError, match="overwrite=true"):
        build(cfg(data, out, "search_corpus.sources=[squad,wikipedia]"))
    m2 = build(cfg(data, out, "search_corpus.sources=[squad,wikipedia]", "search_corpus.nq_answerable=false",
                   "overwrite=true"))
    assert m2["n_passages"] == 4 and m2["answerable_nq"] is None and not (out / "answerable_nq.json").exists()
    assert load_passages(out)[0].id.startswith("squad:")
    assert load_passages(out)[1].id == rows[0]["id"]  # ids depend on source and text only: stable


def test_a_killed_build_is_rebuilt(tmp_path):
    data, out = fake_shared_data(tmp_path / "data"), tmp_path / "corpus"
    m = build(cfg(data, out))
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    (out / "passages.jsonl").write_text("torn")
    assert build(cfg(data, out)) == m
    assert len(load_passages(out)) == 6


def test_missing_shared_data_is_a_clear_error(tmp_path):
    with pytest.raises(MemtrainError, match="shared data folder not found") as e:
        build(cfg(tmp_path / "nowhere", tmp_path / "out"))
    assert str((tmp_path / "nowhere").resolve()) in str(e.value)
    data = fake_shared_data(tmp_path / "data")
    for f in (data / "musique").iterdir():
        f.unlink()
    with pytest.raises(MemtrainError, match="no musique file"):
        build(cfg(data, tmp_path / "out"))


def test_answer_strings_are_matched_word_bounded_after_squad_normalisation():
    assert has_answer('"The Beatles"\nThe band formed in Liverpool.', ["Beatles"])
    assert has_answer("It ended on 14 December, 1972.", ["December 1972"])  # punctuation dropped
    assert not has_answer("In 19720 nothing happened.", ["1972"])  # word-bounded
    assert not has_answer("anything", ["", "..."])  # an answer normalised to nothing matches nothing
    for s in ["The U.S.A.'s \\text{capital}!", "  A  tale\tof Two-Cities ", "an apple, the end"]:
        assert normalise(s) == normalize_answer(s)
    pool = [Hit.from_contents(str(i), c) for i, c in enumerate(['"A"\nthe year 1972 ended', '"B"\n19720 no'])]
    assert AnswerFinder(pool).passages_with("1972") == [0]
    assert AnswerFinder(pool).passages_with("The") == []


# ------------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def real_corpus(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("search_corpus")
    return build(cfg(shared_data, out)), out


def test_real_corpus_has_about_18k_passages_and_finds_hotpotqa_gold(real_corpus, shared_data):
    m, out = real_corpus
    assert 17_000 <= m["n_passages"] <= 18_500
    by = {s["name"]: s for s in m["sources"]}
    assert by["wikipedia"]["kept"] == 10_033
    assert m["answerable_nq"]["questions_total"] == 3610
    index = LocalIndex.from_corpus(out, "bm25", topk=3, progress=False)
    with open(shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled500.jsonl") as f:
        first = json.loads(f.readline())
    gold = {dedup_key(c["paragraph_text"]) for c in first["contexts"] if c["is_supporting"]}
    (hits,) = index.search([first["question_text"]])
    assert gold & {dedup_key(h.text) for h in hits}, (first["question_text"], [h.title for h in hits])
