"""E2E/IMR proxy accuracy: probe choice, the masked IMR prompt, and scoring through a scripted engine."""

from __future__ import annotations

import random

from memtrain.agent.loop import AgentConfig
from memtrain.eval.proxy import evaluate_proxy
from memtrain.prompts import E2E_PROBLEM, TARGET
from memtrain.records import Completion, ImrCandidate, MemTask
from memtrain.tasks.imr import pick_probe

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


def test_imr_prompt_masks_the_entity_and_uses_memory_k():
    memories = ["No previous memory", "m1", "m2 about the bridge", "m3"]
    for s in range(30):
        p = pick_probe(e2e_task("t", "Paris"), memories, random.Random(s))
        text = p.messages[-1]["content"]
        assert TARGET in text and memories[p.k] in text and 1 <= p.l < p.k
        hidden = "Smith" if p.l == 1 else "Carl Jones"
        assert hidden not in text.split("<section>")[1]  # every form masked in the chunk


def test_evaluate_proxy_scores_e2e_and_imr(tmp_path):
    tasks = [e2e_task("a", "Paris"), e2e_task("b", "paris."), e2e_task("c", "London"),
             e2e_task("d", "Paris", 1)]
    engine = ScriptedEngine()
    cfg = AgentConfig(chunk_tokens=64, memory_tokens=16, answer_tokens=16)

    m = evaluate_proxy(engine, tasks, cfg, tmp_path, seed=0, batch_size=3, progress=False)
    assert m["n"] == 4 and m["e2e_accuracy"] == 0.75  # strict EM: "paris." normalises to "paris"
    assert m["n_imr"] == 3 and m["n_no_probe"] == 1  # the 1-chunk task has no earlier chunk
    assert m["imr_accuracy"] == 1.0 and m["imr_no_boxed"] == 0.0
    assert sum(TARGET in p for p in engine.prompts) == 3
    n_calls = len(engine.prompts)
    again = evaluate_proxy(engine, tasks, cfg, tmp_path, seed=0, batch_size=3, progress=False)
    assert len(engine.prompts) == n_calls and again["imr_accuracy"] == 1.0  # resumed: nothing re-run


def test_training_held_out_eval_and_memtrain_eval_draw_the_same_probes(tmp_path):
    """One IMR rule: the probes of the step-0 held-out eval equal those of `memtrain eval` (same seed)."""
    import json

    from helpers import make_tasks, write_taskset

    from memtrain.cli import main

    held = write_taskset(tmp_path / "held", make_tasks(4))
    train_set = write_taskset(tmp_path / "train", make_tasks(3))
    run = tmp_path / "run"
    assert main(["train", "cpu_memtrain", "model.name=tiny", f"data.tasks_dir={train_set}",
                 f"data.eval_tasks_dir={held}", "steps=1", "batch_size=1", "eval_docs=4", "seed=3",
                 "agent.memory_tokens=6", "agent.answer_tokens=4", "log.progress=false",
                 "log.tensorboard=false", "gradient_checkpointing=false", f"out_dir={run}"]) == 0
    rows = [json.loads(x) for x in (run / "held_out.jsonl").read_text().splitlines()]
    step0 = [r for r in rows if r["step"] == 0]
    train_probes = {(r["id"], r["imr"]["k"], r["imr"]["l"], r["imr"]["answer"]) for r in step0}
    assert len(train_probes) == 4 and len({p[1:] for p in train_probes}) > 1  # not one fixed probe
    out = tmp_path / "ev"
    assert main(["eval", "model=tiny", f"tasks_dir={held}", f"out={out}", "seed=3", "agent.memory_tokens=6",
                 "agent.answer_tokens=4", "agent.answer_mode=lenient", "reward=sub_em",
                 "progress=false"]) == 0
    ev = [json.loads(x) for x in (out / "proxy_results.jsonl").read_text().splitlines()]
    assert {(r["id"], r["imr"]["k"], r["imr"]["l"], r["imr"]["answer"]) for r in ev} == train_probes
    # same greedy answers too, and the reward named for what was scored
    assert {r["id"]: r["response"] for r in ev} == {r["id"]: r["response"] for r in step0}
    assert "e2e_sub_em" in json.loads((out / "metrics.json").read_text())


def test_evaluate_proxy_on_tiny_model(tiny_engine, tmp_path):
    tasks = [e2e_task("a", "Paris"), e2e_task("b", "Rome", 2)]
    cfg = AgentConfig(chunk_tokens=64, memory_tokens=6, answer_tokens=6)
    m = evaluate_proxy(tiny_engine, tasks, cfg, tmp_path, progress=False)
    assert m["n"] == 2 and m["n_imr"] == 2
    from memtrain.io import read_jsonl

    rows = list(read_jsonl(tmp_path / "proxy_results.jsonl"))
    assert m["imr_accuracy"] == sum(r["imr"]["strict_em"] for r in rows) / 2
    assert (tmp_path / "proxy_results.jsonl").is_file() and (tmp_path / "metrics.json").is_file()
