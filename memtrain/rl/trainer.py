"""The MemTrain GRPO recipe (DESIGN §3), readable top to bottom like the paper's method section.

    for step in 1..steps:
        documents   <- the step's batch (seeded, resumable)
        rollouts    <- G1 memory-agent trajectories per document + G2 answers per IMR prompt
        rewards     <- R^E (E2E EM + λ·mean IMR EM) per trajectory, R^I per IMR answer
        advantages  <- Dr. GRPO per group, broadcast to every conversation; DAPO drops flat groups
        rows        <- one (prompt, completion, advantage) per conversation
        update      <- clipped-ratio loss + k3 KL, per-conversation mean, micro-batched, AdamW
        log, checkpoint, held-out eval

Choices made here on purpose:
- Rollouts run on the **same model object** through :class:`~memtrain.agent.engine.HFEngine` (eval mode,
  no grad), so on CPU there is no weight sync; with ``rollout.engine: vllm`` weights are pushed into the
  vLLM engine after every update.
- Old log-probs: with ``ppo_epochs == 1`` the batch is used for exactly one optimizer step, so the old
  policy *is* the current one and ``logp.detach()`` equals the recomputed old log-probs; we skip that extra
  forward pass. With ``ppo_epochs > 1`` old log-probs are recomputed once per batch, before any update.
- Reference: a frozen copy of the initial policy (or, with LoRA, the same model with adapters disabled);
  ``loss.kl_coef: 0`` loads none.
- A batch whose groups are all dropped by DAPO skips the optimizer step (the step still counts), rather
  than sampling more documents, so every step costs one batch of rollouts.
- Non-finite loss or gradient norm stops the run with a :class:`MemtrainError` naming the step, before
  the optimizer step and before any checkpoint, so the last good checkpoint stays the latest.
"""

from __future__ import annotations

import copy
import dataclasses
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

from memtrain.agent.engine import HFEngine
from memtrain.config import to_dict
from memtrain.errors import MemtrainError
from memtrain.io import read_jsonl_tolerant, write_json, write_jsonl
from memtrain.progress import progress_bar
from memtrain.records import MemTask
from memtrain.rl import checkpoint as ckpt
from memtrain.rl.config import TrainConfig
from memtrain.rl.data import DocSampler, load_data
from memtrain.rl.loss import policy_loss
from memtrain.rl.rollout import Rollouts, collect
from memtrain.rl.rows import Row, build_rows, collate, completion_logprobs, micro_batches

# ------------------------------------------------------------------------------------------- the recipe


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns ``out_dir/final``."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)

    # model, tokenizer, frozen reference, data, optimizer
    model, tok = load_policy(cfg)
    reference = make_reference(cfg, model)
    train_tasks, held_out = load_data(cfg, tok)
    sampler = DocSampler(len(train_tasks), cfg.batch_size, cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),  # type: ignore[arg-type]
                                  weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup(cfg.optim.warmup_steps))

    # resume from the latest complete checkpoint, if any
    start = 0
    last = ckpt.latest_checkpoint(out)
    if last is not None:
        state = ckpt.load_checkpoint(last, model, optimizer, scheduler)
        start = int(state["step"])
        if state.get("sampler_position") != sampler.position(start):
            raise MemtrainError(f"{last}: saved at data position {state.get('sampler_position')}, but this "
                                f"config gives {sampler.position(start)}; resume with the same batch_size")
        print(f"memtrain train: resuming from {last} (step {start})")
    write_json(out / "config.json", to_dict(cfg))
    engine = make_engine(cfg, model, tok)
    log = MetricsLog(out, cfg, resume_step=start)

    if start == 0 and held_out:
        log.write(0, {f"eval/{k}": v for k, v in evaluate_held_out(engine, held_out, cfg, model).items()})
    bar = progress_bar(range(start + 1, cfg.steps + 1), desc="train", unit="step",
                       disable=not cfg.log.progress, initial=start, total=cfg.steps)
    for step in bar:
        t0 = time.perf_counter()
        batch = [train_tasks[i] for i in sampler.indices(step)]

        # rollouts (policy in eval mode, no grad) -> rewards -> advantages -> rows
        model.eval()
        with autocast(cfg, model):
            seed = step_seed(cfg.seed, step)
            rollouts = collect(engine, batch, cfg.agent, cfg.rollout, rng=random.Random(seed), seed=seed)
        lc = cfg.loss
        rows, row_stats = build_rows(rollouts, lc.adv_scale, lc.dapo_filter, lc.mask_truncated)
        t1 = time.perf_counter()

        # policy update
        model.train()
        upd = update(model, reference, rows, optimizer, cfg, step, tok.pad_token_id)
        if not upd["update/skipped"]:  # warm-up counts optimizer updates, not batches DAPO emptied
            scheduler.step()
        sync_engine(engine, model)
        t2 = time.perf_counter()

        metrics = {**rollouts.metrics, **row_stats, **upd, "lr": scheduler.get_last_lr()[0],
                   "time/rollout_s": t1 - t0, "time/update_s": t2 - t1, "time/step_s": t2 - t0,
                   "mem/peak_rss_gib": peak_rss_gib()}
        if held_out and (step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0)):
            ev = evaluate_held_out(engine, held_out, cfg, model)
            metrics.update({f"eval/{k}": v for k, v in ev.items()})
        log.write(step, metrics)
        log.write_samples(step, sample_rows(rollouts))
        bar.set_postfix(reward=f"{metrics['reward/coupled']:.3f}", kl=f"{metrics['loss/kl']:.2e}",
                        clip=f"{metrics['loss/clip_frac']:.3f}",
                        tok_s=f"{metrics['update/tokens_per_s']:.0f}")
        if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps:
            ckpt.save_checkpoint(out, step, model, optimizer, scheduler,
                                 {"sampler_position": sampler.position(step)}, keep=cfg.keep_checkpoints)
    bar.close()
    log.close()
    plot_rewards(out / "metrics.jsonl", out / "rewards.png")
    return save_final(model, tok, out / "final")


