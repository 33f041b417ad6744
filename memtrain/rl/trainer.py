"""The pieces of a GRPO update and of a training run's outputs; :mod:`memtrain.recipes.train` composes them.

- :func:`update`: ``ppo_epochs`` optimizer steps over a batch's rows, micro-batched with exact gradient
  accumulation; old log-probs are recomputed only when ``ppo_epochs > 1`` (with one epoch the old policy *is*
  the current one and ``logp.detach()`` equals them).
- Non-finite loss or gradient norm stops the run with a :class:`MemtrainError` naming the step, before
  the optimizer step and before any checkpoint, so the last good checkpoint stays the latest.
- :class:`MetricsLog`, :func:`sample_rows`, :func:`plot_rewards`, :func:`save_final`: what a run leaves.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memtrain.config import to_dict
from memtrain.errors import MemtrainError
from memtrain.io import read_jsonl_tolerant, write_jsonl
from memtrain.models import cpu_has_bf16
from memtrain.progress import progress_bar
from memtrain.records import Rollouts, Row
from memtrain.rl import checkpoint as ckpt
from memtrain.rl.config import TrainConfig
from memtrain.rl.loss import policy_loss, tis_weights
from memtrain.rl.reference import ReferencePolicy
from memtrain.rl.rows import collate, completion_logprobs, micro_batches

# ------------------------------------------------------------------------------------------- the update


def update(model: Any, reference: ReferencePolicy | None, rows: list[Row], optimizer: torch.optim.Optimizer,
           cfg: TrainConfig, step: int, pad_id: int, progress: bool = False) -> dict[str, float]:
    """PPO over one rollout batch: its documents cut into mini-batches of ``mini_batch_size``, one optimizer
    step each, ``ppo_epochs`` times; each step micro-batched with exact gradient accumulation.

    - Log-probs are those of the sampling policy: logits divided by ``rollout.temperature``.
    - Old log-probs are computed once, before the first step, whenever there is more than one step (with one
      step the old policy *is* the current one and ``logp.detach()`` equals them). The reference's too.
    - Every micro-batch loss is normalised by its **mini-batch's** conversation (or token) count, so the
      accumulated gradient equals the mini-batch gradient whatever ``micro_batch_size`` is.
    - Logged: the ratio's mean, the clip fraction and veRL's ``ppo_kl`` (mean old − new log-prob).
    """
    zero = {"loss/total": 0.0, "loss/pg": 0.0, "loss/kl": 0.0, "loss/clip_frac": 0.0,
            "loss/ratio_mean": 1.0, "loss/ppo_kl": 0.0, "grad/norm": 0.0, "update/tokens": 0.0,
            "update/tokens_per_s": 0.0, "update/optimizer_steps": 0.0, "update/skipped": 1.0}
    if not rows:
        return zero
    device = next(model.parameters()).device
    lc, temp = cfg.loss, cfg.rollout.temperature
    per_step = cfg.mini_batch_size or cfg.batch_size
    groups = [[r for r in rows if d <= r.doc < d + per_step] for d in range(0, cfg.batch_size, per_step)]
    groups = [g for g in groups if g]
    prepared = [[collate(mb, pad_id, device) for mb in micro_batches(g, cfg.micro_batch_size)]
                for g in groups]
    n_steps = len(groups) * cfg.ppo_epochs
    start = time.perf_counter()

    with torch.no_grad(), autocast(cfg, model):
        ref_logps = [[reference.logprobs(b, temp) for b in bs] for bs in prepared] if reference else None
        old_logps = [[completion_logprobs(model, b, temp) for b in bs] for bs in prepared] if n_steps > 1 \
            else None

    params = [p for p in model.parameters() if p.requires_grad]
    tot = {"loss/total": 0.0, "loss/pg": 0.0, "loss/kl": 0.0, "clip": 0.0, "ratio": 0.0, "ppo_kl": 0.0}
    grad_norm = torch.zeros(())
    bar = progress_bar(total=cfg.ppo_epochs * sum(map(len, prepared)), desc="update", unit="micro-batch",
                       leave=False, disable=not progress)
    for _epoch in range(cfg.ppo_epochs):
        for g, (group, batches) in enumerate(zip(groups, prepared, strict=True)):
            n_norm = float(len(group)) if lc.agg == "seq-mean-token-mean" else \
                float(sum(len(r.completion_ids) for r in group))
            optimizer.zero_grad(set_to_none=True)
            for i, b in enumerate(batches):
                bar.update(1)
                with autocast(cfg, model):
                    logp = completion_logprobs(model, b, temp)
                old = old_logps[g][i] if old_logps else logp.detach()
                ref = ref_logps[g][i] if ref_logps else None
                tis = lc.tis_cap is not None and b.sampler_logp is not None
                w = tis_weights(old, b.sampler_logp, lc.tis_cap) if tis else None  # type: ignore[arg-type]
                out = policy_loss(logp, old, b.advantages, b.mask, ref, lc.eps_low, lc.eps_high, lc.kl_coef,
                                  lc.agg, n_norm, is_weights=w)
                if not torch.isfinite(out.loss):
                    raise non_finite(cfg, step, "loss", float(out.loss.detach()))
                out.loss.backward()
                diff = (logp.detach() - old) * b.mask
                tot["loss/total"] += float(out.loss.detach()) / n_steps
                tot["loss/pg"] += float(out.pg_loss) / n_steps
                tot["loss/kl"] += float(out.kl) / n_steps
                tot["clip"] += float(out.clip_frac) * b.n_tokens
                tot["ratio"] += float((torch.exp(diff) * b.mask).sum())
                tot["ppo_kl"] += float(-diff.sum())
            max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if not torch.isfinite(grad_norm):
                raise non_finite(cfg, step, "gradient norm", float(grad_norm))
            optimizer.step()
    bar.close()
    seconds = time.perf_counter() - start
    n_tokens = sum(b.n_tokens for bs in prepared for b in bs)
    seen = max(n_tokens * cfg.ppo_epochs, 1)
    return {"loss/total": tot["loss/total"], "loss/pg": tot["loss/pg"], "loss/kl": tot["loss/kl"],
            "loss/clip_frac": tot["clip"] / seen, "loss/ratio_mean": tot["ratio"] / seen,
            "loss/ppo_kl": tot["ppo_kl"] / seen, "grad/norm": float(grad_norm),
            "update/tokens": float(n_tokens),
            "update/tokens_per_s": n_tokens * cfg.ppo_epochs / max(seconds, 1e-9),
            "update/optimizer_steps": float(n_steps), "update/skipped": 0.0}


def non_finite(cfg: TrainConfig, step: int, what: str, value: float) -> MemtrainError:
    last = ckpt.latest_checkpoint(cfg.out_dir)
    kept = f"the last good checkpoint {last} is intact" if last else "no checkpoint was written yet"
    return MemtrainError(f"step {step}: non-finite {what} ({value}); stopped without updating or saving — "
                         f"{kept}. Lower optim.lr or optim.grad_clip, or set bf16: false; re-run to resume.")


# ------------------------------------------------------------------------------------------- set-up


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def step_seed(seed: int, step: int) -> int:
    """The sampling/IMR seed of one step: a function of (seed, step) only, so resumes replay it exactly."""
    return seed * 1_000_003 + step


def warmup(steps: int):
    """Linear warm-up from lr/steps to lr over ``steps`` scheduler steps, then constant."""
    return lambda s: min(1.0, (s + 1) / steps) if steps > 0 else 1.0


def bf16_compute(cfg: TrainConfig, model: Any) -> bool:
    """Whether forward passes run in bf16 autocast: ``cfg.bf16`` on any GPU and on CPUs with AVX512-BF16 or
    AMX. Other CPUs emulate bf16 matmuls (a plain loop in backward, many times slower than fp32), so they
    compute in fp32."""
    device = next(model.parameters()).device.type
    return cfg.bf16 and (device != "cpu" or cpu_has_bf16())


def autocast(cfg: TrainConfig, model: Any) -> AbstractContextManager:
    if not bf16_compute(cfg, model):
        return nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)


def load_policy(cfg: TrainConfig) -> tuple[Any, Any]:
    """The trainable policy (full weights or LoRA-wrapped) and its tokenizer."""
    from memtrain.models import enable_checkpointing, load_model

    model, tok = load_model(cfg.model.init_from or cfg.model.name, dtype=cfg.model.dtype)
    if cfg.model.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lc = cfg.model.lora
        lora = LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                          target_modules=list(lc.target_modules), task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
        if cfg.model.lora.enabled:
            model.enable_input_require_grads()
    return model, tok


def check_update_precision(model: Any, lr: float) -> None:
    """Refuse trainable low-precision weights that an AdamW step of ``lr`` cannot move.

    Adam's step is about ``lr`` per weight; a bf16 weight w changes only if the step exceeds half its ulp,
    ``|w|·2^-8``. Below that, updates round away and training silently does nothing. fp32 master weights
    (``model.dtype=fp32``, the default; bf16 compute comes from autocast) never hit this.
    """
    low = [p for p in model.parameters() if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16)]
    if not low:
        return
    dtype = low[0].dtype
    mags = torch.cat([p.detach().abs().flatten()[:: max(1, p.numel() // 4096)].float() for p in low])
    median = float(mags[mags > 0].median()) if bool((mags > 0).any()) else 0.0
    half_ulp = median * torch.finfo(dtype).eps / 2
    if lr < half_ulp:
        raise MemtrainError(
            f"model.dtype gives {str(dtype).removeprefix('torch.')} trainable weights; an AdamW step of "
            f"optim.lr={lr:g} is below half their ulp at the median |w|={median:.3g} ({half_ulp:.2g}), so "
            "updates would round away. Use model.dtype=fp32 (fp32 master weights; bf16 compute via autocast)"
        )


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


# ------------------------------------------------------------------------------------------- outputs


class MetricsLog:
    """metrics.jsonl, samples.jsonl, TensorBoard (+ wandb); on resume, rows past the checkpoint go."""

    def __init__(self, out: Path, cfg: TrainConfig, resume_step: int = 0):
        self.path = out / "metrics.jsonl"
        self.f = self._reopen(self.path, resume_step)
        self.samples = self._reopen(out / "samples.jsonl", resume_step)
        self.held_out = self._reopen(out / "held_out.jsonl", resume_step)
        self.tb = None
        if cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"), purge_step=resume_step + 1 if resume_step else None)
        self.wandb = None
        if cfg.log.wandb:
            try:
                import wandb
            except ImportError:
                msg = "log.wandb: true needs `pip install wandb` (or set log.wandb: false)"
                raise MemtrainError(msg) from None
            self.wandb = wandb.init(project=cfg.log.wandb_project, config=to_dict(cfg), dir=str(out),
                                    resume="allow", id=out.resolve().name)

    @staticmethod
    def _reopen(path: Path, resume_step: int) -> Any:
        write_jsonl(path, [r for r in read_jsonl_tolerant(path) if r.get("step", 0) <= resume_step])
        return open(path, "a", encoding="utf-8")

    def write_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        """What the policy wrote this step (samples.jsonl)."""
        self._rows(self.samples, step, rows)

    def write_held_out(self, step: int, rows: list[dict[str, Any]]) -> None:
        """The held-out evaluation's per-task rows (held_out.jsonl): answers, IMR probes, rewards."""
        self._rows(self.held_out, step, rows)

    @staticmethod
    def _rows(f: Any, step: int, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            f.write(json.dumps({"step": step, **row}, ensure_ascii=False) + "\n")
        f.flush()

    def write(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.f.write(json.dumps(row, sort_keys=True) + "\n")
        self.f.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def close(self) -> None:
        self.f.close()
        self.samples.close()
        self.held_out.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def sample_rows(r: Rollouts, max_chars: int = 600) -> list[dict[str, Any]]:
    """The first trajectory of every document of a step, as text: what the policy actually wrote.

    Rewards alone cannot tell a policy that answers wrongly from one that writes no answer at all; these rows
    (samples.jsonl) can. Long texts are cut to ``max_chars``.
    """
    rows, seen = [], set()
    for i, d in enumerate(r.doc_of):
        if d in seen:
            continue
        seen.add(d)
        task, traj, q = r.tasks[d], r.trajectories[i], r.imr[i]
        row = {"task": task.id, "problem": task.problem[:max_chars], "gold": task.answers[:3],
               "response": traj.response[:max_chars], "last_memory": traj.memories[-1][:max_chars],
               "answer_reward": r.answer_rewards[i], "reward": r.rewards[i]}
        if q is not None:
            row["imr"] = {"question": q.messages[-1]["content"][-max_chars:], "gold": q.candidate.answer,
                          "responses": [c.text[:max_chars] for c in q.completions], "rewards": q.rewards}
        rows.append(row)
    return rows


def plot_rewards(metrics_path: Path, png: Path) -> None:
    """Training reward components and held-out eval rewards against step (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl_tolerant(metrics_path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))

    def curves(prefix: str) -> list[tuple[str, str]]:  # the reward keys a run logged, named for the reward
        keys = sorted({k for r in rows for k in r if k.startswith(prefix)})
        return [(k, k.split("/", 1)[1]) for k in keys if "no_boxed" not in k]

    for key, label in curves("reward/"):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            axes[0].plot(*zip(*pts, strict=True), marker=".", label=label)
    for key, label in curves("eval/"):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            axes[1].plot(*zip(*pts, strict=True), marker="o", label=label)
    axes[0].set_title("training rollouts (sampled)")
    axes[1].set_title("held-out (greedy)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_ylabel("reward")
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def save_final(model: Any, tok: Any, path: Path) -> Path:
    """HF-format model + tokenizer, loadable by ``memtrain.models.load_model(path)`` (LoRA merged in);
    refused before writing when the disk has no room for it."""
    if ckpt.is_peft(model):
        model = model.merge_and_unload()
    off = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
    off()  # a no-op when it was off; the saved model should generate with its KV cache
    ckpt.ensure_space(path.parent, ckpt.weights_bytes(model), f"the final model ({path})")
    tmp = path.with_name(f".tmp-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path
