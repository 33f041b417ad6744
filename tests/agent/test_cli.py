"""``memtrain agent run`` through the real CLI entry point, on the tiny model."""

from __future__ import annotations

import json

import pytest

from memtrain.cli import main
from memtrain.errors import MemtrainError
from memtrain.recipes.agent_run import read_document

TEXT = "The river Orne flows through Caen before reaching the sea. Marie Curie was born in Warsaw. " * 6


def run_tiny(tmp_path, question: str, memory: int, answer: int, *extra: str) -> int:
    """``memtrain agent run`` on the tiny model over TEXT, chunked into 40-token pieces."""
    doc = tmp_path / "doc.txt"
    doc.write_text(TEXT, encoding="utf-8")
    return main(["agent", "run", f"doc={doc}", f"question={question}", "model=tiny", "agent.chunk_tokens=40",
                 f"agent.memory_tokens={memory}", f"agent.answer_tokens={answer}", *extra])


def test_agent_run_prints_memories_and_answer(tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    assert run_tiny(tmp_path, "Where was Curie born?", 8, 6, f"trace={trace}") == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    n_updates = sum(r["kind"] == "update" for r in rows)
    assert n_updates >= 2 and rows[-1]["kind"] == "final"
    assert out.count("=== memory after chunk") == n_updates
    for k in range(1, n_updates + 1):
        assert f"=== memory after chunk {k} (" in out
    assert "=== final response ===" in out
    assert "answer: (none: the response" in out  # the random tiny model writes no answer
    assert f"{n_updates} chunk(s)" in out


def test_max_chunks_setting(tmp_path, capsys):
    assert run_tiny(tmp_path, "q?", 4, 4, "agent.max_chunks=1") == 0
    out = capsys.readouterr().out
    assert out.count("=== memory after chunk") == 1 and "reading the first 1" in out


@pytest.mark.parametrize(
    ("content", "question", "message"),
    [
        (None, "q?", "does not exist"),
        (b"   \n\n ", "q?", "is empty"),
        (b"caf\xe9 au lait", "q?", "not UTF-8"),
        (b"some text", "  ", "question=... is required (and not empty)"),
    ],
)
def test_bad_inputs_exit_2_with_a_message(tmp_path, capsys, content, question, message):
    doc = tmp_path / "input.txt"
    if content is not None:
        doc.write_bytes(content)
    code = main(["agent", "run", f"doc={doc}", f"question={question}", "model=tiny"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    if content is not None and question.strip():
        assert "input.txt" in err


def test_read_document_names_the_file(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(MemtrainError, match="latin1.txt"):
        read_document(p)
    ok = tmp_path / "ok.txt"
    ok.write_text("héllo", encoding="utf-8")
    assert read_document(ok) == "héllo"


def test_unknown_engine_and_missing_base_url(tmp_path, capsys):
    from memtrain.agent.engines import EngineConfig, build_engine

    with pytest.raises(MemtrainError, match="base_url"):
        build_engine(EngineConfig(kind="openai"), "x")
    doc = tmp_path / "d.txt"
    doc.write_text("text", encoding="utf-8")
    assert main(["agent", "run", f"doc={doc}", "question=q", "engine.kind=tgi"]) == 2
    assert "engine.kind: must be one of ('hf', 'openai', 'vllm')" in capsys.readouterr().err
    assert main(["agent", "run", f"doc={doc}", "question=q", "engine.kind=openai"]) == 2
    assert "engine.base_url=" in capsys.readouterr().err


def test_vllm_missing_gives_clear_error():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    from memtrain.agent.vllm_engine import VLLMEngine

    with pytest.raises(MemtrainError, match=r"memtrain\[vllm\]"):
        VLLMEngine("smollm2")
