import copy
import json

import pytest
import torch
from helpers import tiny_config, write_config

from memtrain.cli import main
from memtrain.config import from_dict, load_config, preset_names
from memtrain.errors import MemtrainError
from memtrain.recipes.train import train
from memtrain.records import Row
from memtrain.rl import checkpoint as ckpt
from memtrain.rl import trainer
from memtrain.rl.config import TrainConfig
from memtrain.rl.reference import ReferencePolicy


def _rows(n: int = 6) -> list[Row]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        p = torch.randint(5, 1000, (3 + 2 * i,), generator=g).tolist()
        c = torch.randint(5, 1000, (1 + (i * 3) % 5,), generator=g).tolist()
        rows.append(Row(p, c, advantage=float(i % 3) - 1.0, kind="update"))
    return rows


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean"])
def test_gradient_accumulation_equals_full_batch(tiny, tmp_path, agg):
    model, tok = tiny
    grads = []
    ref = copy.deepcopy(model).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a reference that differs from the policy, so the KL term has a gradient
        for p in ref.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    for mbs in (1, 6):
        cfg = from_dict(TrainConfig, tiny_config(tmp_path, micro_batch_size=mbs, **{"loss.agg": agg}))
        m = copy.deepcopy(model).train()
        opt = torch.optim.SGD(m.parameters(), lr=0.0)
        cfg.optim.grad_clip = 0.0
        trainer.update(m, ReferencePolicy(ref), _rows(), opt, cfg, step=1, pad_id=tok.pad_token_id)
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for name, g in grads[0].items():
        # fp32 summation order differs between micro-batchings: equal up to rounding (~1e-6 here)
        assert (g - grads[1][name]).abs().max() <= 5e-6, name
        assert (g - grads[1][name]).norm() <= 1e-5 * g.norm() + 1e-9, name
    assert any(g.abs().sum() > 0 for g in grads[0].values())


