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


CPU_MODULES = "memtrain.integrations.verl.cpu,memtrain.integrations.verl.hf_rollout"
HF_MODULE = "memtrain.integrations.verl.hf_rollout"


@dataclass
class VerlConfig(TrainConfig):
    """A memtrain train config plus where and how veRL runs it."""

    out: str = option("folder for the parquet files, the agent-loop registry and run.sh", "verl_run")
    device: Literal["gpu", "cpu"] = option(
        "gpu: a GPU node/cluster (vLLM or SGLang rollouts, FSDP); cpu: veRL's real trainer on this machine "
        "with memtrain's CPU platform and HF rollout, to debug a recipe before paying for GPUs", "gpu")
    nnodes: int = option("veRL trainer.nnodes", 1)
    n_gpus_per_node: int | None = option("veRL trainer.n_gpus_per_node (None: 8 on gpu, 1 actor process on "
                                         "cpu)", None)
    rollout_name: Literal["vllm", "sglang", "hf"] | None = option(
        "veRL rollout backend (None: vllm on gpu, hf on cpu; hf = memtrain's transformers rollout)", None)
    tensor_parallel: int = option("rollout tensor-parallel size", 1)
    agent_workers: int | None = option("veRL agent-loop workers, Ray actors running the memory loops "
                                       "(None: 8 on gpu, 1 on cpu)", None)
    prompt_margin: int = option("tokens added to the measured prompt bound (IMR masking can lengthen a "
                                "chunk by a few tokens)", 64)
    extra: list[str] = option("more veRL overrides, appended verbatim (key=value)", [])

    def resolved(self) -> tuple[str, int, int]:
        """(rollout backend, processes per node, agent workers) with the device's defaults filled in."""
        cpu = self.device == "cpu"
        rollout = self.rollout_name or ("hf" if cpu else "vllm")
        if cpu and rollout != "hf":
            raise MemtrainError(f"VerlConfig: device=cpu runs the hf rollout; rollout_name={rollout} needs "
                                "a GPU")
        return rollout, self.n_gpus_per_node or (1 if cpu else 8), self.agent_workers or (1 if cpu else 8)


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


def rows_per_trajectory(tasks: list[MemTask], cfg: TrainConfig, agent: AgentConfig) -> int:
    """The most rows one veRL session stores: T updates + the final answer (+ G2 IMR answers), or one per
    search turn. veRL counts PPO mini-batches in rows; memtrain counts them in documents."""
    if tasks and tasks[0].kind == "search":
        return cfg.search.max_turns
    longest = max(len(t.chunks) for t in tasks)
    if agent.max_chunks:
        longest = min(longest, agent.max_chunks)
    imr = cfg.rollout.g2 if tasks[0].kind == "e2e" and cfg.rollout.imr else 0
    return longest + 1 + imr


def check_mappable(cfg: VerlConfig) -> None:
    """Refuse memtrain settings veRL cannot honour (a run would silently differ from `memtrain train`)."""
    problems = []
    if cfg.model.lora.enabled and cfg.model.lora.dropout:
        problems.append(f"model.lora.dropout={cfg.model.lora.dropout} (veRL's LoRA has no dropout)")
    if cfg.model.dtype not in ("fp32", "bf16"):
        problems.append(f"model.dtype={cfg.model.dtype} (veRL keeps fp32 or bf16 master weights)")
    if cfg.engine.kind == "openai":
        problems.append("engine.kind=openai (veRL samples from its own rollout servers: rollout_name)")
    if problems:
        raise MemtrainError("veRL cannot run these memtrain settings: " + "; ".join(problems))


