"""The trainer is correct on every engine: independent samples per group, updates that move fp32 master
weights, exact resumes, PPO mini-batches whose ratio leaves 1, log-probs of the sampling policy, and a
policy that actually learns a learnable reward."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import torch
from helpers import make_tasks, tiny_config

from memtrain.agent.engine import HFEngine, Sampling, render
from memtrain.agent.loop import AgentConfig
from memtrain.config import from_dict
from memtrain.errors import MemtrainError
from memtrain.recipes import train as train_recipe
from memtrain.records import Completion, Row
from memtrain.rl import checkpoint as ckpt
from memtrain.rl import rewards, trainer
from memtrain.rl.config import RolloutConfig, TrainConfig
from memtrain.rl.rollout import collect
from memtrain.rl.rows import build_rows, collate, completion_logprobs


class SeededEngine:
    """Output depends on (prompt, seed) only, as vLLM's does: one seed for identical prompts = one text."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def generate(self, conversations, sampling):
        out = []
        for i, conv in enumerate(conversations):
            rng = random.Random(f"{conv[-1]['content']}|{sampling.per(i).seed}")
            words = ["alpha", "beta", "gamma", "delta"]
            text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            out.append(Completion(text, render(self.tokenizer, conv), ids, "stop"))
        return out

    def sync_weights(self, model):
        pass


def test_every_conversation_of_a_group_gets_its_own_seed(tokenizer, parity_reward):
    engine = SeededEngine(tokenizer)
    agent = AgentConfig(chunk_tokens=64, memory_tokens=8, answer_tokens=8)
    cfg = RolloutConfig(g1=4, g2=4, temperature=1.0)
    r = collect(engine, make_tasks(2), agent, cfg, seed=11)
    for d in range(2):  # the G1 copies of each document wrote different memories
        firsts = {tr.memories[1] for tr, doc in zip(r.trajectories, r.doc_of, strict=True) if doc == d}
        assert len(firsts) > 1
    assert all(len({c.text for c in q.completions}) > 1 for q in r.imr if q)  # G2 answers differ too
    rows, stats = build_rows(r)
    assert rows and stats["groups/e2e_dropped"] < stats["groups/e2e"]  # something to learn from
    again = collect(engine, make_tasks(2), agent, cfg, seed=11)  # and the run stays reproducible
    assert [t.response for t in again.trajectories] == [t.response for t in r.trajectories]


def test_lr_1e6_update_moves_fp32_master_weights_and_bf16_is_refused(tiny, tmp_path):
    model, tok = tiny
    cfg = from_dict(TrainConfig, tiny_config(tmp_path, **{"loss.kl_coef": 0.0, "optim.lr": 1e-6}))
    m = copy.deepcopy(model).train()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.AdamW(m.parameters(), lr=1e-6)
    rows = [Row([5, 6, 7], [100, 200], 1.0, "final"), Row([5, 6, 7], [300], -1.0, "final")]
    trainer.update(m, None, rows, opt, cfg, step=1, pad_id=tok.pad_token_id)
    changed = sum(int((p.detach() != before[n]).sum()) for n, p in m.named_parameters())
    touched = sum(int((p.grad != 0).sum()) for p in m.parameters() if p.grad is not None)
    assert changed >= 0.99 * touched > 0  # every weight with a gradient moved: nothing rounded away
    with pytest.raises(MemtrainError, match="below half their ulp"):
        trainer.check_update_precision(copy.deepcopy(model).to(torch.bfloat16), 1e-6)
    trainer.check_update_precision(model, 1e-6)  # fp32: fine


class RecordingEngine(HFEngine):
    """An engine that holds its own copy of the weights (like vLLM) and records what it sampled from."""

    def __init__(self, model, tok, events):
        super().__init__(copy.deepcopy(model), tok, batch_size=16)
        self.events = events

    def sync_weights(self, model):
        self.model.load_state_dict(model.state_dict())
        self.events.append(("sync", _digest(self.model)))

    def generate(self, conversations, sampling):
        self.events.append(("generate", _digest(self.model)))
        return super().generate(conversations, sampling)