# ------------------------------------------------------------------------------------------- the update


def update(model: Any, reference: Any, rows: list[Row], optimizer: torch.optim.Optimizer, cfg: TrainConfig,
           step: int, pad_id: int) -> dict[str, float]:
    """``ppo_epochs`` optimizer steps on ``rows``, micro-batched with exact gradient accumulation.

    Every micro-batch loss is normalised by the **whole batch's** conversation (or token) count, so the
    accumulated gradient equals the full-batch gradient whatever ``micro_batch_size`` is.
    """
    zero = {"loss/total": 0.0, "loss/pg": 0.0, "loss/kl": 0.0, "loss/clip_frac": 0.0, "grad/norm": 0.0,
            "update/tokens": 0.0, "update/tokens_per_s": 0.0, "update/skipped": 1.0}
    if not rows:
        return zero
    device = next(model.parameters()).device
    lc = cfg.loss
    n_tok = sum(len(r.completion_ids) for r in rows)
    n_norm = float(len(rows)) if lc.agg == "conversation_mean" else float(n_tok)
    batches = [collate(mb, pad_id, device) for mb in micro_batches(rows, cfg.micro_batch_size)]
    start = time.perf_counter()

    with torch.no_grad(), autocast(cfg, model):
        ref_logps = [reference_logprobs(model, reference, b) for b in batches] if lc.kl_coef > 0 else None
        old_logps = [completion_logprobs(model, b) for b in batches] if cfg.ppo_epochs > 1 else None

    params = [p for p in model.parameters() if p.requires_grad]
    tot = {"loss/total": 0.0, "loss/pg": 0.0, "loss/kl": 0.0, "clip_tokens": 0.0}
    grad_norm = torch.zeros(())
    for _epoch in range(cfg.ppo_epochs):
        optimizer.zero_grad(set_to_none=True)
        for i, b in enumerate(batches):
            with autocast(cfg, model):
                logp = completion_logprobs(model, b)
            old = old_logps[i] if old_logps else logp.detach()
            ref = ref_logps[i] if ref_logps else None
            out = policy_loss(logp, old, b.advantages, b.mask, ref, lc.eps_low, lc.eps_high, lc.kl_coef,
                              lc.agg, n_norm)
            if not torch.isfinite(out.loss):
                raise non_finite(cfg, step, "loss", float(out.loss.detach()))
            out.loss.backward()
            tot["loss/total"] += float(out.loss.detach())
            tot["loss/pg"] += float(out.pg_loss)
            tot["loss/kl"] += float(out.kl)
            tot["clip_tokens"] += float(out.clip_frac) * b.n_tokens
        max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if not torch.isfinite(grad_norm):
            raise non_finite(cfg, step, "gradient norm", float(grad_norm))
        optimizer.step()
    seconds = time.perf_counter() - start
    n_tokens = sum(b.n_tokens for b in batches)
    e = cfg.ppo_epochs
    return {"loss/total": tot["loss/total"] / e, "loss/pg": tot["loss/pg"] / e, "loss/kl": tot["loss/kl"] / e,
            "loss/clip_frac": tot["clip_tokens"] / max(n_tokens * e, 1), "grad/norm": float(grad_norm),
            "update/tokens": float(n_tokens), "update/tokens_per_s": n_tokens * e / max(seconds, 1e-9),
            "update/skipped": 0.0}