def _params(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_resume_gives_identical_continuation(tmp_path, parity_reward, monkeypatch):
    full = from_dict(TrainConfig, tiny_config(tmp_path / "a"))
    train(full)

    cfg = from_dict(TrainConfig, tiny_config(tmp_path / "b"))
    real_save = ckpt.save_checkpoint

    def save_then_die(out, step, *a, **k):
        path = real_save(out, step, *a, **k)
        if step == 1:
            raise KeyboardInterrupt  # "kill" right after the first checkpoint
        return path

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    assert ckpt.latest_checkpoint(cfg.out_dir).name == "checkpoint-1"
    train(cfg)  # resumes from checkpoint-1 and runs steps 2 and 3

    a, b = _params(tmp_path / "a" / "run" / "final"), _params(tmp_path / "b" / "run" / "final")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    first = _params(tmp_path / "a" / "run" / "checkpoint-1")
    assert any(not torch.equal(first[k], a[k]) for k in a)  # training actually moved the weights
    lines = (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines]
    assert steps == [0, 1, 2, 3]  # no duplicated rows after the resume
    samples = [json.loads(x) for x in (tmp_path / "b" / "run" / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in samples] == sorted(r["step"] for r in samples)  # no duplicated steps either
    assert {r["step"] for r in samples} == {1, 2, 3}
    per_step = len(samples) // 3
    assert per_step == full.batch_size and len(samples) == 3 * per_step  # one row per document
    # the parity stand-in reward of what the policy wrote, as logged
    assert all(r["gold"] and r["answer_reward"] == float(len(r["response"]) % 2 == 0) for r in samples)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path, parity_reward, monkeypatch):
    cfg = from_dict(TrainConfig, tiny_config(tmp_path))
    poisoned = {"on": False}
    real_loss, real_save = trainer.policy_loss, ckpt.save_checkpoint

    def loss(*a, **k):
        out = real_loss(*a, **k)
        if poisoned["on"]:
            out.loss = out.loss * float("nan")
        return out

    def save(out, step, *a, **k):
        path = real_save(out, step, *a, **k)
        poisoned["on"] = True  # every step after the first checkpoint produces a NaN loss
        return path

    monkeypatch.setattr(trainer, "policy_loss", loss)
    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    before = None
    with pytest.raises(MemtrainError, match=r"step 2: non-finite loss") as e:
        train(cfg)
    assert "checkpoint-1" in str(e.value)
    last = ckpt.latest_checkpoint(cfg.out_dir)
    assert last.name == "checkpoint-1"
    state = torch.load(last / ckpt.STATE_FILE, weights_only=False)
    assert state["step"] == 1
    before = _params(last)
    assert all(torch.isfinite(t).all() for t in before.values())


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(MemtrainError, match=r"TrainConfig\.rollout: unknown field 'g3'"):
        from_dict(TrainConfig, tiny_config(tmp_path, **{"rollout.g3": 4}))
    with pytest.raises(MemtrainError, match=r"TrainConfig\.steps: expected int"):
        from_dict(TrainConfig, tiny_config(tmp_path, steps="ten"))
    with pytest.raises(MemtrainError, match=r"TrainConfig\.loss\.agg: must be one of"):
        from_dict(TrainConfig, tiny_config(tmp_path, **{"loss.agg": "sum"}))
    with pytest.raises(MemtrainError, match=r"expected KEY=VALUE"):
        load_config(TrainConfig, "train", str(write_config(tmp_path)), ["rollout.g1"])
    cfg = load_config(TrainConfig, "train", str(write_config(tmp_path)),
                      ["rollout.g1=5", "loss.kl_coef=0", "steps=9", "optim.lr=1e-5"])
    assert cfg.rollout.g1 == 5 and cfg.loss.kl_coef == 0.0 and cfg.steps == 9 and cfg.optim.lr == 1e-5


def test_packaged_presets_are_valid_and_paper_values_pinned():
    names = preset_names("train")
    wanted = {"cpu_memtrain", "cpu_task_hotpotqa", "paper_memtrain_qwen3_4b", "paper_memtrain_qwen25_7b"}
    assert wanted <= set(names)
    for name in names:
        cfg = load_config(TrainConfig, "train", name)
        assert cfg.agent.chunk_tokens is None and cfg.agent.max_chunks is None  # from the task set
        assert cfg.model.dtype == "fp32"  # fp32 master weights: a bf16 AdamW step of 1e-6 rounds away
    for name in ("paper_memtrain_qwen3_4b", "paper_memtrain_qwen25_7b"):
        c = load_config(TrainConfig, "train", name)
        assert (c.rollout.g1, c.rollout.g2, c.rollout.lambda_imr, c.rollout.imr) == (8, 8, 0.5, True)
        assert (c.optim.lr, c.loss.kl_coef, c.batch_size, c.steps) == (1e-6, 1e-3, 32, 300)
        assert (c.loss.eps_low, c.loss.eps_high, c.loss.adv_scale, c.loss.agg) == (
            0.2, 0.28, "none", "seq-mean-token-mean")
        assert (c.agent.memory_tokens, c.engine.kind, c.rollout.reward) == (1024, "vllm", "strict_em")
        assert (c.agent.prompt_version, c.agent.answer_mode) == ("paper", "boxed")
    for name in ("paper_task_hotpotqa_qwen3_4b", "paper_task_hotpotqa_qwen25_7b"):  # MemAgent's recipe
        c = load_config(TrainConfig, "train", name)
        got = (c.batch_size, c.mini_batch_size, c.steps, c.optim.lr, c.rollout.imr)
        assert got == (32, 8, 500, 1e-6, False)


def test_cli_train_runs_one_step(tmp_path, parity_reward):
    path = write_config(tmp_path, **{"loss.kl_coef": 0.0})
    assert main(["train", str(path), "steps=1", f"out_dir={tmp_path / 'cli'}"]) == 0
    out = tmp_path / "cli"
    assert (out / "checkpoint-1" / ckpt.STATE_FILE).is_file()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1 and "reward/coupled" in rows[-1] and "loss/clip_frac" in rows[-1]
    assert (out / "rewards.png").stat().st_size > 0 and any((out / "tb").iterdir())
    from memtrain.models import load_model

    model, _ = load_model(str(out / "final"))
    assert sum(p.numel() for p in model.parameters()) > 0
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2  # a user mistake: message, no traceback


class _Payload:
    """Unpickling this runs a command (what a crafted checkpoint would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path, tiny):
    model = copy.deepcopy(tiny[0])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    saved = ckpt.save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {"sampler_position": 2})
    state = ckpt.load_checkpoint(saved, model, optimizer, scheduler)  # memtrain's own: tensors and lists
    assert state["step"] == 1 and state["sampler_position"] == 2

    marker = tmp_path / "pwned"
    torch.save({"step": 1, "evil": _Payload(marker)}, saved / ckpt.STATE_FILE)
    with pytest.raises(MemtrainError, match="refusing to load"):
        ckpt.load_checkpoint(saved, model, optimizer, scheduler)
    assert not marker.exists()  # the payload never ran
