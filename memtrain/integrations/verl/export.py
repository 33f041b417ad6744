"""``memtrain verl-config``: a memtrain train preset as a ready-to-launch veRL run.

One source of settings: the run is described by the same :class:`~memtrain.rl.config.TrainConfig` presets
``memtrain train`` reads (plus cluster fields), and :func:`verl_overrides` maps every field to its veRL key
(table in ``docs/verl.md``). The command writes, into ``out``:

- ``train.parquet`` / ``val.parquet`` — the task sets as veRL rows (:func:`task_rows`): ``data_source``,
  ``prompt``, ``agent_name`` (which memtrain loop reads the row), ``reward_model.ground_truth`` and
  ``extra_info`` with ``index``, the gold ``answers``, the reward settings and the whole task as JSON;
- ``agent_loops.yaml`` — veRL's agent-loop registry entries, carrying memtrain's agent budgets and rollout
  settings to :mod:`memtrain.integrations.verl.agent_loop`;
- ``overrides.json`` and ``run.sh`` — the veRL command line (``python -m verl.trainer.main_ppo ...``).

Nothing here imports verl, so the config can be written on a laptop and launched on the cluster.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from memtrain import prompts
from memtrain.agent.loop import AgentConfig
from memtrain.config import option
from memtrain.errors import MemtrainError
from memtrain.io import atomic_open, write_json
from memtrain.records import MemTask
from memtrain.rl.config import TrainConfig

LOOP_CLASSES = {"e2e": ("memtrain_memtrain", "memtrain.integrations.verl.agent_loop.MemTrainAgentLoop"),
                "qa": ("memtrain_memagent", "memtrain.integrations.verl.agent_loop.MemAgentAgentLoop"),
                "search": ("memtrain_search", "memtrain.integrations.verl.agent_loop.MemSearchAgentLoop")}
MANAGER = "memtrain.integrations.verl.worker.MemTrainAgentLoopManager"


@dataclass
class VerlConfig(TrainConfig):
    """A memtrain train config plus where and how veRL runs it."""

    out: str = option("folder for the parquet files, the agent-loop registry and run.sh", "verl_run")
    nnodes: int = option("veRL trainer.nnodes", 1)
    n_gpus_per_node: int = option("veRL trainer.n_gpus_per_node", 8)
    rollout_name: Literal["vllm", "sglang"] = option("veRL rollout backend", "vllm")
    tensor_parallel: int = option("rollout tensor-parallel size", 1)
    agent_workers: int = option("veRL agent-loop workers (Ray actors running the memory loops)", 8)
    prompt_margin: int = option("tokens added to the measured prompt bound (IMR masking can lengthen a "
                                "chunk by a few tokens)", 64)
    extra: list[str] = option("more veRL overrides, appended verbatim (key=value)", [])


def task_rows(tasks: list[MemTask], reward: str = "strict_em", answer_mode: str = "boxed"
              ) -> list[dict[str, Any]]:
    """veRL dataset rows: one per document; ``rollout.n`` sessions of a row are its G1 trajectories.

    ``reward``/``answer_mode`` travel in ``extra_info`` for the reward function (``reward.py``).
    """
    rows = []
    for i, task in enumerate(tasks):
        if task.kind not in LOOP_CLASSES:
            raise MemtrainError(f"task {task.id!r} has kind {task.kind!r}; the veRL export knows "
                                f"{list(LOOP_CLASSES)}")
        rows.append({
            "data_source": f"memtrain/{task.kind}",
            "agent_name": LOOP_CLASSES[task.kind][0],
            "prompt": [{"role": "user", "content": task.problem}],
            "ability": "memory",
            "reward_model": {"style": "rule", "ground_truth": task.answer},
            "extra_info": {"index": i, "id": task.id, "answers": list(task.answers),
                           "reward": reward, "answer_mode": answer_mode,
                           "objectives": [list(o["answers"]) for o in task.meta.get("objectives", [])],
                           "task": json.dumps(dataclasses.asdict(task), ensure_ascii=False)},
        })
    return rows


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows to one parquet file, atomically (a killed export leaves no half file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_open(path, "wb", encoding=None) as f:
        pq.write_table(pa.Table.from_pylist(rows), f)


def prompt_bound(tokenizer: Any, tasks: list[MemTask], cfg: TrainConfig, agent: AgentConfig) -> int:
    """Longest prompt a loop can send: the template around the longest problem plus full budgets — a chunk
    and a memory for the memory agent (update and IMR prompts; the final one has no chunk), a memory, a
    query and an ``<information>`` block for the searching agent."""
    from memtrain.agent.engine import render

    problems = {t.problem for t in tasks}
    if tasks and tasks[0].kind == "search":
        s = cfg.search
        empty = "<think></think>\n<search></search>"
        overhead = max(len(render(tokenizer, prompts.search_messages(p, empty, "<information></information>",
                                                                     s.prompt_version))) for p in problems)
        return overhead + s.memory_tokens + s.response_tokens + s.info_tokens + 32  # + the turns-left hint
    v = agent.prompt_version
    overhead = max(len(render(tokenizer, prompts.update_messages(p, "", "", v))) for p in problems)
    overhead = max(overhead, len(render(tokenizer, prompts.imr_messages("", "", v))))
    return overhead + int(agent.chunk_tokens or 0) + agent.memory_tokens


def response_bound(tasks: list[MemTask], cfg: TrainConfig, agent: AgentConfig) -> int:
    """Longest response: a memory or an answer (memory agent), one turn (searching agent)."""
    if tasks and tasks[0].kind == "search":
        return cfg.search.response_tokens
    return max(agent.memory_tokens, agent.answer_tokens)


def verl_overrides(cfg: VerlConfig, max_prompt: int, max_response: int, train_file: str, val_file: str,
                   agent_loops: str, reward_file: str, default_loop: str) -> dict[str, Any]:
    """Every memtrain setting as its veRL 0.9 key (the table in docs/verl.md)."""
    lc, r, o = cfg.loss, cfg.rollout, cfg.optim
    ov: dict[str, Any] = {
        "trainer.use_v1": True,  # agent loops returning several conversations per trajectory
        "algorithm.adv_estimator": "grpo",
        "algorithm.norm_adv_by_std_in_grpo": lc.adv_scale == "std",  # false = Dr. GRPO
        "algorithm.use_kl_in_reward": False,
        "algorithm.filter_groups.enable": lc.dapo_filter,
        "algorithm.filter_groups.metric": "coupled_reward",  # see memtrain.integrations.verl.worker
        "data.train_files": train_file,
        "data.val_files": val_file,
        "data.train_batch_size": cfg.batch_size,
        "data.max_prompt_length": max_prompt,
        "data.max_response_length": max_response,
        "data.filter_overlong_prompts": False,  # the row's prompt is the question; the loop builds the rest
        "data.return_raw_chat": True,
        "data.seed": cfg.seed,
        "actor_rollout_ref.model.path": cfg.model.init_from or cfg.model.name,
        "actor_rollout_ref.model.enable_gradient_checkpointing": cfg.gradient_checkpointing,
        "actor_rollout_ref.actor.optim.lr": o.lr,
        "actor_rollout_ref.actor.optim.lr_warmup_steps": o.warmup_steps,
        "actor_rollout_ref.actor.optim.weight_decay": o.weight_decay,
        "actor_rollout_ref.actor.grad_clip": o.grad_clip,
        "actor_rollout_ref.actor.ppo_mini_batch_size": cfg.mini_batch_size or cfg.batch_size,
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "actor_rollout_ref.actor.ppo_epochs": cfg.ppo_epochs,
        "actor_rollout_ref.actor.clip_ratio_low": lc.eps_low,
        "actor_rollout_ref.actor.clip_ratio_high": lc.eps_high,
        "actor_rollout_ref.actor.loss_agg_mode": lc.agg,
        "actor_rollout_ref.actor.use_kl_loss": lc.kl_coef > 0,
        "actor_rollout_ref.actor.kl_loss_coef": lc.kl_coef,
        "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",  # k3
        "actor_rollout_ref.actor.entropy_coeff": 0,
        "actor_rollout_ref.actor.fsdp_config.model_dtype": "fp32" if cfg.model.dtype == "fp32" else "bf16",
        "actor_rollout_ref.rollout.name": cfg.rollout_name,
        "actor_rollout_ref.rollout.n": r.g1,
        "actor_rollout_ref.rollout.temperature": r.temperature,
        "actor_rollout_ref.rollout.top_p": r.top_p,
        "actor_rollout_ref.rollout.gpu_memory_utilization": cfg.engine.gpu_memory_utilization,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": cfg.tensor_parallel,
        "actor_rollout_ref.rollout.calculate_log_probs": True,
        "actor_rollout_ref.rollout.agent.num_workers": cfg.agent_workers,
        "actor_rollout_ref.rollout.agent.default_agent_loop": default_loop,
        "actor_rollout_ref.rollout.agent.agent_loop_config_path": agent_loops,
        "+actor_rollout_ref.rollout.agent.agent_loop_manager_class": MANAGER,
        "reward.custom_reward_function.path": reward_file,
        "reward.custom_reward_function.name": "compute_score",
        "trainer.total_training_steps": cfg.steps,
        "trainer.total_epochs": 1_000_000,  # steps bound the run, as in memtrain
        "trainer.nnodes": cfg.nnodes,
        "trainer.n_gpus_per_node": cfg.n_gpus_per_node,
        "trainer.save_freq": cfg.save_every or -1,
        "trainer.test_freq": cfg.eval_every or -1,
        "trainer.default_local_dir": cfg.out_dir,
        "trainer.project_name": cfg.log.wandb_project,
        "trainer.experiment_name": Path(cfg.out_dir).name,
        "trainer.logger": ["console", "wandb"] if cfg.log.wandb else ["console"],
    }
    if lc.tis_cap is not None:  # truncated importance sampling between rollout and trainer log-probs
        ov["algorithm.rollout_correction.rollout_is"] = "token"
        ov["algorithm.rollout_correction.rollout_is_threshold"] = lc.tis_cap
    for item in cfg.extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise MemtrainError(f"VerlConfig.extra: {item!r} is not key=value")
        ov[key] = value
    return ov


def command_line(overrides: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        return json.dumps(v) if isinstance(v, list | bool) else str(v)

    args = " \\\n  ".join(shlex.quote(f"{k}={value(v)}") for k, v in overrides.items())
    return f"python -m verl.trainer.main_ppo \\\n  {args}\n"


def verl_config(cfg: VerlConfig) -> Path:
    """Export the preset's task sets, write the agent-loop registry, the overrides and run.sh."""
    import yaml

    from memtrain.models import load_tokenizer
    from memtrain.rl.data import load_data

    cfg.validate()
    model = cfg.model.init_from or cfg.model.name
    tokenizer = load_tokenizer(model)
    train, held, agent = load_data(cfg, tokenizer)  # the same task sets and checks as `memtrain train`
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    train_file, val_file = out / "train.parquet", out / "val.parquet"
    reward = cfg.search.reward if train[0].kind == "search" else cfg.rollout.reward
    for path, tasks in ((train_file, train), (val_file, held)):
        write_parquet(path, task_rows(tasks, reward, agent.answer_mode))

    loop_args = {"agent": dataclasses.asdict(agent), "rollout": dataclasses.asdict(cfg.rollout),
                 "search": dataclasses.asdict(cfg.search), "retriever": dataclasses.asdict(cfg.retriever),
                 "seed": cfg.seed}
    registry = [{"name": name, "_target_": target, **loop_args} for name, target in LOOP_CLASSES.values()]
    with atomic_open(out / "agent_loops.yaml") as f:
        yaml.safe_dump(registry, f, sort_keys=False)

    max_prompt = prompt_bound(tokenizer, train + held, cfg, agent) + cfg.prompt_margin
    reward_file = str(Path(__file__).with_name("reward.py"))
    ov = verl_overrides(cfg, max_prompt, response_bound(train, cfg, agent), str(train_file), str(val_file),
                        str(out / "agent_loops.yaml"), reward_file, LOOP_CLASSES[train[0].kind][0])
    write_json(out / "overrides.json", ov)
    write_json(out / "memtrain_config.json", dataclasses.asdict(cfg))
    with atomic_open(out / "run.sh") as f:
        f.write("#!/usr/bin/env bash\n# written by `memtrain verl-config` (needs memtrain[verl,vllm])\n"
                f"set -euo pipefail\n{command_line(ov)}")
    (out / "run.sh").chmod(0o755)
    print(f"veRL run for {len(train)} training / {len(held)} held-out tasks in {out}\n"
          f"  max prompt {max_prompt} tokens, max response {ov['data.max_response_length']}\n"
          f"  launch on the cluster: bash {out / 'run.sh'}")
    return out
