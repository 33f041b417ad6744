"""The searching memory agent (MEM1 setting): turn format, turn limit, memory cut, emulated stop sequences,
malformed actions, retrieval formatting, the tiny model end to end, and training rows with broadcast
advantages."""

from __future__ import annotations

import re

import pytest

from memtrain import prompts
from memtrain.agent.engine import HFEngine, Sampling
from memtrain.agent.search import (
    SearchAgentConfig,
    cut_at_action,
    format_hits,
    information,
    parse_action,
    run_search_agent,
)
from memtrain.errors import MemtrainError
from memtrain.records import Completion, Hit, MemTask


class FakeSearcher:
    """Returns two fixed passages per query and records the queries."""

    def __init__(self):
        self.queries: list[str] = []

    def search(self, queries, topk=None):
        self.queries.extend(queries)
        return [[Hit.from_contents(f"p{i}", f'"Title {i}"\nText about {q} number {i}.', 1.0 / (i + 1))
                 for i in range(2)] for q in queries]


class ScriptEngine:
    """A fake engine: ``script(conv, turn)`` gives the response text; ids are its real tokens (+ EOS)."""

    def __init__(self, tokenizer, script):
        self.tokenizer = tokenizer
        self.script = script
        self.calls: list[list[list[dict[str, str]]]] = []

    def generate(self, conversations, sampling):
        self.calls.append(list(conversations))
        out = []
        for conv in conversations:
            turn = 0 if len(conv) == 1 else None
            text = self.script(conv, turn)
            ids = self.tokenizer.encode(text, add_special_tokens=False)[: sampling.max_new_tokens]
            out.append(Completion(text=self.tokenizer.decode(ids), prompt_ids=[1, 2],
                                  completion_ids=ids + [self.tokenizer.eos_token_id], finish_reason="stop"))
        return out


def task(i: int = 0, question: str = "Who wrote Hamlet?; Where is Paris?") -> MemTask:
    return MemTask(id=f"s{i}", kind="search", problem=question, chunks=[], answers=["Shakespeare; France"],
                   meta={"source": "hotpotqa", "objectives": [
                       {"qid": "a", "question": "Who wrote Hamlet?", "answers": ["William Shakespeare",
                                                                                  "Shakespeare"]},
                       {"qid": "b", "question": "Where is Paris?", "answers": ["France"]}]})


CFG = SearchAgentConfig(max_turns=3, response_tokens=64, memory_tokens=12, info_tokens=64)


def run(tokenizer, script, cfg=CFG, tasks=None, searcher=None):
    eng = ScriptEngine(tokenizer, script)
    searcher = searcher or FakeSearcher()
    trajs = run_search_agent(eng, searcher, tasks or [task()], cfg, Sampling(temperature=0.0), progress=False)
    return trajs, eng, searcher


# ------------------------------------------------------------------------------------------ parsing


def test_parse_actions():
    a = parse_action("<think>notes here</think><search>hamlet author</search>")
    assert (a.kind, a.memory, a.query, a.reason) == ("search", "notes here", "hamlet author", None)
    a = parse_action("<think>found</think><answer> Shakespeare; France </answer>")
    assert (a.kind, a.answer) == ("answer", "Shakespeare; France")
    assert parse_action("no tags at all").reason == "no_action"
    assert parse_action("<think>x</think><search>unclosed").reason == "no_action"
    assert parse_action("<search>   </search>").reason == "empty_query"
    assert parse_action("<search>a<search>b</search>").query == "b"  # the last opening tag's text
    assert parse_action("<search>first</search><search>second</search>").query == "first"
    assert parse_action("<answer>x</answer><search>q</search>").kind == "answer"  # first closed tag wins
    # no <think>: the text before the action is the memory, tags removed
    assert parse_action("plain notes <think>half <search>q</search>").memory == "plain notes half"


def test_cut_at_action_emulates_the_stop_sequence(tokenizer):
    text = "<think>m</think><search>the query</search><answer>never</answer> and more"
    ids = tokenizer.encode(text, add_special_tokens=False)
    comp, cut = cut_at_action(tokenizer, Completion(text, [1], ids, "length", logprobs=[-0.5] * len(ids)))
    assert cut and comp.finish_reason == "stop"
    assert comp.text == "<think>m</think><search>the query</search>"
    decoded = tokenizer.decode(comp.completion_ids)
    assert "</search>" in decoded and "<answer>" not in decoded
    assert "</search>" not in tokenizer.decode(comp.completion_ids[:-1])  # the shortest such prefix
    assert comp.logprobs == [-0.5] * len(comp.completion_ids)
    same, cut = cut_at_action(tokenizer, Completion("no tag", [1], [5, 6], "length"))
    assert not cut and same.completion_ids == [5, 6] and same.finish_reason == "length"


