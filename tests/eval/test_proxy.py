"""E2E/IMR proxy accuracy: probe choice, the masked IMR prompt, and scoring through a scripted engine."""

from __future__ import annotations

import random

from memtrain.agent.engine import Completion, Sampling
from memtrain.agent.loop import AgentConfig
from memtrain.eval.proxy import evaluate_proxy, imr_prompt, pick_imr
from memtrain.prompts import E2E_PROBLEM, TARGET
from memtrain.records import ImrCandidate, MemTask

CHUNKS = [
    "Alice Smith met the [MASK] delegation in spring.",
    "The [MASK] bridge was built in 1850 by Carl Jones.",
    "Dora Lane lives far from the [MASK] coast.",
]
IMR = [
    [ImrCandidate("Alice Smith", ["Alice Smith", "Smith"])],
    [ImrCandidate("Carl Jones", ["Carl Jones"])],
    [],
]


def e2e_task(tid: str, answer: str, n_chunks: int = 3) -> MemTask:
    return MemTask(id=tid, kind="e2e", problem=E2E_PROBLEM, chunks=CHUNKS[:n_chunks], answers=[answer],
                   imr=IMR[:n_chunks])


class ScriptedEngine:
    """Answers 'Paris' to the final question and the right entity to IMR prompts; memories are fixed text."""

    tokenizer = None

    def __init__(self):
        self.prompts: list[str] = []

    def generate(self, conversations, sampling):
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            self.prompts.append(text)
            if TARGET in text:
                reply = "\\boxed{Carl Jones}" if "1850" in text else "\\boxed{Alice Smith}"
            elif "Updated memory:" in text:
                reply = "notes"
            else:
                reply = "It is \\boxed{Paris}."
            out.append(Completion(text=reply, prompt_ids=[], completion_ids=[], finish_reason="stop"))
        return out


def test_pick_imr_respects_the_gap_and_is_deterministic():
    assert pick_imr(1, IMR[:1], random.Random(0)) is None  # one chunk: no earlier chunk to recall
    assert pick_imr(3, [[], [], []], random.Random(0)) is None
    seen = set()
    for s in range(60):
        p = pick_imr(3, IMR, random.Random(s))
        assert p is not None and 1 <= p.l and p.l + 1 <= p.k <= 3
        assert p.candidate in IMR[p.l - 1]
        seen.add((p.k, p.l))
        q = pick_imr(3, IMR, random.Random(s))
        assert (q.k, q.l, q.candidate) == (p.k, p.l, p.candidate)
    assert seen == {(2, 1), (3, 1), (3, 2)}
    for s in range(20):
        p = pick_imr(3, IMR, random.Random(s), min_gap=2)
        assert (p.k, p.l) == (3, 1)
    assert {pick_imr(3, IMR, random.Random(s), min_gap=0).l for s in range(60)} == {1, 2}


def test_imr_prompt_masks_the_entity_and_uses_memory_k():
    p = pick_imr(3, IMR, random.Random(1), min_gap=2)
    memories = ["No previous memory", "m1", "m2 about the bridge", "m3"]
    text = imr_prompt(e2e_task("t", "Paris"), memories, p)[-1]["content"]
    assert TARGET in text and "Alice Smith" not in text and "Smith" not in text
    assert memories[p.k] in text


def test_evaluate_proxy_scores_e2e_and_imr(tmp_path):
    tasks = [e2e_task("a", "Paris"), e2e_task("b", "paris."), e2e_task("c", "London"),
             e2e_task("d", "Paris", 1)]
    engine = ScriptedEngine()
    cfg = AgentConfig(chunk_tokens=64, memory_tokens=16, answer_tokens=16)

    m = evaluate_proxy(engine, tasks, cfg, Sampling(), tmp_path, seed=0, batch_size=3, progress=False)
    assert m["n"] == 4 and m["e2e_accuracy"] == 0.75  # strict EM: "paris." normalises to "paris"
    assert m["n_imr"] == 3 and m["n_no_probe"] == 1  # the 1-chunk task has no earlier chunk
    assert m["imr_accuracy"] == 1.0 and m["imr_no_boxed"] == 0.0
    assert sum(TARGET in p for p in engine.prompts) == 3
    n_calls = len(engine.prompts)
    again = evaluate_proxy(engine, tasks, cfg, Sampling(), tmp_path, seed=0, batch_size=3, progress=False)
    assert len(engine.prompts) == n_calls and again["imr_accuracy"] == 1.0  # resumed: nothing re-run


def test_evaluate_proxy_on_tiny_model(tiny_engine, greedy, tmp_path):
    tasks = [e2e_task("a", "Paris"), e2e_task("b", "Rome", 2)]
    cfg = AgentConfig(chunk_tokens=64, memory_tokens=6, answer_tokens=6)
    m = evaluate_proxy(tiny_engine, tasks, cfg, greedy, tmp_path, progress=False)
    assert m["n"] == 2 and m["n_imr"] == 2 and 0 <= m["imr_accuracy"] <= 1
    assert (tmp_path / "proxy_results.jsonl").is_file() and (tmp_path / "metrics.json").is_file()
