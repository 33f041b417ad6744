"""``memtrain train``: the MemTrain GRPO recipe (DESIGN §3), top to bottom like the paper's method section.

    set-up      policy, tokenizer, task sets (manifest checked), frozen reference, optimizer, engine
    resume      the latest complete checkpoint, then the engine is synced from the restored policy
    for step in 1..steps:
        documents   <- the step's batch (seeded, resumable)
        rollouts    <- G1 memory-agent trajectories per document + G2 answers per IMR prompt
        rewards     <- R^E (E2E answer + λ·mean IMR) per trajectory, R^I per IMR answer
        advantages  <- Dr. GRPO per group, broadcast to every conversation; DAPO drops flat groups
        rows        <- one (prompt, completion, advantage) per conversation
        update      <- clipped-ratio loss + k3 KL, per-conversation mean, micro-batched, AdamW
        sync        <- engine weights from the policy (a no-op when the engine runs on the policy)
        log, checkpoint, held-out proxy eval
    cleanup     reward plot, final HF-format model

The same recipe post-trains on downstream tasks: give it a long-QA task set (``memtrain data build``
with ``kind=longqa longqa.split=train``) and ``rollout.imr=false``; or a search-QA task set
(``kind=searchqa searchqa.split=train``): then the rollouts are the searching agent's episodes
(:mod:`memtrain.rl.search_rollout`, ``search.*`` budgets, the ``retriever`` backend), G1 per task, the
reward the mean per-objective match of the final answer, and the advantage broadcast to every turn (the
MEM1 recipe). A batch whose groups are all dropped by DAPO skips the optimizer step (the step still
counts), so every step costs one batch of rollouts.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from memtrain.agent.engines import build_engine
from memtrain.config import to_dict
from memtrain.errors import MemtrainError
from memtrain.io import write_json
from memtrain.progress import progress_bar
from memtrain.records import MemTask
from memtrain.rl import checkpoint as ckpt
from memtrain.rl.config import TrainConfig
from memtrain.rl.data import DocSampler, is_search, load_data
from memtrain.rl.reference import make_reference
from memtrain.rl.rollout import collect
from memtrain.rl.rows import build_rows
from memtrain.rl.trainer import (
    MetricsLog,
    autocast,
    bf16_compute,
    check_update_precision,
    load_policy,
    peak_rss_gib,
    plot_rewards,
    sample_rows,
    save_final,
    seed_everything,
    step_seed,
    update,
    warmup,
)

HELD_OUT_KEYS = ("reward/coupled", "score/e2e_strict_em", "score/imr_strict_em", "reward/no_boxed_final",
                 "reward/no_boxed_imr")


def say(msg: str) -> None:
    print(f"memtrain train: {msg}", flush=True)


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns ``out_dir/final``."""
    cfg.validate()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)

    # set-up: model, task sets (checked against the tokenizer and budgets), reference, optimizer, engine
    say(f"loading {cfg.model.init_from or cfg.model.name}")
    model, tok = load_policy(cfg)
    check_update_precision(model, cfg.optim.lr)
    if cfg.bf16 and not bf16_compute(cfg, model):
        say("bf16: this CPU has no native bf16 (AVX512-BF16/AMX); computing in fp32, which is faster here")
    train_tasks, held_out, agent = load_data(cfg, tok)
    cfg = dataclasses.replace(cfg, agent=agent)  # budgets adopted from the task set are part of the run
    searcher = None
    if is_search(train_tasks):
        from memtrain.search import make_search

        sc = cfg.search
        say(f"{len(train_tasks)} search-QA training tasks from {cfg.data.tasks_dir}, {len(held_out)} held "
            f"out; <= {sc.max_turns} turns, responses {sc.response_tokens} tokens, memory "
            f"{sc.memory_tokens}, retriever {cfg.retriever.kind} top-{cfg.retriever.topk}")
        searcher = make_search(cfg.retriever)
    else:
        say(f"{len(train_tasks)} training tasks from {cfg.data.tasks_dir}, {len(held_out)} held out; chunks "
            f"of {agent.chunk_tokens} tokens, memory {agent.memory_tokens}")
    reference = make_reference(model, cfg.loss.kl_coef, cfg.model.lora.enabled)
    sampler = DocSampler(len(train_tasks), cfg.batch_size, cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),  # type: ignore[arg-type]
                                  weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup(cfg.optim.warmup_steps))
    engine = build_engine(cfg.engine, cfg.model.init_from or cfg.model.name, policy=model, tokenizer=tok)

    # resume from the latest complete checkpoint, if any; the engine then samples from the restored policy
    start = 0
    last = ckpt.latest_checkpoint(out)
    if last is not None:
        state = ckpt.load_checkpoint(last, model, optimizer, scheduler)
        start = int(state["step"])
        if state.get("sampler_position") != sampler.position(start):
            raise MemtrainError(f"{last}: saved at data position {state.get('sampler_position')}, but this "
                                f"config gives {sampler.position(start)}; resume with the same batch_size")
        engine.sync_weights(model)
        say(f"resuming from {last} (step {start})")
    check_disk(out, model, optimizer, cfg, start)
    write_json(out / "config.json", to_dict(cfg))
    log = MetricsLog(out, cfg, resume_step=start)
    progress = cfg.log.progress

    def held_out_eval(step: int) -> dict[str, float]:
        say(f"held-out evaluation on {min(cfg.eval_docs, len(held_out))} tasks (step {step})")
        if searcher is not None:
            metrics, rows = evaluate_held_out_search(engine, searcher, model, held_out, cfg)
        else:
            metrics, rows = evaluate_held_out(engine, model, held_out, cfg)
        log.write_held_out(step, rows)
        return {f"eval/{k.split('/', 1)[1]}": v for k, v in metrics.items()}

    held_out = held_out if cfg.eval_docs > 0 else []  # eval_docs=0: no held-out evaluation
    if start == 0 and held_out:
        log.write(0, held_out_eval(0))
    bar = progress_bar(range(start + 1, cfg.steps + 1), desc="train", unit="step", disable=not progress,
                       initial=start, total=cfg.steps)
    updates = 0  # optimizer steps this invocation made
    groups = dict.fromkeys(("groups/e2e", "groups/e2e_dropped", "groups/imr", "groups/imr_dropped"), 0.0)
    for step in bar:
        t0 = time.perf_counter()
        batch = [train_tasks[i] for i in sampler.indices(step)]

        # rollouts (policy in eval mode, no grad) -> rewards -> advantages -> rows
        model.eval()
        with autocast(cfg, model):
            if searcher is not None:
                from memtrain.rl.search_rollout import collect as collect_search

                rollouts = collect_search(engine, searcher, batch, cfg.search, cfg.rollout,
                                          seed=step_seed(cfg.seed, step), progress=progress)
            else:
                rollouts = collect(engine, batch, agent, cfg.rollout, seed=step_seed(cfg.seed, step),
                                   progress=progress)
        lc = cfg.loss
        rows, row_stats = build_rows(rollouts, lc.adv_scale, lc.dapo_filter, lc.mask_truncated)
        for k in groups:
            groups[k] += row_stats.get(k, 0.0)
        t1 = time.perf_counter()

        # policy update, then the engine samples from the new weights
        model.train()
        if hasattr(engine, "sleep"):  # vLLM with engine.sleep_mode: free its GPU memory for the update
            engine.sleep()
        upd = update(model, reference, rows, optimizer, cfg, step, tok.pad_token_id, progress=progress)
        if not upd["update/skipped"]:  # warm-up counts optimizer updates, not batches DAPO emptied
            scheduler.step()
        updates += int(upd["update/optimizer_steps"])
        if hasattr(engine, "wake_up"):
            engine.wake_up()
        engine.sync_weights(model)
        t2 = time.perf_counter()

        metrics = {**rollouts.metrics, **row_stats, **upd, "lr": scheduler.get_last_lr()[0],
                   "time/rollout_s": t1 - t0, "time/update_s": t2 - t1, "time/step_s": t2 - t0,
                   "gen/tokens_per_s": rollouts.metrics["gen/tokens"] / max(t1 - t0, 1e-9),
                   "mem/peak_rss_gib": peak_rss_gib()}
        if held_out and (step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0)):
            metrics.update(held_out_eval(step))
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
    final = save_final(model, tok, out / "final")
    size = sum(f.stat().st_size for f in final.rglob("*") if f.is_file())
    ran = cfg.steps - start
    if updates == 0 and ran > 0:
        say(f"finished {ran} step(s) WITHOUT updating the model: every group had equal rewards, so DAPO "
            "dropped them all (loss.dapo_filter). The model is at the floor on these tasks: check the step-0 "
            "reward in metrics.jsonl; the micro preset is a setting with signal")
    reward = cfg.rollout.reward
    parts = (f"search_{cfg.search.reward}",) if searcher is not None else (f"e2e_{reward}", f"imr_{reward}")
    summary = [held_out_change(out / "metrics.jsonl", cfg.steps, min(cfg.eval_docs, len(held_out)), parts)]
    if updates == 0 and ran > 0:
        summary.append(dropped_groups(groups, ran))
    summary.append(f"final model in {final} ({ckpt.human(size)}), metrics in {out / 'metrics.jsonl'}")
    say("done" + "".join(f"; {part}" for part in summary if part))
    return final