def reference_logprobs(model: Any, reference: Any, batch: Any) -> torch.Tensor:
    """Log-probs under the frozen reference: a separate model, or the LoRA model with adapters disabled."""
    if reference == "disable_adapter":
        with model.disable_adapter():
            return completion_logprobs(model, batch)
    return completion_logprobs(reference, batch)


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


def autocast(cfg: TrainConfig, model: Any) -> AbstractContextManager:
    if not cfg.bf16:
        return nullcontext()
    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16)


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


def make_reference(cfg: TrainConfig, model: Any) -> Any:
    """None when ``kl_coef == 0``; the LoRA base via adapter disabling; else a frozen copy of the policy."""
    if cfg.loss.kl_coef == 0:
        return None
    if cfg.model.lora.enabled:
        return "disable_adapter"
    ref = copy.deepcopy(model).eval()
    if cfg.gradient_checkpointing:
        (getattr(ref, "activation_checkpointing_disable", None) or ref.gradient_checkpointing_disable)()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def make_engine(cfg: TrainConfig, model: Any, tok: Any) -> Any:
    if cfg.rollout.engine == "hf":
        return HFEngine(model, tok, batch_size=cfg.rollout.engine_batch_size)
    from memtrain.agent.vllm_engine import VLLMEngine  # raises a MemtrainError when vllm is missing

    if cfg.model.lora.enabled:
        raise MemtrainError("rollout.engine: vllm with model.lora.enabled is not supported yet; "
                            "train full weights or use rollout.engine: hf")
    return VLLMEngine(cfg.model.init_from or cfg.model.name, tokenizer=tok,
                      gpu_memory_utilization=cfg.rollout.gpu_memory_utilization)


def sync_engine(engine: Any, model: Any) -> None:
    """Push updated weights into an engine that holds its own copy (vLLM); HFEngine shares the model."""
    if isinstance(engine, HFEngine):
        return
    engine.load_weights((n, p.detach()) for n, p in model.state_dict().items())


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


# ------------------------------------------------------------------------------------------- eval


def evaluate_held_out(engine: Any, tasks: list[MemTask], cfg: TrainConfig, model: Any) -> dict[str, float]:
    """Greedy proxy rewards on held-out tasks: one trajectory and one IMR answer per task, fixed IMR picks."""
    model.eval()
    rc = dataclasses.replace(cfg.rollout, g1=1, g2=1, temperature=0.0)
    with autocast(cfg, model):
        r = collect(engine, tasks[: cfg.eval_docs], cfg.agent, rc, rng=random.Random(cfg.seed), seed=cfg.seed)
    keys = ("reward/e2e_em", "reward/imr_em", "reward/coupled", "reward/no_boxed_final",
            "reward/no_boxed_imr")
    return {k.split("/")[1]: r.metrics[k] for k in keys}


# ------------------------------------------------------------------------------------------- outputs


class MetricsLog:
    """metrics.jsonl, samples.jsonl, TensorBoard (+ wandb); on resume, rows past the checkpoint go."""

    def __init__(self, out: Path, cfg: TrainConfig, resume_step: int = 0):
        self.path = out / "metrics.jsonl"
        self.f = self._reopen(self.path, resume_step)
        self.samples = self._reopen(out / "samples.jsonl", resume_step)
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
        for row in rows:
            self.samples.write(json.dumps({"step": step, **row}, ensure_ascii=False) + "\n")
        self.samples.flush()

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
    curves = (("reward/coupled", "coupled R^E"), ("reward/e2e_em", "E2E EM"), ("reward/imr_em", "IMR EM"))
    for key, label in curves:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            axes[0].plot(*zip(*pts, strict=True), marker=".", label=label)
    for key, label in (("eval/coupled", "coupled"), ("eval/e2e_em", "E2E EM"), ("eval/imr_em", "IMR EM")):
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
    """HF-format model + tokenizer, loadable by ``memtrain.models.load_model(path)`` (LoRA merged in)."""
    if ckpt.is_peft(model):
        model = model.merge_and_unload()
    off = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
    off()  # a no-op when it was off; the saved model should generate with its KV cache
    tmp = path.with_name(f".tmp-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path
