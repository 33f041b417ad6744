"""What a training run tells its user: the disk it will use before writing (and a refusal when it cannot
fit), how many groups DAPO dropped when no optimizer step was made, and the held-out reward before → after
on its last line."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from memtrain.config import from_dict
from memtrain.errors import MemtrainError
from memtrain.recipes import train as train_recipe
from memtrain.rl import checkpoint as ckpt
from memtrain.rl import rewards
from memtrain.rl.config import TrainConfig

SIZE = r"([0-9.]+) (GB|MB|kB|B)"
UNIT = {"GB": 1e9, "MB": 1e6, "kB": 1e3, "B": 1}


def _bytes(number: str, unit: str) -> float:
    return float(number) * UNIT[unit]


def _folder_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def test_a_run_that_made_no_update_says_why_and_what_it_wrote(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rewards, "answer_reward", lambda *_: 0.0)  # every group flat: DAPO drops them all
    monkeypatch.setattr(rewards, "imr_reward", lambda *_: 0.0)
    cfg = from_dict(TrainConfig, tiny_config(tmp_path, steps=1, keep_checkpoints=0,
                                             **{"loss.dapo_filter": True, "log.tensorboard": False}))
    train_recipe.train(cfg)
    lines = [x.removeprefix("memtrain train: ") for x in capsys.readouterr().out.splitlines()]
    out = Path(cfg.out_dir)

    # announced before the first write, and close to what was written
    disk = next(i for i, x in enumerate(lines) if x.startswith("disk: "))
    assert disk < next(i for i, x in enumerate(lines) if x.startswith("held-out evaluation"))
    m = re.search(rf"1 checkpoint\(s\) of {SIZE} .*final model \({SIZE}\): up to {SIZE}; {SIZE} free in",
                  lines[disk])
    assert m, lines[disk]
    each, final = _bytes(*m.group(1, 2)), _bytes(*m.group(3, 4))
    # no step made AdamW's moments, so this checkpoint holds the weights alone: the estimate is the bound
    weights = _bytes(*re.search(rf"\(weights {SIZE} \+", lines[disk]).group(1, 2))
    assert weights == pytest.approx(_folder_bytes(out / "checkpoint-1"), rel=0.05) and each > weights
    assert final == pytest.approx((out / "final" / "model.safetensors").stat().st_size, rel=0.05)

    # the last line: DAPO's drops over the run and the held-out reward before -> after
    last = lines[-1]
    assert last.startswith("done; held-out reward ")
    assert "no optimizer step: DAPO dropped 2 of 2 E2E group(s) and 4 of 4 IMR group(s) over 1 step(s)" \
        in last
    evals = {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if "eval/coupled" in r}
    before, after = evals[0]["eval/coupled"], evals[1]["eval/coupled"]
    assert f"held-out reward {before:.3f} → {after:.3f} from step 0 to 1 on 2 tasks (e2e_strict_em " in last
    assert f"final model in {out / 'final'}" in last


def test_a_run_that_cannot_fit_on_disk_is_refused_before_any_rollout(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "free_bytes", lambda folder: 20_000_000)  # 20 MB free
    monkeypatch.setattr(train_recipe, "collect", lambda *a, **k: pytest.fail("rolled out on a full disk"))
    monkeypatch.setattr(train_recipe, "evaluate_held_out", lambda *a, **k: pytest.fail("evaluated"))
    cfg = from_dict(TrainConfig, tiny_config(tmp_path, steps=4, save_every=1, keep_checkpoints=0))
    refused = (r"this run \(4 checkpoint\(s\) \+ the final model\) needs about [0-9.]+ MB on disk, "
               r"but .* has only 20.0 MB free.*keep_checkpoints=1")
    with pytest.raises(MemtrainError, match=refused):
        train_recipe.train(cfg)
    assert not list(Path(cfg.out_dir).glob("*checkpoint*")) and not (Path(cfg.out_dir) / "final").exists()


def test_a_checkpoint_without_room_is_refused_before_writing(tmp_path, tiny, monkeypatch):
    model = copy.deepcopy(tiny[0])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    assert sum(ckpt.checkpoint_bytes(model, optimizer)) > 2.9 * ckpt.weights_bytes(model)  # moments ahead
    model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()
    ckpt.save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {})
    weights, opt = ckpt.checkpoint_bytes(model, optimizer)
    assert weights + opt == pytest.approx(_folder_bytes(tmp_path / "checkpoint-1"), rel=0.05)
    monkeypatch.setattr(ckpt, "free_bytes", lambda folder: weights)  # room for the weights, not the rest
    with pytest.raises(MemtrainError, match=r"checkpoint-2 needs about .* the last good checkpoint "
                                            r".*checkpoint-1 is intact"):
        ckpt.save_checkpoint(tmp_path, 2, model, optimizer, scheduler, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1"]  # no half-written temp folder
