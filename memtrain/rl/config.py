"""Training configuration: one dataclass per concern, loaded from YAML by :func:`memtrain.config.from_dict`.

Every field carries ``metadata={"help": ...}`` with its meaning and unit; unknown keys and wrong types
fail at load time with the field's dotted name (``TrainConfig.loss.eps_low: expected float, got 'x'``).
Defaults follow the paper's recipe (DESIGN §3) except where a CPU preset overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from memtrain.agent.loop import AgentConfig
from memtrain.errors import MemtrainError


def _help(text: str, default: Any) -> Any:
    """A dataclass field with help metadata (mutable defaults become factories)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class LoraConfig:
    enabled: bool = _help("train LoRA adapters (peft) instead of all weights", False)
    r: int = _help("LoRA rank", 16)
    alpha: int = _help("LoRA alpha (scale = alpha / r)", 32)
    dropout: float = _help("LoRA dropout (keep 0 for exactly reproducible resumes)", 0.0)
    target_modules: list[str] = _help(
        "module names to adapt",
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclass
class ModelConfig:
    name: str = _help("HF id, local path, 'smollm2' (embedded default) or 'tiny' (tests)", "smollm2")
    init_from: str | None = _help("start from this checkpoint/final folder instead of `name` (e.g. a "
                                  "MemTrain run's out_dir/final for MemTrain -> task post-training)", None)
    dtype: str = _help("weight dtype: fp32 (default; bf16 compute comes from autocast), bf16, auto", "fp32")
    lora: LoraConfig = _help("LoRA adapters", None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.lora is None:
            self.lora = LoraConfig()


@dataclass
class DataConfig:
    kind: Literal["e2e", "hotpotqa"] = _help(
        "'e2e': MemTasks built by `memtrain data build` in tasks_dir; 'hotpotqa': long-document HotpotQA "
        "tasks built on the fly from data_file (downstream MemAgent-style post-training)", "e2e")
    tasks_dir: str | None = _help("folder of built tasks (kind=e2e)", None)
    data_file: str | None = _help("HotpotQA JSONL (kind=hotpotqa)", None)
    longqa: dict[str, Any] = _help("fields of memtrain.tasks.longqa's config (kind=hotpotqa), e.g. "
                                   "{n_docs: 20, max_examples: 200}", {})
    eval_tasks_dir: str | None = _help("held-out tasks for evals (default: the last eval_size tasks)", None)
    eval_size: int = _help("tasks held out from training when eval_tasks_dir is unset", 8)
    split_seed: int = _help("seed of the train/eval question split (kind=hotpotqa); fixed across training "
                            "seeds so the evaluation questions never enter training", 0)
    max_tasks: int | None = _help("use at most this many training tasks", None)


@dataclass
class RolloutConfig:
    engine: Literal["hf", "vllm"] = _help("'hf': transformers generate on the policy itself (no weight sync);"
                                          " 'vllm': GPU engine, weights synced after every update", "hf")
    engine_batch_size: int = _help("conversations per generate call (hf)", 32)
    g1: int = _help("E2E trajectories per document (G1)", 8)
    g2: int = _help("IMR answers per IMR prompt (G2)", 8)
    imr: bool = _help("ask IMR questions (false = the no-IMR ablation)", True)
    lambda_imr: float = _help("λ: weight of the mean IMR reward inside the E2E reward", 0.5)
    reward: Literal["strict_em", "sub_em", "f1"] = _help(
        "answer match for every reward (E2E, IMR, QA): strict_em (paper); sub_em or f1 are CPU-scale knobs"
        " beyond the paper: sub_em pays when the gold entity occurs in the answer, f1 gives partial credit"
        " for shared tokens (a dense signal when a small model is rarely exactly right)", "strict_em")
    temperature: float = _help("sampling temperature for rollouts", 1.0)
    top_p: float = _help("nucleus mass for rollouts", 1.0)
    gpu_memory_utilization: float = _help("vLLM memory fraction (engine=vllm)", 0.5)

    def validate(self) -> None:
        if self.g1 < 1 or self.g2 < 1:
            raise MemtrainError(f"RolloutConfig: g1 and g2 must be >= 1, got g1={self.g1}, g2={self.g2}")
        if self.temperature <= 0:
            raise MemtrainError("RolloutConfig.temperature must be > 0: GRPO needs diverse samples per group")


@dataclass
class LossConfig:
    eps_low: float = _help("lower clip: ratio >= 1 - eps_low", 0.2)
    eps_high: float = _help("upper clip (DAPO clip-higher): ratio <= 1 + eps_high", 0.28)
    kl_coef: float = _help("k3 KL coefficient to the frozen initial policy; 0 loads no reference", 1e-3)
    agg: Literal["conversation_mean", "token_mean"] = _help(
        "loss aggregation: per-conversation token mean averaged over conversations, or one token mean",
        "conversation_mean")
    adv_scale: Literal["none", "std"] = _help("'none' = Dr. GRPO (R - mean); 'std' = GRPO (÷ std)", "none")
    dapo_filter: bool = _help("drop groups whose rewards are all equal (DAPO dynamic sampling)", True)
    mask_truncated: bool = _help("drop responses cut at the token budget from the loss", False)


@dataclass
class OptimConfig:
    lr: float = _help("AdamW peak learning rate", 1e-6)
    warmup_steps: int = _help("linear warm-up steps from 0 to lr (then constant)", 0)
    weight_decay: float = _help("AdamW weight decay", 0.0)
    betas: list[float] = _help("AdamW betas", [0.9, 0.999])
    grad_clip: float = _help("max global gradient norm (0 = no clipping)", 1.0)


@dataclass
class LogConfig:
    tensorboard: bool = _help("write TensorBoard events to out_dir/tb", True)
    wandb: bool = _help("log to Weights & Biases (needs `pip install wandb`)", False)
    wandb_project: str = _help("wandb project name", "memtrain")
    progress: bool = _help("show tqdm bars", True)


@dataclass
class TrainConfig:
    model: ModelConfig = _help("policy model", None)  # type: ignore[assignment]
    data: DataConfig = _help("training and held-out tasks", None)  # type: ignore[assignment]
    agent: AgentConfig = _help("memory-agent budgets (tokens)", None)  # type: ignore[assignment]
    rollout: RolloutConfig = _help("sampling, group sizes and rewards", None)  # type: ignore[assignment]
    loss: LossConfig = _help("policy loss", None)  # type: ignore[assignment]
    optim: OptimConfig = _help("optimizer", None)  # type: ignore[assignment]
    log: LogConfig = _help("logging", None)  # type: ignore[assignment]
    steps: int = _help("optimizer steps (one batch of documents each)", 300)
    batch_size: int = _help("documents per step", 32)
    micro_batch_size: int = _help("conversations per forward/backward pass", 8)
    ppo_epochs: int = _help("passes over each batch's rows (1 = on-policy; ratio is then 1)", 1)
    bf16: bool = _help("bf16 autocast for forward passes (CPU or GPU); weights stay in model.dtype", True)
    gradient_checkpointing: bool = _help("recompute activations in backward to save memory", True)
    seed: int = _help("seed for data order, IMR choices, sampling and init", 0)
    out_dir: str = _help("run folder: checkpoints, metrics.jsonl, tb/, final/", "runs/memtrain")
    save_every: int = _help("write out_dir/checkpoint-<step> every this many steps (0 = only at the end)", 50)
    keep_checkpoints: int = _help("keep this many latest checkpoints (0 = all)", 2)
    eval_every: int = _help("held-out proxy eval every this many steps (0 = only at start and end)", 0)
    eval_docs: int = _help("held-out tasks per eval (greedy, one trajectory each)", 8)

    def __post_init__(self) -> None:
        defaults = {"model": ModelConfig, "data": DataConfig, "agent": AgentConfig, "rollout": RolloutConfig,
                    "loss": LossConfig, "optim": OptimConfig, "log": LogConfig}
        for name, cls in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, cls())

    def validate(self) -> None:
        for name in ("steps", "batch_size", "micro_batch_size", "ppo_epochs"):
            if getattr(self, name) < 1:
                raise MemtrainError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.optim.lr <= 0:
            raise MemtrainError(f"TrainConfig.optim.lr must be > 0, got {self.optim.lr}")
        if self.loss.eps_low < 0 or self.loss.eps_high < 0 or self.loss.eps_low >= 1:
            raise MemtrainError("TrainConfig.loss: need 0 <= eps_low < 1 and eps_high >= 0")
        if self.loss.kl_coef < 0:
            raise MemtrainError(f"TrainConfig.loss.kl_coef must be >= 0, got {self.loss.kl_coef}")
        self.agent.validate()
        self.rollout.validate()
        if self.data.kind == "e2e" and not self.data.tasks_dir:
            raise MemtrainError("TrainConfig.data.tasks_dir is required for data.kind: e2e "
                                "(build tasks with `memtrain data build`)")
        if self.data.kind == "hotpotqa" and not self.data.data_file:
            raise MemtrainError("TrainConfig.data.data_file is required for data.kind: hotpotqa")
