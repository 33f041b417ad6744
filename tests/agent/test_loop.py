"""The memory loop: step structure, memory budget and overwrite, batching faithfulness, traces, errors."""

from __future__ import annotations

import json

import pytest

from memtrain import prompts
from memtrain.agent.engine import Completion, HFEngine, Sampling
from memtrain.agent.loop import AgentConfig, cut_memory, make_task, open_trace, run_memory_agent
from memtrain.errors import MemtrainError
from memtrain.scoring import score_all

SENTENCES = [
    "The river Orne flows through Caen before reaching the English Channel.",
    "Marie Curie was born in Warsaw in 1867 and later moved to Paris.",
    "The violinist practised scales every morning in the small blue kitchen.",
    "In 1905 the railway reached the village, and the old ferry closed within a year.",
    "Lighthouses on the northern coast were automated during the 1980s.",
]


def doc(n_sentences: int, offset: int = 0) -> str:
    return " ".join(SENTENCES[(i + offset) % len(SENTENCES)] for i in range(n_sentences))


class EchoEngine:
    """Deterministic fake: the k-th call answers ``memory-k`` for every row (k counts engine calls)."""

    def __init__(self, tokenizer, answer: str = "I do not know", n_tokens: int | None = None):
        self.tokenizer = tokenizer
        self.calls: list[list[list[dict[str, str]]]] = []
        self.answer = answer
        self.n_tokens = n_tokens

    def generate(self, conversations, sampling):
        self.calls.append(list(conversations))
        k = len(self.calls)
        out = []
        for conv in conversations:
            final = "Updated memory:" not in conv[-1]["content"]
            text = self.answer if final else f"memory-{k}"
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if self.n_tokens is not None and not final:  # an engine that ignores the budget
                ids = (ids * self.n_tokens)[: self.n_tokens]
                text = self.tokenizer.decode(ids)
            out.append(Completion(text=text, prompt_ids=[1, 2], completion_ids=ids, finish_reason="stop"))
        return out


@pytest.fixture(scope="module")
def engine(tiny):
    model, tok = tiny
    return HFEngine(model, tok, batch_size=4)


CFG = AgentConfig(chunk_tokens=24, memory_tokens=12, answer_tokens=8)


def test_turns_are_chunks_plus_one_and_memory_respects_budget(engine):
    task = make_task(doc(6), "Where was Marie Curie born?", engine.tokenizer, CFG)
    assert len(task.chunks) >= 3
    (traj,) = run_memory_agent(engine, [task], CFG, Sampling(), progress=False)
    assert len(traj.turns) == len(task.chunks) + 1
    assert [t.kind for t in traj.turns] == ["update"] * len(task.chunks) + ["final"]
    assert [t.step for t in traj.turns] == list(range(len(task.chunks) + 1))
    assert len(traj.memories) == len(task.chunks) + 1 and traj.memories[0] == prompts.NO_MEMORY
    for t in traj.turns[:-1]:
        assert len(t.completion.completion_ids) <= CFG.memory_tokens
        assert t.completion.prompt_ids  # the trainer needs the exact prompt ids
    assert len(traj.turns[-1].completion.completion_ids) <= CFG.answer_tokens
    assert traj.response == traj.turns[-1].completion.text


def test_cut_memory_enforces_budget_when_engine_overshoots(tokenizer):
    fake = EchoEngine(tokenizer, n_tokens=40)
    task = make_task(doc(4), "q?", tokenizer, CFG)
    (traj,) = run_memory_agent(fake, [task], CFG, Sampling(), progress=False)
    for t, mem in zip(traj.turns[:-1], traj.memories[1:], strict=True):
        assert len(t.completion.completion_ids) == 40
        assert len(tokenizer.encode(mem, add_special_tokens=False)) <= CFG.memory_tokens + 1
        assert mem == cut_memory(fake, t.completion, CFG.memory_tokens) != t.completion.text
    short = Completion(text="short", prompt_ids=[], completion_ids=[1, 2], finish_reason="stop")
    assert cut_memory(fake, short, CFG.memory_tokens) == "short"