def verl_overrides(cfg: VerlConfig, max_prompt: int, max_response: int, train_file: str, val_file: str,
                   agent_loops: str, reward_file: str, default_loop: str, rows_per_session: int = 1
                   ) -> dict[str, Any]:
    """Every memtrain setting as its veRL 0.9 key (the table in docs/verl.md).

    PPO mini-batches: memtrain's ``mini_batch_size`` counts documents (all rows of a document's G1
    trajectories); veRL's ``ppo_mini_batch_size`` counts prompts × ``rollout.n`` **rows**, and every session
    stores up to ``rows_per_session`` rows. So a mini-batch of D documents is ``D × rows_per_session`` here:
    the same number of optimizer steps per rollout batch as ``memtrain train`` (veRL pads the row batch up
    to whole mini-batches; padding rows carry no loss). veRL's config check wants ``ppo_mini_batch_size <=
    train_batch_size`` unless micro-batches are sized by tokens, so they are (``use_dynamic_bsz``): a budget
    of ``micro_batch_size`` longest rows, the same peak memory as memtrain's ``micro_batch_size`` rows.
    """
    check_mappable(cfg)
    rollout_name, gpus, workers = cfg.resolved()
    lc, r, o = cfg.loss, cfg.rollout, cfg.optim
    docs_per_step = cfg.mini_batch_size or cfg.batch_size
    micro = cfg.micro_batch_size
    # memtrain's bf16 autocast = FSDP computing in bf16 over the model.dtype master weights
    precision = {"param_dtype": "bf16" if cfg.bf16 else "fp32", "reduce_dtype": "fp32",
                 "buffer_dtype": "fp32"}
    model_path = resolve_model(cfg.model.init_from or cfg.model.name)
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
        "actor_rollout_ref.model.path": model_path,
        "actor_rollout_ref.model.enable_gradient_checkpointing": cfg.gradient_checkpointing,
        "actor_rollout_ref.actor.optim.lr": o.lr,
        "actor_rollout_ref.actor.optim.lr_warmup_steps": o.warmup_steps,
        "actor_rollout_ref.actor.optim.weight_decay": o.weight_decay,
        "actor_rollout_ref.actor.optim.betas": list(o.betas),
        "actor_rollout_ref.actor.grad_clip": o.grad_clip if o.grad_clip > 0 else 1e9,
        "actor_rollout_ref.actor.ppo_mini_batch_size": docs_per_step * rows_per_session,
        "actor_rollout_ref.actor.use_dynamic_bsz": True,
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": micro * (max_prompt + max_response),
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": micro,
        "actor_rollout_ref.actor.ppo_epochs": cfg.ppo_epochs,
        "actor_rollout_ref.actor.shuffle": False,  # mini-batches follow the row order, as memtrain's
        "actor_rollout_ref.actor.data_loader_seed": cfg.seed,
        "actor_rollout_ref.actor.clip_ratio_low": lc.eps_low,
        "actor_rollout_ref.actor.clip_ratio_high": lc.eps_high,
        "actor_rollout_ref.actor.loss_agg_mode": lc.agg,
        "actor_rollout_ref.actor.use_kl_loss": lc.kl_coef > 0,
        "actor_rollout_ref.actor.kl_loss_coef": lc.kl_coef,
        "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",  # k3
        "actor_rollout_ref.actor.entropy_coeff": 0,
        "actor_rollout_ref.actor.fsdp_config.model_dtype": cfg.model.dtype,
        "actor_rollout_ref.ref.fsdp_config.model_dtype": cfg.model.dtype,  # veRL's default for it: bf16
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision": precision,
        "+actor_rollout_ref.ref.fsdp_config.mixed_precision": precision,
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": micro,
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": micro,
        "actor_rollout_ref.rollout.name": rollout_name,
        "actor_rollout_ref.rollout.dtype": "bfloat16" if cfg.bf16 else "float32",
        "actor_rollout_ref.rollout.n": r.g1,
        "actor_rollout_ref.rollout.temperature": r.temperature,
        "actor_rollout_ref.rollout.top_p": r.top_p,
        "actor_rollout_ref.rollout.val_kwargs.n": 1,  # memtrain's held-out eval: one greedy trajectory
        "actor_rollout_ref.rollout.val_kwargs.temperature": 0,
        "actor_rollout_ref.rollout.val_kwargs.do_sample": False,
        "actor_rollout_ref.rollout.gpu_memory_utilization": cfg.engine.gpu_memory_utilization,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": cfg.tensor_parallel,
        "actor_rollout_ref.rollout.calculate_log_probs": True,
        "actor_rollout_ref.rollout.logprobs_mode": "processed_logprobs",  # after temperature, as the actor's
        "actor_rollout_ref.rollout.agent.num_workers": workers,
        "actor_rollout_ref.rollout.agent.default_agent_loop": default_loop,
        "actor_rollout_ref.rollout.agent.agent_loop_config_path": agent_loops,
        "+actor_rollout_ref.rollout.agent.agent_loop_manager_class": MANAGER,
        "reward.custom_reward_function.path": reward_file,
        "reward.custom_reward_function.name": "compute_score",
        "trainer.total_training_steps": cfg.steps,
        "trainer.total_epochs": 1_000_000,  # steps bound the run, as in memtrain
        "trainer.nnodes": cfg.nnodes,
        "trainer.n_gpus_per_node": gpus,
        "trainer.save_freq": cfg.save_every or cfg.steps,
        "trainer.max_actor_ckpt_to_keep": cfg.keep_checkpoints or None,
        "trainer.val_before_train": cfg.eval_docs > 0,  # memtrain evaluates at the start and the end
        "trainer.test_freq": (cfg.eval_every or cfg.steps) if cfg.eval_docs > 0 else -1,
        "trainer.default_local_dir": str(Path(cfg.out_dir).resolve()),
        "trainer.project_name": cfg.log.wandb_project,
        "trainer.experiment_name": Path(cfg.out_dir).name,
        "trainer.logger": ["console"] + (["tensorboard"] if cfg.log.tensorboard else [])
                          + (["wandb"] if cfg.log.wandb else []),
    }
    if cfg.model.lora.enabled:
        lora = cfg.model.lora
        ov.update({"actor_rollout_ref.model.lora_rank": lora.r,
                   "actor_rollout_ref.model.lora_alpha": lora.alpha,
                   "actor_rollout_ref.model.target_modules": list(lora.target_modules)})
    if lc.tis_cap is not None:  # truncated importance sampling between rollout and trainer log-probs
        ov["algorithm.rollout_correction.rollout_is"] = "token"
        ov["algorithm.rollout_correction.rollout_is_threshold"] = lc.tis_cap
    if cfg.device == "cpu":
        ov.update(cpu_overrides(gpus))
    for item in cfg.extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise MemtrainError(f"VerlConfig.extra: {item!r} is not key=value")
        ov[key] = value
    return ov