def _digest(model) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def test_resume_syncs_the_engine_before_the_first_rollout(tmp_path, parity_reward, monkeypatch):
    events: list[tuple[str, float]] = []
    monkeypatch.setattr(train_recipe, "build_engine", lambda cfg, name, policy=None, tokenizer=None:
                        RecordingEngine(policy, tokenizer, events))
    cfg = from_dict(TrainConfig, tiny_config(tmp_path, steps=1, save_every=1))
    train_recipe.train(cfg)
    initial = trainer.load_policy(cfg)[0]
    trained = copy.deepcopy(initial)
    ckpt.load_weights(trained, Path(cfg.out_dir) / "checkpoint-1")
    assert _digest(trained) != _digest(initial)
    events.clear()
    train_recipe.train(from_dict(TrainConfig, tiny_config(tmp_path, steps=2, save_every=1)))
    first_generate = next(i for i, e in enumerate(events) if e[0] == "generate")
    assert events[0][0] == "sync" and first_generate > 0  # synced before anything was sampled
    assert events[first_generate][1] == _digest(trained)  # the resumed run sampled from the restored policy


def test_ppo_mini_batches_take_several_steps_and_the_ratio_leaves_one(tiny, tmp_path):
    model, tok = tiny
    over = {"loss.kl_coef": 0.0, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 2,
            "loss.eps_low": 0.05, "loss.eps_high": 0.05, "optim.grad_clip": 0.0}
    cfg = from_dict(TrainConfig, tiny_config(tmp_path, **over))
    g = torch.Generator().manual_seed(0)
    rows = [Row(torch.randint(5, 900, (6,), generator=g).tolist(), torch.randint(5, 900, (4,), generator=g)
                .tolist(), 1.0 if i % 2 else -1.0, "final", doc=i % 4) for i in range(8)]
    m = copy.deepcopy(model).train()
    opt = torch.optim.SGD(m.parameters(), lr=50.0)
    out = trainer.update(m, None, rows, opt, cfg, step=1, pad_id=tok.pad_token_id)
    assert out["update/optimizer_steps"] == 4  # 4 documents / 2 per mini-batch x 2 epochs
    assert out["loss/clip_frac"] > 0 and out["loss/ratio_mean"] != pytest.approx(1.0, abs=1e-4)
    assert out["loss/ppo_kl"] != 0.0
    one = from_dict(TrainConfig, tiny_config(tmp_path, **{**over, "mini_batch_size": None, "ppo_epochs": 1}))
    m1 = copy.deepcopy(model).train()
    single = trainer.update(m1, None, rows, torch.optim.SGD(m1.parameters(), lr=50.0), one, step=1,
                            pad_id=tok.pad_token_id)
    assert single["update/optimizer_steps"] == 1 and single["loss/clip_frac"] == 0.0  # on-policy: ratio 1
    assert single["loss/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(MemtrainError, match="must divide batch_size"):
        from_dict(TrainConfig, tiny_config(tmp_path, **{**over, "mini_batch_size": 3}))


def test_trainer_log_probs_are_the_samplers(tiny):
    """At the sampling temperature, the trainer scores exactly what the sampler drew the tokens from."""
    model, tok = tiny
    engine = HFEngine(model, tok, batch_size=4, logprobs=True)
    convs = [[{"role": "user", "content": q}] for q in ("Where is Lyon?", "a longer prompt about x")]
    comps = engine.generate(convs, Sampling(max_new_tokens=6, temperature=0.7, seed=3))
    batch = collate([Row(c.prompt_ids, c.completion_ids, 0.0, "final") for c in comps], tok.pad_token_id)
    with torch.no_grad():
        ours = completion_logprobs(model, batch, temperature=0.7)
        untempered = completion_logprobs(model, batch)
    for i, c in enumerate(comps):
        a = len(c.prompt_ids) - batch.start
        got = ours[i, a : a + len(c.completion_ids)]
        assert torch.allclose(got, torch.tensor(c.logprobs), atol=1e-4)
        assert not torch.allclose(untempered[i, a : a + len(c.completion_ids)], torch.tensor(c.logprobs),
                                  atol=1e-3)  # temperature 1 would score another policy


def test_first_step_kl_is_zero_and_reference_stays_frozen(tmp_path, parity_reward):
    cfg = from_dict(TrainConfig, tiny_config(tmp_path, steps=2, **{"loss.kl_coef": 0.1}))
    train_recipe.train(cfg)
    rows = [json.loads(x) for x in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in rows if r["step"] > 0}
    assert steps[1]["loss/kl"] == pytest.approx(0.0, abs=1e-7)  # policy == reference before any update
    assert steps[2]["loss/kl"] > 0  # after one update the (frozen) reference differs


def test_dapo_normalises_by_the_kept_conversations(tiny, tmp_path):
    """Dropping a flat group removes its conversations from the normaliser: the kept rows' gradient is
    n_all / n_kept times the gradient of the same batch with the flat group kept at advantage 0."""
    from memtrain.records import MemTask, Rollouts, Trajectory, Turn

    model, tok = tiny

    def traj(tag):
        c = Completion("x", [5, tag], [tag + 1, tag + 2], "stop")
        return Trajectory("d", "p", [Turn("final", 0, [], c, 0.0)], ["m", "m"], "x", None)

    task = MemTask("f", "e2e", "p", ["a"], ["y"], [[]])
    r = Rollouts([task, task], 2, [traj(10), traj(20), traj(30), traj(40)], [0, 0, 1, 1], [0, 0, 1, 0],
                 [None] * 4, [0.0, 0.0, 1.0, 0.0], {})
    kept, stats = build_rows(r, dapo_filter=True)
    every, _ = build_rows(r, dapo_filter=False)
    assert [row.prompt_ids[1] for row in kept] == [30, 40] and stats["groups/e2e_dropped"] == 1
    assert len(every) == 4 and [row.advantage for row in every[:2]] == [0.0, 0.0]
    cfg = from_dict(TrainConfig, tiny_config(tmp_path, **{"loss.kl_coef": 0.0, "optim.grad_clip": 0.0}))
    grads = []
    for rows in (kept, every):
        m = copy.deepcopy(model).train()
        trainer.update(m, None, rows, torch.optim.SGD(m.parameters(), lr=0.0), cfg, 1, tok.pad_token_id)
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1] * 4 / 2, atol=1e-7, rtol=1e-5)


