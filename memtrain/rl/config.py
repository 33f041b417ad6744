"""Training configuration: one dataclass per concern, loaded from YAML by :func:`memtrain.config.from_dict`.

Every field carries ``metadata={"help": ...}`` with its meaning and unit; unknown keys and wrong types
fail at load time with the field's dotted name (``TrainConfig.loss.eps_low: expected float, got 'x'``).
Defaults follow the paper's recipe (DESIGN §3) except where a CPU preset overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from memtrain.agent.engines import EngineConfig
from memtrain.agent.loop import AgentConfig
from memtrain.agent.search import SearchAgentConfig
from memtrain.config import option
from memtrain.errors import MemtrainError
from memtrain.search.backends import SearchConfig


@dataclass
class LoraConfig:
    enabled: bool = option("train LoRA adapters (peft) instead of all weights", False)
    r: int = option("LoRA rank", 16)
    alpha: int = option("LoRA alpha (scale = alpha / r)", 32)
    dropout: float = option("LoRA dropout (keep 0 for exactly reproducible resumes)", 0.0)
    target_modules: list[str] = option(
        "module names to adapt",
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclass
class ModelConfig:
    name: str = option("HF id, local path, 'smollm2' (embedded default) or 'tiny' (tests)", "smollm2")
    init_from: str | None = option("start from this checkpoint/final folder instead of `name` (e.g. a "
                                  "MemTrain run's out_dir/final for MemTrain -> task post-training)", None)
    dtype: str = option("weight dtype: fp32 (default; bf16 compute comes from autocast), bf16, auto", "fp32")
    lora: LoraConfig = option("LoRA adapters", factory=LoraConfig)



@dataclass
class DataConfig:
    tasks_dir: str | None = option("task set built by `memtrain data build` (E2E for MemTrain, long QA with "
                                   "split=train or search QA with split=train for task RL); its manifest is "
                                   "checked against agent.*", None)
    eval_tasks_dir: str | None = option("held-out task set for the evaluations during training (e.g. long QA "
                                        "split=eval); default: the last eval_size tasks of tasks_dir", None)
    eval_size: int = option("tasks held out from training when eval_tasks_dir is unset", 8)
    max_tasks: int | None = option("use at most this many training tasks", None)


@dataclass
class RolloutConfig:
    g1: int = option("E2E trajectories per document (G1)", 8)
    g2: int = option("IMR answers per IMR prompt (G2)", 8)
    imr: bool = option("ask IMR questions (false = the no-IMR ablation)", True)
    lambda_imr: float = option("λ: weight of the mean IMR reward inside the E2E reward", 0.5)
    reward: Literal["strict_em", "sub_em", "f1"] = option(
        "answer match for every reward (E2E, IMR, QA): strict_em (paper); sub_em or f1 are CPU-scale knobs"
        " beyond the paper: sub_em pays when the gold entity occurs in the answer, f1 gives partial credit"
        " for shared tokens (a dense signal when a small model is rarely exactly right)", "strict_em")
    temperature: float = option("sampling temperature for rollouts", 1.0)
    top_p: float = option("nucleus mass for rollouts", 1.0)

    def validate(self) -> None:
        if self.g1 < 1 or self.g2 < 1:
            raise MemtrainError(f"RolloutConfig: g1 and g2 must be >= 1, got g1={self.g1}, g2={self.g2}")
        if self.temperature <= 0:
            raise MemtrainError("RolloutConfig.temperature must be > 0: GRPO needs diverse samples per group")


@dataclass
class LossConfig:
    eps_low: float = option("lower clip: ratio >= 1 - eps_low", 0.2)
    eps_high: float = option("upper clip (DAPO clip-higher): ratio <= 1 + eps_high", 0.28)
    kl_coef: float = option("k3 KL coefficient to the frozen initial policy; 0 loads no reference", 1e-3)
    agg: Literal["seq-mean-token-mean", "token-mean"] = option(
        "loss aggregation (veRL's names): seq-mean-token-mean = token mean per conversation, averaged over "
        "conversations; token-mean = one mean over every token of the batch", "seq-mean-token-mean")
    adv_scale: Literal["none", "std"] = option("'none' = Dr. GRPO (R - mean); 'std' = GRPO (÷ std)", "none")
    dapo_filter: bool = option("drop groups whose rewards are all equal (DAPO dynamic sampling)", True)
    mask_truncated: bool = option("drop responses cut at the token budget from the loss", False)
    tis_cap: float | None = option(
        "truncated importance sampling between the engine's and the trainer's log-probs: weight each "
        "token by min(p_trainer / p_engine, tis_cap); None = off. Needs an engine that reports log-probs",
        None)


@dataclass
class OptimConfig:
    lr: float = option("AdamW peak learning rate", 1e-6)
    warmup_steps: int = option("linear warm-up steps from 0 to lr (then constant)", 0)
    weight_decay: float = option("AdamW weight decay", 0.0)
    betas: list[float] = option("AdamW betas", [0.9, 0.999])
    grad_clip: float = option("max global gradient norm (0 = no clipping)", 1.0)


@dataclass
class LogConfig:
    tensorboard: bool = option("write TensorBoard events to out_dir/tb", True)
    wandb: bool = option("log to Weights & Biases (needs `pip install wandb`)", False)
    wandb_project: str = option("wandb project name", "memtrain")
    progress: bool = option("show tqdm bars", True)


@dataclass
class TrainConfig:
    model: ModelConfig = option("policy model", factory=ModelConfig)
    data: DataConfig = option("training and held-out tasks", factory=DataConfig)
    agent: AgentConfig = option("memory-agent budgets (tokens)", factory=AgentConfig)
    search: SearchAgentConfig = option("searching agent (search-QA task sets only): turns, budgets, reward",
                                       factory=SearchAgentConfig)
    retriever: SearchConfig = option("search backend (search-QA task sets only): bm25/dense over a local "
                                     "corpus, or http (a MEM1/Search-R1 retrieval server)",
                                     factory=SearchConfig)
    engine: EngineConfig = option("rollout engine", factory=EngineConfig)
    rollout: RolloutConfig = option("sampling, group sizes and rewards", factory=RolloutConfig)
    loss: LossConfig = option("policy loss", factory=LossConfig)
    optim: OptimConfig = option("optimizer", factory=OptimConfig)
    log: LogConfig = option("logging", factory=LogConfig)
    steps: int = option("optimizer steps (one batch of documents each)", 300)
    batch_size: int = option("documents per step", 32)
    mini_batch_size: int | None = option(
        "documents per optimizer step (PPO mini-batch); batch_size / mini_batch_size steps per rollout "
        "batch and epoch (None: batch_size, one step)", None)
    micro_batch_size: int = option("conversations per forward/backward pass", 8)
    ppo_epochs: int = option("passes over each batch's rows (with one mini-batch and one epoch the ratio "
                             "is 1)", 1)
    bf16: bool = option("bf16 autocast for forward passes on GPUs and on CPUs with native bf16 "
                        "(AVX512-BF16/AMX; other CPUs compute in fp32); weights stay in model.dtype", True)
    gradient_checkpointing: bool = option("recompute activations in backward to save memory", True)
    seed: int = option("seed for data order, IMR choices, sampling and init", 0)
    out_dir: str = option("run folder: checkpoints, metrics.jsonl, tb/, final/", "runs/memtrain")
    save_every: int = option("write out_dir/checkpoint-<step> every this many steps (0: only at the end)",
                             50)
    keep_checkpoints: int = option("keep this many latest checkpoints (0 = all)", 2)
    eval_every: int = option("held-out proxy eval every this many steps (0 = only at start and end)", 0)
    eval_docs: int = option("held-out tasks per eval (greedy, one trajectory each; 0: no held-out eval)", 8)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "micro_batch_size", "ppo_epochs"):
            if getattr(self, name) < 1:
                raise MemtrainError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        mb = self.mini_batch_size
        if mb is not None and (mb < 1 or self.batch_size % mb):
            raise MemtrainError(f"TrainConfig.mini_batch_size={mb} must divide batch_size={self.batch_size}")
        if self.loss.tis_cap is not None and self.loss.tis_cap <= 0:
            raise MemtrainError(f"TrainConfig.loss.tis_cap must be > 0, got {self.loss.tis_cap}")
        if self.optim.lr <= 0:
            raise MemtrainError(f"TrainConfig.optim.lr must be > 0, got {self.optim.lr}")
        if self.loss.eps_low < 0 or self.loss.eps_high < 0 or self.loss.eps_low >= 1:
            raise MemtrainError("TrainConfig.loss: need 0 <= eps_low < 1 and eps_high >= 0")
        if self.loss.kl_coef < 0:
            raise MemtrainError(f"TrainConfig.loss.kl_coef must be >= 0, got {self.loss.kl_coef}")
        self.agent.validate()
        self.search.validate()
        self.rollout.validate()
        self.engine.validate()
        if not self.data.tasks_dir:
            raise MemtrainError("TrainConfig.data.tasks_dir is required: a task set built by `memtrain data "
                                "build` (e.g. data.tasks_dir=data/e2e_cpu)")