def cpu_overrides(processes: int) -> dict[str, Any]:
    """What veRL needs on a machine without accelerators (see :mod:`memtrain.integrations.verl.cpu`)."""
    return {
        "actor_rollout_ref.actor.strategy": "fsdp2",  # FSDP1 needs a device id
        "actor_rollout_ref.ref.strategy": "fsdp2",
        "+actor_rollout_ref.model.override_config.attn_implementation": "sdpa",  # no FlashAttention
        "actor_rollout_ref.model.use_remove_padding": False,  # needs FlashAttention's varlen kernels
        "actor_rollout_ref.actor.use_torch_compile": False,
        "ray_kwargs.ray_init.num_cpus": 8,  # Ray's logical CPUs: the task runner, TransferQueue, workers
        "+ray_kwargs.ray_init.num_gpus": processes,  # logical "GPUs": one per actor process
        "transfer_queue.backend.SimpleStorage.num_data_storage_units": 1,
        # fewer processes to start on a small box: memtrain's loops score their own rows (the reward
        # workers only serve rows scored outside a loop), and the dataset is small
        "reward.num_workers": 1,
        "data.dataloader_num_workers": 0,
    }


def run_env(cfg: VerlConfig) -> dict[str, str]:
    """Environment variables the veRL processes need (veRL reads them in every Ray worker)."""
    rollout_name, _, _ = cfg.resolved()
    if cfg.device == "cpu":
        return {"VERL_USE_EXTERNAL_MODULES": CPU_MODULES, "VERL_PLATFORM": "cpu",
                "VERL_ENGINE_DEVICE": "cuda"}  # veRL's switch for its FSDP engine; the platform places it
    return {"VERL_USE_EXTERNAL_MODULES": HF_MODULE} if rollout_name == "hf" else {}