def test_memory_is_overwritten_not_accumulated(tokenizer):
    fake = EchoEngine(tokenizer)
    task = make_task(doc(8), "q?", tokenizer, CFG)
    n = len(task.chunks)
    assert n >= 4
    (traj,) = run_memory_agent(fake, [task], CFG, Sampling(), progress=False)
    assert traj.memories[1:] == [f"memory-{k}" for k in range(1, n + 1)]
    for t, turn in enumerate(traj.turns):
        content = turn.messages[-1]["content"]
        assert len(turn.messages) == 1 and turn.messages[0]["role"] == "user"  # independent conversations
        if t == 0:
            assert prompts.NO_MEMORY in content
        else:
            assert f"memory-{t}\n" in content  # m_{t-1} (memories are 1-based: call k wrote memory-k)
            assert f"memory-{t - 1}\n" not in content and prompts.NO_MEMORY not in content
        if turn.kind == "update":
            assert task.chunks[t] in content
    assert traj.answer is None


def test_batched_equals_sequential_greedy(engine):
    tasks = [
        make_task(doc(n, off), f"Question {i}?", engine.tokenizer, CFG, task_id=f"d{i}")
        for i, (n, off) in enumerate([(2, 0), (5, 1), (3, 2), (7, 3), (1, 4)])
    ]
    assert len({len(t.chunks) for t in tasks}) >= 3  # different lengths: rows drop out at different steps
    batched = run_memory_agent(engine, tasks, CFG, Sampling(), progress=False)
    for task, b in zip(tasks, batched, strict=True):
        (s,) = run_memory_agent(engine, [task], CFG, Sampling(), progress=False)
        assert b.task_id == s.task_id == task.id
        assert b.memories == s.memories
        assert b.response == s.response
        assert [t.completion.completion_ids for t in b.turns] == [
            t.completion.completion_ids for t in s.turns
        ]


def test_max_chunks_limits_reading(tokenizer):
    fake = EchoEngine(tokenizer)
    cfg = AgentConfig(chunk_tokens=24, memory_tokens=12, answer_tokens=8, max_chunks=2)
    task = make_task(doc(8), "q?", tokenizer, cfg)
    assert len(task.chunks) > 2
    (traj,) = run_memory_agent(fake, [task], cfg, Sampling(), progress=False)
    assert [t.kind for t in traj.turns] == ["update", "update", "final"]
    assert len(fake.calls) == 3


def test_trace_rows(tokenizer, tmp_path):
    fake = EchoEngine(tokenizer, answer="It is \\boxed{Warsaw}.")
    tasks = [make_task(doc(n), "Where?", tokenizer, CFG, task_id=f"t{n}") for n in (2, 6)]
    path = tmp_path / "sub" / "trace.jsonl"
    f = open_trace(path)
    trajs = run_memory_agent(fake, tasks, CFG, Sampling(), trace=f, progress=False)
    f.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == sum(len(t.turns) for t in trajs)
    for traj in trajs:
        mine = [r for r in rows if r["task_id"] == traj.task_id]
        assert [r["kind"] for r in mine] == [t.kind for t in traj.turns]
        assert [r["memory"] for r in mine if r["kind"] == "update"] == traj.memories[1:]
        assert mine[-1]["memory"] is None and mine[-1]["response"] == "It is \\boxed{Warsaw}."
        assert all(r["prompt_tokens"] == 2 and r["finish_reason"] == "stop" for r in mine)
    assert [t.answer for t in trajs] == ["Warsaw", "Warsaw"]
    assert open_trace(None) is None


def test_empty_document_and_question_are_errors(tokenizer):
    with pytest.raises(MemtrainError, match="empty"):
        make_task("  \n\t ", "q?", tokenizer, CFG, task_id="blank.txt")
    with pytest.raises(MemtrainError, match="question"):
        make_task("some text", "   ", tokenizer, CFG)
    with pytest.raises(MemtrainError, match="memory_tokens"):
        AgentConfig(memory_tokens=0).validate()