def check_disk(out: Path, model: Any, optimizer: Any, cfg: TrainConfig, start: int) -> None:
    """Say what the run will write (checkpoints and the final model) against the free space, and refuse
    a run whose writes cannot fit before spending any time on it."""
    weights, opt = ckpt.checkpoint_bytes(model, optimizer)
    final = ckpt.weights_bytes(model)
    saves = [s for s in range(start + 1, cfg.steps + 1)
             if (cfg.save_every and s % cfg.save_every == 0) or s == cfg.steps]
    at_once = min(len(saves), cfg.keep_checkpoints + 1) if cfg.keep_checkpoints else len(saves)
    need = at_once * (weights + opt) + final
    h = ckpt.human
    say(f"disk: {len(saves)} checkpoint(s) of {h(weights + opt)} (weights {h(weights)} + optimizer state "
        f"{h(opt)}), up to {at_once} on disk at once (keep_checkpoints={cfg.keep_checkpoints}), and the "
        f"final model ({h(final)}): up to {h(need)}; {h(ckpt.free_bytes(out))} free in {out}")
    ckpt.ensure_space(out, need, f"this run ({at_once} checkpoint(s) + the final model)",
                      "; or keep fewer checkpoints (keep_checkpoints=1)")


def held_out_change(metrics_path: Path, last_step: int, n_tasks: int, parts: tuple[str, ...]) -> str:
    """``held-out reward a → b`` between the step-0 and the last step's held-out evaluations (resumed runs
    included: both are in metrics.jsonl), with each of ``parts`` beside it; '' without such a pair."""
    from memtrain.io import read_jsonl_tolerant

    evals = {int(r["step"]): r for r in read_jsonl_tolerant(metrics_path) if "eval/coupled" in r}
    if last_step == 0 or 0 not in evals or last_step not in evals:
        return ""
    before, after = evals[0], evals[last_step]
    detail = ", ".join(f"{k} {before[f'eval/{k}']:.3f} → {after[f'eval/{k}']:.3f}" for k in parts
                       if f"eval/{k}" in before and f"eval/{k}" in after)
    return (f"held-out reward {before['eval/coupled']:.3f} → {after['eval/coupled']:.3f} from step 0 to "
            f"{last_step} on {n_tasks} tasks" + (f" ({detail})" if detail else ""))


