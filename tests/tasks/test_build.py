"""`memtrain data build` end to end on real data: no leaks, budgets, determinism, resume, bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from derived_oracle import derived_leaks

from memtrain.cli import main
from memtrain.config import load_config
from memtrain.errors import MemtrainError
from memtrain.prompts import MASK, TARGET
from memtrain.recipes.build_tasks import BuildConfig, build
from memtrain.tasks.chunking import FastTokenizer, resolve_tokenizer
from memtrain.tasks.masking import leaks, mask_entity
from memtrain.tasks.taskset import load_tasks, read_manifest

CPU = load_config(BuildConfig, "data", "cpu").e2e


def embedded_cfg(out: Path, **kw) -> BuildConfig:
    base = dict(corpus="embedded", out=str(out), e2e=CPU, num_tasks=12, shard_size=5, limit_pages=12,
                progress=False)
    base.update(kw)
    return BuildConfig(**base)


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.*"))}


def assert_valid_tasks(tasks, tokenizer, cfg) -> None:
    """The invariants every produced task must hold, checked exhaustively."""
    assert tasks
    for t in tasks:
        assert t.kind == "e2e" and 1 <= len(t.chunks) <= cfg.max_chunks
        assert len(t.imr) == len(t.chunks)
        assert sum(c.count(MASK) for c in t.chunks) >= 1
        for c in t.chunks:
            assert len(tokenizer.encode(c, add_special_tokens=False)) <= cfg.chunk_tokens
            for form in t.answers:  # zero leaks: no chunk contains any accepted answer form
                assert not leaks(c, [form]), (t.id, form)
            assert derived_leaks(c, t.answers) == [], t.id  # nor a derived form (independent checker)
        for i, cands in enumerate(t.imr):
            assert len(cands) <= cfg.imr_per_chunk
            for cand in cands:
                masked, n = mask_entity(t.chunks[i], cand.forms, TARGET)
                assert n >= 1 and not leaks(masked, cand.forms), (t.id, cand)
                assert not any(leaks(o, cand.forms) for j, o in enumerate(t.chunks) if j != i)
        d = t.to_dict()
        assert d["reward_model"]["ground_truth"] == t.answer and d["data_source"] == "memtrain/e2e"


@pytest.fixture(scope="module")
def embedded_build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("emb")
    build(embedded_cfg(out))
    return out


def test_embedded_dump_tasks_never_leak(embedded_build, tokenizer):
    tasks = load_tasks(embedded_build)
    assert len(tasks) == 12
    assert len({t.id for t in tasks}) == 12
    assert_valid_tasks(tasks, tokenizer, CPU)
    stats = json.loads((embedded_build / "stats.json").read_text())
    assert stats["documents"] == 12 and stats["shards"] == 3
    assert stats["pivots_tried"] == 12 + sum(stats["drops"].values())
    assert sum(h["count"] for h in stats["tokens_per_doc"]["histogram"]) == 12
    assert stats["corpus"]["pages"] == 12
    assert sum(stats["answer_labels"].values()) == 12
    card = (embedded_build / "README.md").read_text()
    assert "CC BY-SA" in card and "embedded" in card


def test_shared_wikipedia_jsonl_tasks_never_leak(shared_data, tmp_path, tokenizer):
    src = shared_data / "wikipedia" / "enwiki_vital_articles_lead_extracts-00.jsonl"
    cfg = BuildConfig(corpus=str(src), out=str(tmp_path), e2e=CPU, num_tasks=16, shard_size=8,
                      limit_pages=300, format="parquet", progress=False)
    stats = build(cfg)
    tasks = load_tasks(tmp_path)
    assert len(tasks) == stats["documents"] == 16
    assert_valid_tasks(tasks, tokenizer, CPU)
    assert load_tasks(tmp_path / "shard-00001.parquet")[0].to_dict() == tasks[8].to_dict()


def test_same_seed_same_bytes_for_any_worker_count(embedded_build, tmp_path):
    build(embedded_cfg(tmp_path / "w2", workers=2))
    assert shard_bytes(tmp_path / "w2") == shard_bytes(embedded_build)
    build(embedded_cfg(tmp_path / "s1", e2e=replace(CPU, seed=1)))
    assert shard_bytes(tmp_path / "s1") != shard_bytes(embedded_build)


def test_same_bytes_across_processes_with_different_hash_seeds(tmp_path):
    """Set iteration order changes with PYTHONHASHSEED; a build must not depend on it."""
    import os
    import subprocess
    import sys

    outs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"h{hash_seed}"
        cmd = [sys.executable, "-m", "memtrain.cli", "data", "build", "cpu", f"out={out}", "num_tasks=40",
               "progress=false"]
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        assert subprocess.run(cmd, env=env, capture_output=True, text=True).returncode == 0
        outs.append(shard_bytes(out))
    assert outs[0] == outs[1] and outs[0]


class Killed(Exception):
    pass


def test_resume_after_kill_and_after_deleting_a_shard(embedded_build, tmp_path):
    out = tmp_path / "r"

    def kill_after_first(s: int) -> None:
        raise Killed(s)

    with pytest.raises(Killed):
        build(embedded_cfg(out), after_shard=kill_after_first)
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000.jsonl"]
    first = out / "shard-00000.jsonl"
    mtime = first.stat().st_mtime_ns
    stats = build(embedded_cfg(out))
    assert stats["timings"]["shards_resumed"] == 1 and stats["timings"]["shards_built"] == 2
    assert first.stat().st_mtime_ns == mtime  # finished work untouched
    assert shard_bytes(out) == shard_bytes(embedded_build)

    (out / "shard-00001.jsonl").unlink()
    stats = build(embedded_cfg(out))
    assert stats["timings"]["shards_built"] == 1 and stats["documents"] == 12
    assert shard_bytes(out) == shard_bytes(embedded_build)


def test_other_config_in_same_folder_needs_overwrite(embedded_build, tmp_path):
    out = tmp_path / "o"
    build(embedded_cfg(out, num_tasks=5))
    with pytest.raises(MemtrainError, match="another configuration"):
        build(embedded_cfg(out))
    build(embedded_cfg(out, overwrite=True))
    assert shard_bytes(out) == shard_bytes(embedded_build)


def test_build_module_does_not_import_torch():
    """Data-build workers only need tokenizer files; importing torch would cost ~1.5 s per worker."""
    import subprocess
    import sys

    code = "import sys, memtrain.recipes.build_tasks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip() == "False"


def test_fast_tokenizer_matches_hf_tokenizer(tokenizer):
    fast = resolve_tokenizer("smollm2")
    assert isinstance(fast, FastTokenizer)
    for text in ["Paris, the [MASK] of France.\n\n  Ünïcode — ‘quotes’ 1969", "", "  x  "]:
        hf = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ours = fast(text, add_special_tokens=False, return_offsets_mapping=True)
        assert ours["input_ids"] == hf["input_ids"] == fast.encode(text)
        assert [tuple(o) for o in ours["offset_mapping"]] == [tuple(o) for o in hf["offset_mapping"]]


# ------------------------------------------------------------------------------------- CLI, bad input


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["data", "build", "progress=false", *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def test_cli_builds(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["data", "build", "cpu", f"out={out}", "limit_pages=5", "num_tasks=4", "shard_size=2",
               "progress=false"])
    assert rc == 0
    assert "built 4 e2e tasks" in capsys.readouterr().out
    assert len(load_tasks(out)) == 4
    m = read_manifest(out)  # what train and eval check their settings against
    assert (m.kind, m.chunk_tokens, m.max_chunks, m.tokenizer, m.complete, m.n_tasks) == \
        ("e2e", CPU.chunk_tokens, CPU.max_chunks, "smollm2", True, 4)
    assert m.sources and m.sources[0].path.endswith(".bz2") and len(m.sources[0].sha256) == 64
    assert json.loads((out / "config.json").read_text())["e2e"]["chunk_tokens"] == CPU.chunk_tokens


def test_default_build_reads_the_embedded_corpus():
    cfg = BuildConfig()
    assert (cfg.kind, cfg.corpus) == ("e2e", "embedded")


def test_cli_nonexistent_tokenizer_path(tmp_path, capsys):
    rc, err = run_cli(capsys, f"out={tmp_path / 'x'}", f"tokenizer={tmp_path / 'no' / 'such' / 'tokenizer'}")
    assert rc == 2 and "does not exist" in err


def test_cli_empty_corpus(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    rc, err = run_cli(capsys, f"corpus={empty}", f"out={tmp_path / 'x'}")
    assert rc == 2 and "empty.jsonl" in err


def test_cli_corpus_without_entities(tmp_path, capsys):
    src = tmp_path / "plain.jsonl"
    text = " ".join(["every word here is lower case and there is nothing to mask at all"] * 4)
    src.write_text("".join(json.dumps({"title": f"page {i}", "text": text}) + "\n" for i in range(5)))
    rc, err = run_cli(capsys, f"corpus={src}", f"out={tmp_path / 'x'}")
    assert rc == 2 and "no task could be built: 5 pivots dropped" in err


def test_cli_entities_all_filtered_out(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("base: cpu\ne2e: {entity_labels: [NO_SUCH_LABEL]}\n")
    rc, err = run_cli(capsys, str(cfg), f"out={tmp_path / 'x'}", "limit_pages=2")
    assert rc == 2 and "no task could be built" in err and "no_entity" in err


def test_cli_bad_config_field(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("e2e: {n_relatd: 3}\n")
    rc, err = run_cli(capsys, str(cfg), f"out={tmp_path / 'x'}")
    assert rc == 2 and "n_related" in err


def test_dense_retriever_build_records_its_choice(tmp_path):
    pytest.importorskip("all_minilm_l6_v2")
    out = tmp_path / "dense"
    assert main(["data", "build", "cpu", f"out={out}", "retriever=dense", "limit_pages=6", "num_tasks=3",
                 "e2e.min_mentions=1", "progress=false"]) == 0
    assert len(load_tasks(out)) == 3 and read_manifest(out).config["retriever"] == "dense"


# ------------------------------------------------------------------------- damaged input, absurd settings


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def cut_dump(tmp_path_factory) -> Path:
    """The embedded dump cut in half: a truncated .bz2 as a failed download leaves it."""
    pytest.importorskip("gensim")
    from memtrain.corpus import resolve_source

    data = Path(resolve_source("embedded")).read_bytes()
    path = tmp_path_factory.mktemp("cut") / "enwiki-cut.xml.bz2"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_dump_is_never_complete(cut_dump, tmp_path, capsys):
    from memtrain.tasks.taskset import open_taskset

    out = tmp_path / "cut"
    assert main(["data", "build", "cpu", f"corpus={cut_dump}", f"out={out}", "num_tasks=4",
                 "progress=false"]) == 0
    assert "INPUT LOST: truncated_stream 1" in last_line(capsys.readouterr().out)
    m = read_manifest(out)
    assert (m.finished, m.complete, m.losses, m.n_tasks) == (True, False, {"truncated_stream": 1}, 4)
    assert json.loads((out / "stats.json").read_text())["corpus"]["losses"] == {"truncated_stream": 1}
    assert "NOT read whole: input lost to damage** (truncated_stream: 1)" in (out / "README.md").read_text()
    assert len(open_taskset(out).tasks) == 4  # finished, so usable: the manifest says what it lacks

    rc, err = run_cli(capsys, "cpu", f"corpus={cut_dump}", f"out={tmp_path / 'strict'}", "strict=true")
    assert rc == 2 and last_line(err).startswith("memtrain data build: error: ")
    assert str(cut_dump) in last_line(err) and "(truncated_stream)" in last_line(err)


def test_skipped_records_are_counted_by_reason(shared_data, tmp_path, capsys):
    """A small corrupted copy of the real leads: each damaged line is a counted loss, or with strict=true
    an error naming its line."""
    lines = (shared_data / "wikipedia" / "enwiki_vital_articles_lead_extracts-00.jsonl").read_bytes()
    lines = lines.split(b"\n")[:120]
    lines[3] = lines[3][:40] + b"\xff\xfe" + lines[3][40:]  # not UTF-8
    lines[7] = lines[7][: len(lines[7]) // 2]  # JSON cut short
    lines[9] = b"[1, 2]"  # not an object
    lines[11] = json.dumps({"title": "No text"}).encode()  # a missing field
    src = tmp_path / "leads.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "t"
    assert main(["data", "build", "cpu", f"corpus={src}", f"out={out}", "num_tasks=3", "progress=false"]) == 0
    want = {"bad_record": 2, "missing_field": 1, "non_utf8": 1}
    assert "INPUT LOST: bad_record 2, missing_field 1, non_utf8 1" in last_line(capsys.readouterr().out)
    m = read_manifest(out)
    assert (m.finished, m.complete, m.losses) == (True, False, want)
    rc, err = run_cli(capsys, "cpu", f"corpus={src}", f"out={tmp_path / 's'}", "strict=true")
    assert rc == 2 and "leads.jsonl, line 4: " in last_line(err) and "(non_utf8)" in last_line(err)


def test_missing_fields_error_names_settings_that_exist(shared_data, tmp_path, capsys):
    leads = shared_data / "wikipedia" / "enwiki_vital_articles_lead_extracts-00.jsonl"
    rows = leads.read_text().split("\n")
    src = tmp_path / "renamed.jsonl"
    src.write_text("".join(json.dumps({"name": r["title"], "body": r["text"]}) + "\n"
                           for r in map(json.loads, rows[:150])))
    rc, err = run_cli(capsys, "cpu", f"corpus={src}", f"out={tmp_path / 'x'}")
    assert rc == 2 and "(fields found: body, name); set title_field=NAME and text_field=NAME" in err
    out = tmp_path / "ok"
    assert main(["data", "build", "cpu", f"corpus={src}", f"out={out}", "title_field=name",
                 "text_field=body", "num_tasks=3", "progress=false"]) == 0
    assert read_manifest(out).complete


def test_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    f = tmp_path / "tasks.jsonl"
    f.write_text("keep me")
    for out in (f, f / "sub"):
        rc, err = run_cli(capsys, "cpu", f"out={out}", "limit_pages=2")
        assert rc == 2 and "is a file, not a folder" in err and len(err.strip().splitlines()) == 1
    assert f.read_text() == "keep me"


def test_absurd_num_tasks_are_one_line_errors(tmp_path, capsys):
    rc, err = run_cli(capsys, "cpu", f"out={tmp_path / 'a'}", "num_tasks=1000000000000")
    assert rc == 2 and "more tasks than any corpus can give" in err and len(err.strip().splitlines()) == 1
    rc, err = run_cli(capsys, "cpu", f"out={tmp_path / 'b'}", "num_tasks=1000000", "limit_pages=3")
    assert rc == 2 and "far beyond what corpus 'embedded' can give" in last_line(err)
    assert not list((tmp_path / "b").glob("shard-*"))  # refused before any shard


def test_num_tasks_beyond_the_pool_is_capped_not_sharded_into_empty_files(tmp_path, capsys):
    out = tmp_path / "cap"
    stats = build(embedded_cfg(out, num_tasks=200, shard_size=10, limit_pages=2,
                               e2e=replace(CPU, min_mentions=1, min_chunks=1)))
    pool = stats["pool_passages"]
    assert pool < 200 and stats["shards"] == -(-pool // 10)  # shards for the pool, not for 200 tasks
    assert len(list(out.glob("shard-*.jsonl"))) == stats["shards"]
    assert all(d["pivots_tried"] > 0 for d in map(json.loads, map(Path.read_text,
                                                                    (out / "shard_stats").glob("*.json"))))
    assert "(of num_tasks=200: one per passage of the pool)" in last_line(capsys.readouterr().out)