def test_warmup_counts_optimizer_updates_not_emptied_batches(tmp_path, monkeypatch, capsys):
    """A batch DAPO empties entirely does not advance the LR warm-up, and a run that never updated says
    so instead of a plain "done"."""
    monkeypatch.setattr(rewards, "answer_reward", lambda *_: 0.0)  # every group flat
    monkeypatch.setattr(rewards, "imr_reward", lambda *_: 0.0)
    cfg = from_dict(TrainConfig, tiny_config(tmp_path, steps=2, **{"loss.dapo_filter": True,
                                                                   "optim.warmup_steps": 4}))
    train_recipe.train(cfg)
    rows = [json.loads(x) for x in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r["step"] > 0]
    assert all(r["update/skipped"] == 1.0 for r in rows if r["step"] > 0)
    assert lrs == [cfg.optim.lr / 4] * 2  # still at the first warm-up value
    assert "WITHOUT updating the model" in capsys.readouterr().out


def test_the_trainer_learns_a_learnable_reward(tmp_path, monkeypatch):
    """A few steps of the full recipe on the tiny model raise a reward the policy can learn (the first
    letter of its answer in a-m). Fails if the advantage sign, the loss or the update is broken."""
    from memtrain import models

    real = models.tiny_model

    def peaked(*a, **k):  # a sharper output distribution, so a handful of first tokens compete
        m, t = real(*a, **k)
        with torch.no_grad():
            m.lm_head.weight.mul_(8.0)
        return m, t

    monkeypatch.setattr(models, "tiny_model", peaked)
    monkeypatch.setattr(rewards, "answer_reward",
                        lambda text, *_: float(bool(text) and text[0].lower() in "abcdefghijklm"))
    over = {"rollout.imr": False, "rollout.g1": 8, "agent.answer_tokens": 3, "agent.memory_tokens": 3,
            "optim.lr": 5e-2, "loss.kl_coef": 0.0, "save_every": 0, "log.tensorboard": False, "eval_docs": 1,
            "seed": 0}
    cfg = from_dict(TrainConfig, tiny_config(tmp_path, steps=10, **over))
    train_recipe.train(cfg)
    rows = [json.loads(x) for x in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines()]
    reward = [r["reward/e2e_strict_em"] for r in rows if r["step"] > 0]
    assert sum(reward[-3:]) / 3 > sum(reward[:3]) / 3 + 0.2, reward


@pytest.mark.parametrize("native", [False, True])
def test_bf16_autocast_only_where_the_cpu_computes_bf16(tiny, monkeypatch, native):
    """bf16 autocast on a CPU without AVX512-BF16/AMX runs backward matmuls through torch's emulation loop
    (measured 23x slower than fp32 on the AVX2 box): there the trainer must compute in fp32."""
    model, _ = tiny
    monkeypatch.setattr(trainer, "cpu_has_bf16", lambda: native)
    cfg = TrainConfig()
    assert cfg.bf16
    x = torch.randn(2, 4)
    with trainer.autocast(cfg, model):
        y = torch.nn.functional.linear(x, torch.randn(3, 4))
    assert y.dtype == (torch.bfloat16 if native else torch.float32)
    cfg.bf16 = False
    with trainer.autocast(cfg, model):
        assert torch.nn.functional.linear(x, torch.randn(3, 4)).dtype == torch.float32