def dropped_groups(groups: dict[str, float], steps: int) -> str:
    """How many groups DAPO dropped over the steps this invocation ran."""
    e2e, imr = int(groups["groups/e2e"]), int(groups["groups/imr"])
    text = f"no optimizer step: DAPO dropped {int(groups['groups/e2e_dropped'])} of {e2e} E2E group(s)"
    if imr:
        text += f" and {int(groups['groups/imr_dropped'])} of {imr} IMR group(s)"
    return text + f" over {steps} step(s), each with equal rewards"


def evaluate_held_out(engine: Any, model: Any, tasks: list[MemTask], cfg: TrainConfig
                      ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy proxy scores and per-task rows on held-out tasks: :func:`memtrain.eval.proxy.proxy_rollouts`,
    the same probes ``memtrain eval`` draws for these tasks and seed."""
    from memtrain.eval.proxy import proxy_rollouts, proxy_rows

    model.eval()
    with autocast(cfg, model):
        r = proxy_rollouts(engine, tasks[: cfg.eval_docs], cfg.agent, cfg.rollout.reward, seed=cfg.seed,
                           progress=cfg.log.progress)
    reward = cfg.rollout.reward
    keys = (f"reward/e2e_{reward}", f"reward/imr_{reward}", *HELD_OUT_KEYS)
    return {k: r.metrics[k] for k in keys}, proxy_rows(r, cfg.agent.answer_mode)


def evaluate_held_out_search(engine: Any, searcher: Any, model: Any, tasks: list[MemTask], cfg: TrainConfig
                             ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy search episodes on ``eval_docs`` held-out tasks, taken round-robin over the benchmarks: the
    reward, the paper's EM and the action statistics, and one row per task (the rows ``memtrain eval``
    writes, traces included)."""
    from memtrain.agent.engine import Sampling
    from memtrain.agent.search import run_search_agent
    from memtrain.eval.search import result_row
    from memtrain.records import Rollouts
    from memtrain.rl.search_rollout import search_metrics, search_rewards

    model.eval()
    by_source: dict[str, list[MemTask]] = {}
    for t in tasks:
        by_source.setdefault(str(t.meta.get("source", "")), []).append(t)
    rounds = [t for group in zip(*by_source.values(), strict=False) for t in group]  # round-robin
    chosen = rounds[: cfg.eval_docs] if len(rounds) >= cfg.eval_docs else tasks[: cfg.eval_docs]
    with autocast(cfg, model):
        trajs = run_search_agent(engine, searcher, chosen, cfg.search,
                                 Sampling(temperature=0.0, seed=cfg.seed), progress=cfg.log.progress)
    scores = [search_rewards(tr, t, cfg.search.reward, reduce="mean")  # held-out: the paper's mean
              for t, tr in zip(chosen, trajs, strict=True)]
    r = Rollouts(tasks=chosen, g1=1, trajectories=trajs, doc_of=list(range(len(chosen))),
                 answer_rewards=[a for a, _ in scores], imr=[None] * len(chosen),
                 rewards=[a for a, _ in scores], metrics={}, answer_strict=[e for _, e in scores])
    m = search_metrics(r, cfg.search.reward)
    keys = (f"reward/search_{cfg.search.reward}", "reward/coupled", "score/search_em", "search/answered",
            "search/turns", "search/searches", "search/invalid_turns")
    return {k: m[k] for k in keys}, [result_row(t, tr, 0.0) for t, tr in zip(chosen, trajs, strict=True)]