def test_information_block_format_and_cut(tokenizer):
    hits = [Hit.from_contents("a", '"Paris"\nParis is the capital of France.'),
            Hit.from_contents("b", '"Lyon"\nLyon is a city.')]
    assert format_hits(hits) == ('Doc 1(Title: "Paris") Paris is the capital of France.\n'
                                 'Doc 2(Title: "Lyon") Lyon is a city.\n')
    block = information(tokenizer, hits, 4, 1000)
    assert block.startswith("<information>[HINT]You have 4 turns left.[/HINT]\nDoc 1(Title: \"Paris\")")
    assert block.endswith("</information>")
    short = information(tokenizer, hits, 1, 5)
    assert "You must answer the question in the next turn" in short
    body = short.split("[/HINT]\n", 1)[1].removesuffix("</information>")
    assert len(tokenizer.encode(body, add_special_tokens=False)) <= 5


def test_config_is_validated():
    with pytest.raises(MemtrainError, match="max_turns"):
        SearchAgentConfig(max_turns=0).validate()
    with pytest.raises(MemtrainError, match="prompt version"):
        SearchAgentConfig(prompt_version="nope").validate()


# ------------------------------------------------------------------------------------------ episodes


def test_turn_format_search_then_answer(tokenizer):
    def script(conv, _):
        if len([m for m in conv if m["role"] == "user"]) == 1:
            return "<think>I need the author.</think><search>Hamlet author</search>"
        return "<think>Shakespeare wrote it.</think><answer>Shakespeare; France</answer>"

    (tr,), eng, searcher = run(tokenizer, script)
    assert [t.kind for t in tr.turns] == ["search", "answer"]
    assert tr.answer == "Shakespeare; France"
    assert searcher.queries == ["Hamlet author"]
    first, second = eng.calls[0][0], eng.calls[1][0]
    assert len(first) == 1 and "Who wrote Hamlet?; Where is Paris?" in first[0]["content"]
    # turn 2: the same instruction, the previous response as kept, the latest information, nothing older
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[0] == first[0]
    assert second[1]["content"] == "<think>I need the author.</think>\n<search>Hamlet author</search>"
    assert second[2]["content"].startswith("<information>[HINT]You have 2 turns left.[/HINT]\nDoc 1(Title: ")
    assert [s.action for s in tr.steps] == ["search", "answer"]
    assert [h.title for h in tr.steps[0].hits] == ["Title 0", "Title 1"]
    assert tr.memories == ["", "I need the author.", "Shakespeare wrote it."]


def test_turn_limit_counts_the_answer_turn(tokenizer):
    (tr,), eng, searcher = run(tokenizer, lambda conv, _: "<think>more</think><search>again</search>")
    assert len(tr.turns) == CFG.max_turns == len(eng.calls)
    assert [s.action for s in tr.steps] == ["search", "search", "invalid"]
    assert tr.steps[-1].reason == "turn_limit"
    assert len(searcher.queries) == CFG.max_turns - 1  # the last turn's search is not run
    assert tr.answer is None
    hints = [re.search(r"\[HINT\](.*?)\[/HINT\]", c[0][-1]["content"]).group(1) for c in eng.calls[1:]]
    last = "You have 1 turn left. You must answer the question in the next turn."
    assert hints == ["You have 2 turns left.", last]


def test_memory_is_cut_to_its_budget(tokenizer):
    long = " ".join(f"fact{i}" for i in range(15))  # > memory_tokens, < response_tokens
    (tr,), eng, _ = run(tokenizer, lambda conv, _: f"<think>{long}</think><search>q</search>")
    kept = tr.memories[1]
    assert len(tokenizer.encode(kept, add_special_tokens=False)) <= CFG.memory_tokens
    assert long.startswith(kept)
    assert eng.calls[1][0][1]["content"] == f"<think>{kept}</think>\n<search>q</search>"


