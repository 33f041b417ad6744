"""``memtrain agent run`` reads answers the way the model's presets do, takes a training run's agent
settings with its model, and shows each memory as soon as it is written."""

from __future__ import annotations

import json

import pytest

from memtrain import prompts
from memtrain.cli import main
from memtrain.config import load_config
from memtrain.recipes import agent_run
from memtrain.recipes.agent_run import AgentRunConfig
from memtrain.records import Completion

TEXT = "The river Orne flows through Caen before reaching the sea. Marie Curie was born in Warsaw. " * 6


class Scripted:
    """An engine that writes a fixed memory and a fixed unboxed answer, and records what it was asked."""

    def __init__(self, tokenizer, on_call=None):
        self.tokenizer = tokenizer
        self.calls: list[list] = []
        self.on_call = on_call

    def generate(self, conversations, sampling):
        if self.on_call:
            self.on_call()
        self.calls.append(conversations)
        final = sampling.max_new_tokens == self.answer_tokens
        text = "Warsaw\nbecause the notes say so" if final else f"note {len(self.calls)}"
        return [Completion(text, [1, 2], [3, 4], "stop") for _ in conversations]


@pytest.fixture
def scripted(tokenizer, monkeypatch):
    engine = Scripted(tokenizer)
    monkeypatch.setattr(agent_run, "build_engine", lambda cfg, model: engine)
    return engine


def _run(tmp_path, scripted, *extra: str) -> int:
    doc = tmp_path / "doc.txt"
    doc.write_text(TEXT, encoding="utf-8")
    args = [f"doc={doc}", "question=Where was Curie born?", *extra]
    cfg = load_config(AgentRunConfig, "agent", None, args)
    scripted.answer_tokens = agent_run.run_settings(cfg.model, cfg.agent)[0].answer_tokens
    return main(["agent", "run", *args])


def test_an_unboxed_answer_is_read_as_the_embedded_models_presets_read_it(tmp_path, scripted, capsys):
    """The README's own example answered "(none: no \\boxed{})": the default reads answers leniently, as
    every preset of the embedded model does; boxed stays the strict, opt-in reading."""
    assert _run(tmp_path, scripted, "agent.chunk_tokens=40") == 0
    out = capsys.readouterr().out
    assert "\nanswer: Warsaw   (no \\boxed{}: the response's first line, agent.answer_mode=lenient)" in out
    assert _run(tmp_path, scripted, "agent.chunk_tokens=40", "agent.answer_mode=boxed") == 0
    assert "answer: (none: the response has no \\boxed{} answer; agent.answer_mode=boxed)" in \
        capsys.readouterr().out


def test_a_partial_agent_override_keeps_the_other_defaults():
    cfg = load_config(AgentRunConfig, "agent", None, ["doc=d.txt", "question=q", "agent.memory_tokens=8"])
    agent, adopted, _ = agent_run.run_settings(cfg.model, cfg.agent)
    assert (agent.memory_tokens, agent.chunk_tokens, agent.answer_mode) == (8, 512, "lenient") and not adopted


def test_each_memory_is_printed_as_soon_as_it_is_written(tmp_path, tokenizer, monkeypatch, capsys):
    printed: list[str] = []
    seen_at_call: list[int] = []

    def before_each_call():
        printed.append(capsys.readouterr().out)
        seen_at_call.append("".join(printed).count("=== memory after chunk"))

    engine = Scripted(tokenizer, on_call=before_each_call)
    monkeypatch.setattr(agent_run, "build_engine", lambda cfg, model: engine)
    assert _run(tmp_path, engine, "agent.chunk_tokens=40") == 0
    printed.append(capsys.readouterr().out)
    n_updates = len(engine.calls) - 1
    assert n_updates >= 3
    assert seen_at_call == list(range(n_updates + 1))  # memory k is on screen before chunk k+1 is read
    assert "".join(printed).count("=== memory after chunk") == n_updates


def test_a_training_runs_model_brings_its_prompts_and_answer_reading(tmp_path, scripted, tokenizer, capsys):
    from memtrain.tasks.chunking import chunk_text

    run = tmp_path / "runs" / "micro"
    (run / "final").mkdir(parents=True)
    agent = {"chunk_tokens": 24, "memory_tokens": 32, "answer_tokens": 16, "max_chunks": None,
             "prompt_version": "micro", "answer_mode": "lenient"}
    (run / "config.json").write_text(json.dumps({"rollout": {"g1": 4}, "agent": agent}))
    assert _run(tmp_path, scripted, f"model={run / 'final'}", "agent.answer_tokens=16") == 0
    out = capsys.readouterr().out
    assert f"agent settings of the run the model comes from ({run / 'config.json'}): " in out
    assert "prompt_version=micro" in out and "chunk_tokens=24" in out and "memory_tokens=32" in out
    assert "(prompts micro, answers lenient)" in out
    chunks = chunk_text(tokenizer, TEXT, 24)
    q = "Where was Curie born?"
    assert scripted.calls[0] == [prompts.update_messages(q, prompts.NO_MEMORY, chunks[0], "micro")]
    assert len(scripted.calls) == len(chunks) + 1

    scripted.calls.clear()  # a setting given on the command line wins over the run's
    assert _run(tmp_path, scripted, f"model={run / 'final'}", "agent.prompt_version=v1",
                "agent.answer_tokens=16") == 0
    assert "(prompts v1, answers lenient)" in capsys.readouterr().out
    assert scripted.calls[0] == [prompts.update_messages(q, prompts.NO_MEMORY, chunks[0], "v1")]


@pytest.mark.parametrize(("agent", "train", "data"), [("cpu", "cpu_memtrain", "cpu"),
                                                      ("micro", "micro_memtrain", "micro"),
                                                      ("paper", "paper_memtrain_qwen3_4b", "paper")])
def test_agent_presets_are_the_train_presets_agents(agent, train, data):
    from memtrain.recipes.build_tasks import BuildConfig
    from memtrain.rl.config import TrainConfig

    a = load_config(AgentRunConfig, "agent", agent, ["doc=d.txt", "question=q"]).agent
    t = load_config(TrainConfig, "train", train).agent
    d = load_config(BuildConfig, "data", data)
    for k in ("memory_tokens", "answer_tokens", "prompt_version", "answer_mode"):
        assert getattr(a, k) == getattr(t, k), k
    assert a.chunk_tokens == d.e2e.chunk_tokens