def resolve_model(name: str) -> str:
    """A path veRL can load: the embedded model's converted folder for its aliases, local folders made
    absolute, hub ids unchanged."""
    from memtrain.models import EMBEDDED_ALIASES, embedded_model_dir

    if name == "tiny":
        raise MemtrainError("model.name=tiny is built in process; veRL loads models from a folder: save it "
                            "with save_pretrained and pass model.name=<that folder>")
    if name.lower() in EMBEDDED_ALIASES:
        return str(embedded_model_dir())
    return str(Path(name).resolve()) if Path(name).exists() else name


def hydra_value(v: Any) -> str:
    """A value in Hydra's override grammar (lists, dicts, null, booleans)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def command_line(overrides: dict[str, Any], env: dict[str, str] | None = None) -> str:
    """``python -m verl.trainer.main_ppo key=value ...`` (shell-quoted), extra arguments appended."""
    args = " \\\n  ".join(shlex.quote(f"{k}={hydra_value(v)}") for k, v in overrides.items())
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in (env or {}).items())
    return f"{exports}python -m verl.trainer.main_ppo \\\n  {args} \\\n  \"$@\"\n"


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
    # veRL validates on the whole val file; memtrain's held-out eval reads eval_docs of the held-out tasks
    held = held[: cfg.eval_docs] if cfg.eval_docs > 0 else held[:1]
    for path, tasks in ((train_file, train), (val_file, held)):
        write_parquet(path, task_rows(tasks, reward, agent.answer_mode))

    loop_args = {"agent": dataclasses.asdict(agent), "rollout": dataclasses.asdict(cfg.rollout),
                 "search": dataclasses.asdict(cfg.search), "retriever": dataclasses.asdict(cfg.retriever),
                 "seed": cfg.seed, "mask_truncated": cfg.loss.mask_truncated}
    registry = [{"name": name, "_target_": target, **loop_args} for name, target in LOOP_CLASSES.values()]
    with atomic_open(out / "agent_loops.yaml") as f:
        yaml.safe_dump(registry, f, sort_keys=False)

    max_prompt = prompt_bound(tokenizer, train + held, cfg, agent) + cfg.prompt_margin
    rows = rows_per_trajectory(train, cfg, agent)
    reward_file = str(Path(__file__).with_name("reward.py"))
    ov = verl_overrides(cfg, max_prompt, response_bound(train, cfg, agent), str(train_file), str(val_file),
                        str(out / "agent_loops.yaml"), reward_file, LOOP_CLASSES[train[0].kind][0], rows)
    env = run_env(cfg)
    write_json(out / "overrides.json", ov)
    write_json(out / "env.json", env)
    write_json(out / "memtrain_config.json", dataclasses.asdict(cfg))
    needs = "memtrain[verl,vllm]" if ov["actor_rollout_ref.rollout.name"] == "vllm" else "memtrain[verl]"
    with atomic_open(out / "run.sh") as f:
        f.write(f"#!/usr/bin/env bash\n# written by `memtrain verl-config` (needs {needs}); extra arguments "
                f"are appended as veRL overrides\nset -euo pipefail\n{command_line(ov, env)}")
    (out / "run.sh").chmod(0o755)
    docs = cfg.mini_batch_size or cfg.batch_size
    print(f"veRL run for {len(train)} training / {len(held)} held-out tasks in {out} (device={cfg.device})\n"
          f"  max prompt {max_prompt} tokens, max response {ov['data.max_response_length']}\n"
          f"  PPO mini-batch: {docs} documents -> ppo_mini_batch_size={docs * rows} ({rows} rows per "
          f"trajectory at most, x rollout.n={cfg.rollout.g1}): {cfg.batch_size // docs} optimizer step(s) "
          f"per rollout batch, as in `memtrain train`\n"
          f"  launch: bash {out / 'run.sh'}")
    return out