def test_malformed_actions_end_or_retry(tokenizer):
    (tr,), eng, searcher = run(tokenizer, lambda conv, _: "I think the answer is Shakespeare.")
    assert [s.reason for s in tr.steps] == ["no_action"] and len(eng.calls) == 1 and tr.answer is None
    assert searcher.queries == []

    cfg = SearchAgentConfig(**{**CFG.__dict__, "on_invalid": "retry"})
    answers = iter(["no tag", "<search> </search>", "<answer>Shakespeare; France</answer>"])
    (tr,), eng, searcher = run(tokenizer, lambda conv, _: next(answers), cfg=cfg)
    assert [(s.action, s.reason) for s in tr.steps] == [("invalid", "no_action"), ("invalid", "empty_query"),
                                                        ("answer", None)]
    assert searcher.queries == []
    assert prompts.SEARCH_MEM1.invalid in eng.calls[1][0][-1]["content"]
    assert tr.answer == "Shakespeare; France"


def test_two_searches_run_only_the_first_and_are_cut(tokenizer):
    script = iter(["<search>one</search><search>two</search>", "<answer>x; y</answer>"])
    (tr,), _, searcher = run(tokenizer, lambda conv, _: next(script))
    assert searcher.queries == ["one"]
    assert tr.turns[0].completion.text == "<search>one</search>" and tr.steps[0].cut
    assert "two" not in tokenizer.decode(tr.turns[0].completion.completion_ids)


def test_micro_prompt_prepends_its_demonstration(tokenizer):
    cfg = SearchAgentConfig(**{**CFG.__dict__, "prompt_version": "micro"})
    (tr,), eng, _ = run(tokenizer, lambda conv, _: "<answer>a; b</answer>", cfg=cfg)
    conv = eng.calls[0][0]
    assert len(conv) == len(prompts.SEARCH_MICRO.demo) + 1
    assert conv[1]["role"] == "assistant" and "<search>capital of France</search>" in conv[1]["content"]


def test_tiny_model_end_to_end(tiny):
    """The real HF engine over the tiny random model: episodes finish within the limits, never crash."""
    model, tok = tiny
    eng = HFEngine(model, tok, batch_size=8)
    cfg = SearchAgentConfig(max_turns=2, response_tokens=12, memory_tokens=6, info_tokens=20,
                            on_invalid="retry")
    tasks = [task(i) for i in range(3)]
    sampling = Sampling(temperature=1.0, seed=3)
    trajs = run_search_agent(eng, FakeSearcher(), tasks, cfg, sampling, progress=False)
    for tr in trajs:
        assert 1 <= len(tr.turns) <= 2
        assert all(len(t.completion.completion_ids) <= 12 for t in tr.turns)
        assert all(s.action in ("search", "answer", "invalid") for s in tr.steps)
        assert len(tr.memories) == len(tr.turns) + 1
    again = run_search_agent(eng, FakeSearcher(), tasks, cfg, sampling, progress=False)
    assert [t.response for t in again] == [t.response for t in trajs]  # seeded: reproducible


# ------------------------------------------------------------------------------------------ training rows


def test_rollout_rewards_and_broadcast_advantages(tokenizer):
    from memtrain.rl.config import RolloutConfig
    from memtrain.rl.rows import build_rows
    from memtrain.rl.search_rollout import collect

    calls = {"n": 0}

    def script(conv, _):  # copies alternate: a right two-part answer after one search, or a wrong one
        if len(conv) == 1:
            calls["n"] += 1
            return "<think>look</think><search>hamlet</search>"
        good = "Shakespeare; France" if calls["n"] % 2 else "Marlowe; France"
        calls["n"] += 1
        return f"<think>done</think><answer>{good}</answer>"

    eng = ScriptEngine(tokenizer, script)
    cfg = RolloutConfig(g1=2, g2=1, imr=False, temperature=1.0)
    r = collect(eng, FakeSearcher(), [task(0)], CFG, cfg, seed=1)
    assert sorted(r.rewards) == [1.0, 2.0]  # per-objective EM summed (MEM1): one of two right, or both
    assert r.metrics["search/answered"] == 1.0 and r.metrics["search/turns"] == 2.0
    rows, stats = build_rows(r, "none", dapo_filter=True)
    assert len(rows) == 4 and {row.kind for row in rows} == {"search", "answer"}
    by_traj = [rows[:2], rows[2:]]
    for traj_rows, reward in zip(by_traj, r.rewards, strict=True):
        assert {row.advantage for row in traj_rows} == {reward - 1.5}  # one advantage, every turn
    # each row's completion ends at the action tag: what a stopping engine would have sampled
    assert all(tokenizer.decode(row.completion_ids).rstrip().endswith(("</search>", "</answer>"))
               for row in rows)
