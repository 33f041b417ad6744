import random

from memtrain.agent.engine import HFEngine
from memtrain.agent.loop import AgentConfig
from memtrain.prompts import TARGET
from memtrain.records import ImrCandidate, MemTask
from memtrain.rl.config import RolloutConfig
from memtrain.rl.rollout import collect
from memtrain.tasks.imr import pick_probe, probe_rng


def _mems(n_read: int) -> list[str]:
    return [f"m{k}" for k in range(n_read + 1)]


def test_choose_imr_picks_earlier_chunk_and_masks_target(tiny_tasks):
    task = tiny_tasks[0]
    seen = set()
    for s in range(50):
        q = pick_probe(task, _mems(3), random.Random(s))
        assert q is not None
        assert 1 <= q.l < q.k <= 3  # c_l was read before m_k was written
        assert q.l in (1, 2)  # chunk 3 has no candidate
        body = q.messages[-1]["content"]
        assert f"m{q.k}" in body and TARGET in body
        assert q.candidate.answer not in body.split("<section>")[1]  # masked everywhere in the chunk
        seen.add((q.k, q.l))
    assert seen == {(2, 1), (3, 1), (3, 2)}


def test_choose_imr_none_when_impossible():
    imr = [[], [ImrCandidate("Rhone", ["Rhone"])]]
    task = MemTask("a", "e2e", "p", ["Lyon is here.", "Rhone."], ["x"], imr)
    assert pick_probe(task, _mems(1), random.Random(0)) is None  # T = 1
    assert pick_probe(task, _mems(2), random.Random(0)) is None  # only c_2 has a candidate, no k > 2
    # a candidate that does not occur in its chunk cannot be masked, so it is not usable
    ghost = MemTask("b", "e2e", "p", ["nothing", "x"], ["x"], [[ImrCandidate("Lyon", ["Lyon"])], []])
    assert pick_probe(ghost, _mems(2), random.Random(0)) is None


def test_collect_shapes_and_coupled_reward(tiny, tiny_tasks, parity_reward):
    model, tok = tiny
    engine = HFEngine(model, tok, batch_size=16)
    agent = AgentConfig(chunk_tokens=64, memory_tokens=5, answer_tokens=4, max_chunks=3)
    cfg = RolloutConfig(g1=3, g2=2, lambda_imr=0.5)
    r = collect(engine, tiny_tasks[:2], agent, cfg, seed=1)
    assert len(r.trajectories) == 6 and r.doc_of == [0, 0, 0, 1, 1, 1]
    assert all(len(tr.turns) == 4 for tr in r.trajectories)  # 3 updates + final
    assert all(q is not None and len(q.completions) == 2 for q in r.imr)
    for a, q, R in zip(r.answer_rewards, r.imr, r.rewards, strict=True):
        assert abs(R - (a + 0.5 / 2 * sum(q.rewards))) < 1e-9
    assert r.metrics["imr/asked"] == 6 and r.metrics["imr/missing"] == 0
    every = [t.completion for tr in r.trajectories for t in tr.turns]
    every += [c for q in r.imr for c in q.completions]
    assert r.metrics["truncated/all"] == sum(c.finish_reason == "length" for c in every) / len(every)
    # same seed -> same samples (resumable rollouts)
    r2 = collect(engine, tiny_tasks[:2], agent, cfg, seed=1)
    assert [t.response for t in r.trajectories] == [t.response for t in r2.trajectories]
    # IMR disabled -> no IMR prompts and R^E = E2E reward
    no_imr = RolloutConfig(g1=2, g2=2, imr=False)
    r3 = collect(engine, tiny_tasks[:1], agent, no_imr, seed=1)
    assert r3.imr == [None, None] and r3.rewards == r3.answer_rewards


def test_probe_depends_only_on_seed_task_and_copy(tiny_tasks):
    """The draw is a function of (seed, task id, trajectory copy), not of the batch it sits in."""
    a, b = tiny_tasks[0], tiny_tasks[1]
    p1 = pick_probe(a, _mems(3), probe_rng(5, a.id, 0))
    p2 = pick_probe(a, _mems(3), probe_rng(5, a.id, 0))
    assert (p1.k, p1.l, p1.candidate) == (p2.k, p2.l, p2.candidate)
    draws = {(q.k, q.l) for q in (pick_probe(b, _mems(3), probe_rng(s, b.id, g)) for s in range(20)
                                  for g in range(2))}
    assert len(draws) > 1  # the seed and copy index do move the draw