def test_no_boxed_answer_scores_zero(engine, tokenizer):
    fake = EchoEngine(tokenizer, answer="The answer is Warsaw, I think.")
    (traj,) = run_memory_agent(
        fake, [make_task(doc(3), "Where?", tokenizer, CFG)], CFG, Sampling(), progress=False
    )
    assert traj.answer is None
    scores = score_all(traj.response, ["Warsaw"])
    assert scores == {"boxed": 0.0, "accuracy": 0.0, "strict_em": 0.0, "em": 0.0, "f1": 0.0, "sub_em": 0.0}
    # the random tiny model never writes \boxed{}: same outcome through a real engine
    (real,) = run_memory_agent(
        engine, [make_task(doc(2), "Where?", tokenizer, CFG)], CFG, Sampling(), progress=False
    )
    assert real.answer is None and score_all(real.response, ["Warsaw"])["em"] == 0.0


def test_empty_task_list_returns_nothing(tokenizer):
    assert run_memory_agent(EchoEngine(tokenizer), [], CFG, Sampling(), progress=False) == []


def test_turn_batcher_coalesces_concurrent_trajectories(tokenizer):
    """Documents of different lengths: each engine call holds one step of every live trajectory (updates and
    finals of that step go in separate calls: different budgets), never fewer rows than are waiting."""
    fake = EchoEngine(tokenizer)
    tasks = [make_task(doc(n), f"q{n}?", tokenizer, CFG, task_id=f"t{n}") for n in (2, 2, 5)]
    lengths = [len(t.chunks) for t in tasks]
    assert lengths[0] < lengths[2]
    run_memory_agent(fake, tasks, CFG, Sampling(), progress=False)
    # step t: the updates of every task with > t chunks in one call, plus one call for the finals due then
    expected = []
    for t in range(max(lengths) + 1):
        updates = sum(n > t for n in lengths)
        finals = sum(n == t for n in lengths)
        expected += [x for x in (updates, finals) if x]
    assert sorted(len(c) for c in fake.calls) == sorted(expected)  # in a step, finals may come first


def test_multi_conversation_call_is_one_wait_and_errors_reach_every_trajectory(tokenizer):
    import asyncio

    from memtrain.agent.loop import run_sessions

    fake = EchoEngine(tokenizer)

    async def session(gen, n):  # one call of n conversations, then one of 1
        first = await gen.complete([[{"role": "user", "content": f"a{i}"}] for i in range(n)], Sampling())
        second = await gen.complete([[{"role": "user", "content": "b"}]], Sampling())
        return len(first), len(second)

    assert run_sessions(fake, [lambda g: session(g, 4), lambda g: session(g, 1)], progress=False) == [(4, 1),
                                                                                                       (1, 1)]
    assert [len(c) for c in fake.calls] == [5, 2]  # 4 + 1 coalesced, then 1 + 1

    class Broken(EchoEngine):
        def generate(self, conversations, sampling):
            raise RuntimeError("engine down")

    with pytest.raises(RuntimeError, match="engine down"):
        run_sessions(Broken(tokenizer), [lambda g: session(g, 2), lambda g: session(g, 1)], progress=False)

    async def inside_a_running_loop():  # e.g. a notebook: runs on a helper thread instead of failing
        return run_sessions(fake, [lambda g: session(g, 1)], progress=False)

    assert asyncio.run(inside_a_running_loop()) == [(1, 1)]


def test_per_conversation_seeds_follow_the_trajectory_not_the_batch(tokenizer):
    class SeedLog(EchoEngine):
        seeds: list = []

        def generate(self, conversations, sampling):
            self.seeds.extend(zip(conversations, sampling.seeds, strict=True))
            return super().generate(conversations, sampling)

    tasks = [make_task(doc(3, off), "q?", tokenizer, CFG, task_id=f"t{off}") for off in (0, 1)]
    alone, together = SeedLog(tokenizer), SeedLog(tokenizer)
    alone.seeds, together.seeds = [], []
    run_memory_agent(alone, tasks[:1], CFG, Sampling(seed=3), progress=False)
    run_memory_agent(together, [tasks[1], tasks[0], tasks[0]], CFG, Sampling(seed=3), progress=False)
    mine = [s for _, s in alone.seeds]
    assert len(set(mine)) == len(mine)  # steps differ
    first_copy = [s for s in (x for _, x in together.seeds) if s in set(mine)]
    assert first_copy == mine  # copy 0 of t0 draws the same seeds in any batch; copy 1 draws others
    assert len({s for _, s in together.seeds}) == len(together.seeds)
