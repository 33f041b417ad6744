"""The real embedded SmolLM2 reads one real HotpotQA item end to end (structure, not accuracy)."""

from __future__ import annotations

import json

import pytest

from memtrain.agent.engine import HFEngine, Sampling
from memtrain.agent.loop import AgentConfig, make_task, run_memory_agent
from memtrain.scoring import score_all


@pytest.mark.integration
def test_smollm2_reads_a_hotpotqa_document(shared_data):
    from memtrain.models import load_model

    path = shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled500.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with path.open(encoding="utf-8") as f:
        item = json.loads(next(f))
    # gold paragraphs + the first three distractors, in the item's order: ~3 chunks keep the test short
    distractors = [c for c in item["contexts"] if not c["is_supporting"]][:3]
    paragraphs = [c for c in item["contexts"] if c["is_supporting"] or c in distractors]
    document = "\n\n".join(f"{c['title']}\n{c['paragraph_text']}" for c in paragraphs)
    golds = item["answers_objects"][0]["spans"]
    model, tok = load_model("smollm2")
    cfg = AgentConfig(chunk_tokens=256, memory_tokens=96, answer_tokens=32)
    task = make_task(document, item["question_text"], tok, cfg, task_id=item["question_id"])
    assert len(task.chunks) >= 3
    (traj,) = run_memory_agent(HFEngine(model, tok), [task], cfg, Sampling(), progress=False)
    assert len(traj.turns) == len(task.chunks) + 1
    assert all(m.strip() for m in traj.memories[1:])  # the real model writes a memory at every step
    assert all(len(t.completion.completion_ids) <= cfg.memory_tokens for t in traj.turns[:-1])
    assert all(item["question_text"] in t.messages[0]["content"] for t in traj.turns)
    scores = score_all(traj.response, golds)
    assert set(scores) == {"boxed", "accuracy", "strict_em", "em", "f1", "sub_em"}
    assert scores["em"] <= scores["sub_em"] and scores["em"] <= scores["f1"]  # an exact match is both
    assert (traj.answer is None) == (scores["boxed"] == 0.0)


@pytest.mark.integration
def test_model_fetch_prepares_the_embedded_cache(capsys):
    from memtrain.cli import main
    from memtrain.models import embedded_model_dir

    assert main(["model", "fetch"]) == 0
    out = capsys.readouterr().out
    assert str(embedded_model_dir()) in out
    assert (embedded_model_dir() / "model.safetensors").is_file()


@pytest.mark.integration
def test_smollm2_cpu_paths_match_stock_generate_in_fp32():
    """On real weights (fp32, so no bf16 near-ties) the CPU prefill and decode paths give stock tokens."""
    from memtrain.models import load_model

    model, tok = load_model("smollm2", dtype="fp32")
    convs = [[{"role": "user", "content": q}] for q in (
        "What river flows through Caen?", "Name a colour.", "Name a colour.",
        "Explain in two sentences why lighthouses were automated.")]
    fast = HFEngine(model, tok).generate(convs, Sampling(max_new_tokens=24))
    stock = HFEngine(model, tok, cpu_kernels=False).generate(convs, Sampling(max_new_tokens=24))
    assert [c.completion_ids for c in fast] == [c.completion_ids for c in stock]
    assert fast[1].completion_ids == fast[2].completion_ids  # the shared prompt was prefilled once, for both
