"""The headline experiment: does memory pre-training (MemTrain) beat task training alone?

Six arms share the model, agent budgets, evaluation and seeds; each differs only in the stage under test:

    A  base model, no training
    B  MemTrain only (self-supervised E2E + IMR GRPO on Wikipedia E2E tasks)
    C  task RL only (long-document QA built from training questions disjoint from the eval questions:
       HotpotQA at the cpu scales, sentence-level SQuAD at micro)
    D  MemTrain (B's stage, reused) then the same task RL as C (same settings, same budget)
    E  ablation: MemTrain without IMR (rollout.imr: false), then the same task RL
    F  ablation: decoupled MemTrain (IMR answers trained in their own groups, but λ = 0: their reward is not
       folded into the E2E reward), then the same task RL

Commands (resumable: task sets are built once, training resumes from checkpoints, evaluation per question)::

    python experiments/headline.py run --arm {A,B,C,D,E,F} --seed S [--scale cpu|cpu_short|paper|...]
        [--steps-memtrain N --steps-task N] [--model NAME] [--set section.key=VALUE] [--threads N] [--dry-run]
    python experiments/headline.py report [--scale cpu]

The driver composes the recipes' own configs. An experiment file (experiments/configs/<scale>.yaml) is an
:class:`ExperimentConfig`: typed sections that are a :class:`~memtrain.recipes.build_tasks.BuildConfig` per
task set, a :class:`~memtrain.rl.config.TrainConfig` per training stage and the evaluation settings, each of
which may start from a packaged preset (``memtrain: {base: train/cpu_memtrain, steps: 8}``); a whole file
may start from another (``base: cpu``). Per-arm changes (seed, run folder, task-set paths, the starting
model of D, E and F, ``rollout.imr=false`` for E,
``rollout.lambda_imr=0`` for F) are ``dataclasses.replace`` calls on those typed configs.

Task sets, the only hand-off between stages, are built once per scale with ``memtrain data build``'s recipe
under ``experiments/runs/<scale>/_data/``, chunked with the experiment model's tokenizer:

    e2e         E2E tasks; MemTrain trains on all but the last ``memtrain.data.eval_size``, and every arm's
                proxy evaluation reads the first ``proxy_tasks`` of that held-out tail
    task_train  long-document QA, ``longqa.split=train`` (task RL of C, D, E, F)
    task_eval   the same questions file and split (``eval_fraction``, ``split_seed``), ``split=eval``: the
                evaluation of every arm (and the task stage's held-out evaluation)

A run writes experiments/runs/<scale>/<arm>/seed<S>/: ``config.json`` (the resolved experiment, task-set,
stage and evaluation configs, with the equivalent ``memtrain ...`` commands), ``run_info.json`` (wall clock
per stage, platform, CPU count, torch version), ``memtrain/`` and/or ``task/`` (training runs),
``eval/longqa/`` (results.jsonl + metrics.json per question and length, as ``memtrain eval`` writes them)
and ``eval/proxy/`` (held-out E2E/IMR accuracy). ``report`` aggregates every finished arm and seed into a
table (mean ± std over seeds) and a PNG, and rewrites the matching section of RESULTS.md.

Leakage control: the evaluation questions are ``split_questions(eval_fraction, seed=split_seed).eval``; the
task-RL set is built from the other side with ``exclude=split.eval_keys`` (memtrain.tasks.longqa), and both
sets must name the same file, fraction and split seed (checked at load), so no training seed moves the
split. ``scripts/check_overlap.py --headline SCALE`` proves the two task sets on disk disjoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from memtrain.agent.engines import EngineConfig
from memtrain.agent.loop import AgentConfig
from memtrain.config import option
from memtrain.errors import MemtrainError
from memtrain.recipes.build_tasks import BuildConfig
from memtrain.rl.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / "configs"
RUNS = Path(__file__).resolve().parent / "runs"
RESULTS_MD = ROOT / "RESULTS.md"
ARMS = ("A", "B", "C", "D", "E", "F")
ARM_LABELS = {
    "A": "A base",
    "B": "B MemTrain only",
    "C": "C task RL only",
    "D": "D MemTrain + task RL",
    "E": "E MemTrain (no IMR) + task RL",
    "F": "F MemTrain (decoupled IMR) + task RL",
}
# which training stages each arm runs, in order; (stage kind, owner arm of the stage's output folder)
STAGES: dict[str, list[tuple[str, str]]] = {
    "A": [],
    "B": [("memtrain", "B")],
    "C": [("task", "C")],
    "D": [("memtrain", "B"), ("task", "D")],
    "E": [("memtrain", "E"), ("task", "E")],
    "F": [("memtrain", "F"), ("task", "F")],
}
TASK_SETS = ("e2e", "task_train", "task_eval")  # folders under runs/<scale>/_data/


# ------------------------------------------------------------------------------------------ configuration


@dataclass
class HeadlineEvalConfig:
    """How every arm is evaluated (the fields of ``memtrain eval`` that are the same for every arm)."""

    engine: EngineConfig = option("generation engine of both evaluations", factory=EngineConfig)
    agent: AgentConfig = option("memory-agent budgets of the long-QA evaluation (the shared `agent` is laid "
                                "over them; chunk_tokens comes from the task set)", factory=AgentConfig)
    num_questions: int | None = option("evaluate only the first N questions (every length) of the task_eval "
                                       "set (None: all it holds)", None)
    batch_size: int = option("documents read together (turn-synchronous batching)", 16)
    temperature: float = option("0 = greedy", 0.0)
    top_p: float = option("nucleus sampling mass (temperature > 0)", 1.0)
    reward: Literal["strict_em", "sub_em", "f1"] = option(
        "proxy evaluation: the training reward reported beside strict EM", "strict_em")

    def validate(self) -> None:
        if self.batch_size < 1:
            raise MemtrainError(f"eval.batch_size must be >= 1, got {self.batch_size}")
        if self.num_questions is not None and self.num_questions < 1:
            raise MemtrainError(f"eval.num_questions must be >= 1, got {self.num_questions}")


@dataclass
class ExperimentConfig:
    """Everything the five arms share (experiments/configs/<scale>.yaml)."""

    scale: str = option("experiment name: the runs/<scale>/ folder (default: the file's name)", "cpu")
    model: str = option("base model of every stage and of arm A (smollm2, tiny, a hub id or a folder)",
                        "smollm2")
    threads: int | None = option("torch threads (None = torch default)", None)
    agent: AgentConfig = option("memory-agent budgets laid over every training stage and the evaluation, so "
                                "arms are comparable: only the fields the file sets apply; chunk_tokens, "
                                "when set, is also the chunk size of every task set", factory=AgentConfig)
    e2e_data: BuildConfig = option("the E2E task set (kind=e2e; out and tokenizer are set by the driver)",
                                   factory=BuildConfig)
    task_train_data: BuildConfig = option("task-RL training set (kind=longqa, split=train)",
                                          factory=BuildConfig)
    task_eval_data: BuildConfig = option("evaluation set (kind=longqa, split=eval; same file, eval_fraction "
                                         "and split_seed as task_train_data)", factory=BuildConfig)
    memtrain: TrainConfig = option("MemTrain stage of arms B, D, E, F (data.tasks_dir, seed, out_dir and "
                                   "model.name are set per arm)", factory=TrainConfig)
    task: TrainConfig = option("task-RL stage of arms C, D, E, F (equal budget for all four)",
                               factory=TrainConfig)
    eval: HeadlineEvalConfig = option("evaluation of every arm", factory=HeadlineEvalConfig)
    proxy_tasks: int = option("proxy evaluation: the first N tasks of the E2E set's held-out tail "
                              "(at most memtrain.data.eval_size; 0 = no proxy evaluation)", 16)

    def validate(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise MemtrainError(f"threads must be >= 1 or null, got {self.threads}")
        if not 0 <= self.proxy_tasks <= self.memtrain.data.eval_size:
            raise MemtrainError(f"proxy_tasks={self.proxy_tasks} must be in [0, memtrain.data.eval_size="
                                f"{self.memtrain.data.eval_size}]: the proxy tasks are the E2E tasks "
                                "MemTrain holds out")
        tr, ev = self.task_train_data.longqa, self.task_eval_data.longqa
        for name in ("source", "eval_fraction", "split_seed"):
            if getattr(tr, name) != getattr(ev, name):
                raise MemtrainError(f"task_train_data.longqa.{name}={getattr(tr, name)!r} but "
                                    f"task_eval_data.longqa.{name}={getattr(ev, name)!r}: both sides must "
                                    "come from the same question split")
        if _abs(str(tr.data_path())) != _abs(str(ev.data_path())):
            raise MemtrainError(f"task_train_data.longqa.path={tr.data_path()} but task_eval_data.longqa."
                                f"path={ev.data_path()}: both sides must split the same questions file")


def experiment_file(scale: str) -> Path:
    path = Path(scale)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = CONFIGS / f"{scale.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
        raise MemtrainError(f"--scale {scale!r}: no experiments/configs/{scale}.yaml; choose one of {names}")
    return path


def experiment_dict(scale: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The raw mapping of an experiment file, with a top-level ``base: OTHER`` (another experiment file)
    merged under it; section bases (``base: train/cpu_memtrain``) are left for :func:`resolve_bases`."""
    from memtrain.config import load_yaml, merge

    path = experiment_file(scale)
    if str(path) in seen:
        raise MemtrainError(f"base: {scale!r} includes itself ({' -> '.join(seen)})")
    data = load_yaml(path)
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise MemtrainError(f"{path}: base: expected an experiment name, got {base!r}")
        data = merge(experiment_dict(base, (*seen, str(path))), data)
    return data


def load_experiment(scale: str, sets: list[str] = (), model: str | None = None,  # type: ignore[assignment]
                    steps_memtrain: int | None = None, steps_task: int | None = None) -> ExperimentConfig:
    """The :class:`ExperimentConfig` of ``scale`` (a file in experiments/configs or a path), with ``--set``
    overrides (``key.sub=value`` on the raw mapping, before section bases are expanded and types checked)."""
    from memtrain.config import apply_overrides, from_dict, resolve_bases

    data = {"scale": experiment_file(scale).stem, **experiment_dict(scale)}
    extra = [f"model={model}"] if model else []
    extra += [f"memtrain.steps={steps_memtrain}"] if steps_memtrain is not None else []
    extra += [f"task.steps={steps_task}"] if steps_task is not None else []
    data = resolve_bases(apply_overrides(data, [*sets, *extra]), "experiments")
    exp = from_dict(ExperimentConfig, data, "experiment")
    shared = sorted((data.get("agent") or {}).keys())  # only what the file (or --set) says is shared
    return share_agent(exp, shared)


def share_agent(exp: ExperimentConfig, fields: list[str]) -> ExperimentConfig:
    """``exp.agent``'s ``fields`` laid over the agent of both stages and of the evaluation."""
    over = {k: getattr(exp.agent, k) for k in fields}

    def lay(agent: AgentConfig) -> AgentConfig:
        return dataclasses.replace(agent, **over)

    return dataclasses.replace(
        exp,
        memtrain=dataclasses.replace(exp.memtrain, agent=lay(exp.memtrain.agent)),
        task=dataclasses.replace(exp.task, agent=lay(exp.task.agent)),
        eval=dataclasses.replace(exp.eval, agent=lay(exp.eval.agent)),
    )


def _abs(path: str) -> str:
    """Data paths in configs are relative to the repository root (``../shared/data/...``)."""
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (ROOT / p).resolve())


def scale_dir(exp: ExperimentConfig, runs: Path = RUNS) -> Path:
    return runs / exp.scale


def run_dir(exp: ExperimentConfig, arm: str, seed: int, runs: Path = RUNS) -> Path:
    return scale_dir(exp, runs) / arm / f"seed{seed}"


def data_dir(exp: ExperimentConfig, name: str, runs: Path = RUNS) -> Path:
    """A task set of the scale, shared by every arm and seed (its builder is seeded on its own)."""
    return scale_dir(exp, runs) / "_data" / name


def e2e_dir(exp: ExperimentConfig, runs: Path = RUNS) -> Path:
    return data_dir(exp, "e2e", runs)


def data_configs(exp: ExperimentConfig, runs: Path = RUNS, progress: bool = True) -> dict[str, BuildConfig]:
    """The resolved build config of each task set: its folder, the experiment model's tokenizer, the shared
    chunk size, absolute source paths, and the split side of the long-QA sets."""
    rp = dataclasses.replace
    tok = exp.model  # chunks counted with the model's own tokenizer
    chunk = exp.agent.chunk_tokens
    e = exp.e2e_data
    corpus = e.corpus if e.corpus == "embedded" or e.corpus.startswith("hf:") else _abs(e.corpus)
    out = {"e2e": rp(e, kind="e2e", out=str(data_dir(exp, "e2e", runs)), tokenizer=tok, corpus=corpus,
                     progress=progress, e2e=rp(e.e2e, chunk_tokens=chunk or e.e2e.chunk_tokens))}
    for name, cfg, split in (("task_train", exp.task_train_data, "train"),
                             ("task_eval", exp.task_eval_data, "eval")):
        lq = rp(cfg.longqa, split=split, path=_abs(str(cfg.longqa.data_path())),
                chunk_tokens=chunk or cfg.longqa.chunk_tokens)
        out[name] = rp(cfg, kind="longqa", out=str(data_dir(exp, name, runs)), tokenizer=tok, longqa=lq,
                       progress=progress)
    if out["task_train"].longqa.chunk_tokens != out["task_eval"].longqa.chunk_tokens:
        raise MemtrainError(f"task_train_data.longqa.chunk_tokens={out['task_train'].longqa.chunk_tokens} "
                            f"but task_eval_data.longqa.chunk_tokens={out['task_eval'].longqa.chunk_tokens}; "
                            "the task stage reads both: set agent.chunk_tokens to give every task set one "
                            "size")
    for c in out.values():
        c.validate()
    return out


def chunk_tokens_of(cfg: BuildConfig) -> int:
    return cfg.e2e.chunk_tokens if cfg.kind == "e2e" else cfg.longqa.chunk_tokens


def stage_config(exp: ExperimentConfig, kind: str, arm: str, seed: int, runs: Path = RUNS) -> TrainConfig:
    """The resolved :class:`~memtrain.rl.config.TrainConfig` of one stage of one arm."""
    rp = dataclasses.replace
    base = exp.memtrain if kind == "memtrain" else exp.task
    sets = data_configs(exp, runs)
    if kind == "memtrain":
        # MemTrain holds out the tail of the E2E set (never an eval_tasks_dir): the proxy evaluates on it
        data = rp(base.data, tasks_dir=sets["e2e"].out, eval_tasks_dir=None)
        rollout = {"E": rp(base.rollout, imr=False),
                   "F": rp(base.rollout, lambda_imr=0.0)}.get(arm, base.rollout)
        init_from = base.model.init_from
        chunk = chunk_tokens_of(sets["e2e"])
    else:
        data = rp(base.data, tasks_dir=sets["task_train"].out, eval_tasks_dir=sets["task_eval"].out)
        rollout = base.rollout
        owner = {"D": "B", "E": "E", "F": "F"}.get(arm)
        init_from = str(run_dir(exp, owner, seed, runs) / "memtrain" / "final") if owner else None
        chunk = chunk_tokens_of(sets["task_train"])
    agent = base.agent
    if agent.chunk_tokens is None:  # adopt the task set's explicitly, so config.json says what was run
        agent = rp(agent, chunk_tokens=chunk)
    elif agent.chunk_tokens != chunk:
        raise MemtrainError(f"{kind}.agent.chunk_tokens={agent.chunk_tokens} but its task set is built "
                            f"with chunk_tokens={chunk}; set agent.chunk_tokens once, for every stage and "
                            "task set")
    cfg = rp(base, model=rp(base.model, name=exp.model, init_from=init_from), data=data, rollout=rollout,
             agent=agent, seed=seed, out_dir=str(run_dir(exp, arm, seed, runs) / kind))
    cfg.validate()
    return cfg


def evaluated_model(exp: ExperimentConfig, arm: str, seed: int, runs: Path = RUNS) -> str:
    """What an arm evaluates: the base model (A) or the final model of its last stage."""
    stages = STAGES[arm]
    if not stages:
        return exp.model
    kind, owner = stages[-1]
    return str(run_dir(exp, owner, seed, runs) / kind / "final")


def eval_config(exp: ExperimentConfig, arm: str, seed: int, runs: Path = RUNS, progress: bool = True) -> Any:
    """The long-QA evaluation of one arm, as ``memtrain eval``'s
    :class:`~memtrain.recipes.evaluate.EvalConfig`."""
    from memtrain.recipes.evaluate import EvalConfig

    ev = exp.eval
    cfg = EvalConfig(model=evaluated_model(exp, arm, seed, runs),
                     tasks_dir=str(data_dir(exp, "task_eval", runs)),
                     out=str(run_dir(exp, arm, seed, runs) / "eval" / "longqa"), engine=ev.engine,
                     agent=ev.agent, num_questions=ev.num_questions, batch_size=ev.batch_size,
                     temperature=ev.temperature, top_p=ev.top_p, seed=seed, reward=ev.reward,
                     label=ARM_LABELS[arm], progress=progress)
    cfg.validate()
    return cfg


def proxy_settings(exp: ExperimentConfig, arm: str, seed: int, runs: Path = RUNS) -> dict[str, Any]:
    """The proxy evaluation: the MemTrain stage's agent (the budgets its held-out evaluation uses) on the
    first ``proxy_tasks`` of the E2E set's held-out tail."""
    from memtrain.config import to_dict

    agent = stage_config(exp, "memtrain", "B", seed, runs).agent
    return {"tasks_dir": str(e2e_dir(exp, runs)), "held_out_tail": exp.memtrain.data.eval_size,
            "n_tasks": exp.proxy_tasks, "agent": to_dict(agent),
            "reward": exp.eval.reward, "temperature": exp.eval.temperature, "seed": seed,
            "out": str(run_dir(exp, arm, seed, runs) / "eval" / "proxy")}


def needed_sets(exp: ExperimentConfig, arm: str) -> list[str]:
    kinds = {kind for kind, _ in STAGES[arm]}
    names = ["e2e"] if "memtrain" in kinds or exp.proxy_tasks > 0 else []
    return [*names, *(["task_train"] if "task" in kinds else []), "task_eval"]


# ------------------------------------------------------------------------------------ equivalent commands


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _value(v: Any) -> str:
    """A value the CLI reads back exactly (``parse_value``): plain strings bare, anything else as JSON."""
    from memtrain.config import parse_value

    if isinstance(v, str) and parse_value(v) == v:
        return v
    return json.dumps(v, separators=(",", ":"))


def command(verb: str, recipe: str, cfg: Any) -> str:
    """The ``memtrain <verb> [PRESET] key=value ...`` line that loads exactly ``cfg``: the packaged preset
    (or none) that needs the fewest overrides, plus every field that differs from it."""
    from memtrain.config import from_dict, load_yaml, preset_names, preset_path, resolve_bases, to_dict

    want = _flatten(to_dict(cfg))
    best: tuple[str | None, list[str]] | None = None
    for preset in [None, *preset_names(recipe)]:
        try:
            base = type(cfg)() if preset is None else \
                from_dict(type(cfg), resolve_bases(load_yaml(preset_path(recipe, preset)), recipe))
        except MemtrainError:
            continue
        have = _flatten(to_dict(base))
        sets = [f"{k}={_value(v)}" for k, v in want.items() if k not in have or have[k] != v]
        if best is None or len(sets) < len(best[1]):
            best = (preset, sets)
    assert best is not None
    parts = ["memtrain", *verb.split(), *([best[0]] if best[0] else []), *best[1]]
    return " ".join(shlex.quote(p) for p in parts)


def resolve(exp: ExperimentConfig, arm: str, seed: int, runs: Path = RUNS) -> dict[str, Any]:
    """Everything one run will do, as plain data (written to config.json, printed by --dry-run)."""
    from memtrain.config import to_dict

    sets = data_configs(exp, runs)
    stages = []
    for kind, owner in STAGES[arm]:
        cfg = stage_config(exp, kind, owner, seed, runs)
        stages.append({"kind": kind, "owner": owner, "reused": owner != arm, "config": to_dict(cfg),
                       "command": command("train", "train", cfg)})
    ev = eval_config(exp, arm, seed, runs)
    return {
        "arm": arm, "label": ARM_LABELS[arm], "seed": seed, "scale": exp.scale, "experiment": to_dict(exp),
        "data": {name: {"config": to_dict(sets[name]), "command": command("data build", "data", sets[name])}
                 for name in needed_sets(exp, arm)},
        "stages": stages,
        "eval": {"model": ev.model, "longqa": {"config": to_dict(ev), "command": command("eval", "eval", ev)},
                 "proxy": proxy_settings(exp, arm, seed, runs) if exp.proxy_tasks > 0 else None},
    }


# ------------------------------------------------------------------------------------------------ data


def taskset_ready(cfg: BuildConfig) -> bool:
    """True when ``cfg.out`` holds a complete build of this very config (cheap: no corpus read, no hashing;
    anything else goes to the builder, which resumes it or refuses another configuration)."""
    from memtrain.tasks.taskset import read_manifest

    try:
        m = read_manifest(cfg.out)
    except MemtrainError:
        return False
    same = m.config == json.loads(json.dumps(cfg.identity()))
    sources = all(Path(s.path).is_file() and Path(s.path).stat().st_size == s.bytes for s in m.sources)
    return m.complete and same and sources


def ensure_taskset(cfg: BuildConfig) -> Path:
    """Build (or resume) a task set unless it is already complete with this config."""
    from memtrain.recipes.build_tasks import build

    if not taskset_ready(cfg):
        try:
            build(cfg)
        except MemtrainError as e:
            raise MemtrainError(f"{e} (task sets are shared by every arm of a scale: use the same settings, "
                                "or another --runs-dir for a new experiment)") from None
    return Path(cfg.out)


def ensure_tasksets(exp: ExperimentConfig, names: list[str], runs: Path = RUNS, progress: bool = True
                    ) -> dict[str, Path]:
    sets = data_configs(exp, runs, progress)
    return {name: ensure_taskset(sets[name]) for name in names}


# ------------------------------------------------------------------------------------------------- run


def hardware() -> dict[str, Any]:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _stage_done(cfg: TrainConfig) -> bool:
    """True when the stage's final model exists and was written by this very config.

    A stage folder written with *other* settings is refused (e.g. D asking for a longer MemTrain stage
    than B ran): resuming would silently change the model another arm was evaluated with.
    """
    from memtrain.config import to_dict

    out = Path(cfg.out_dir)
    if not (out / "config.json").is_file():
        return False
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    now = json.loads(json.dumps(to_dict(cfg)))
    if saved != now:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise MemtrainError(f"{out} holds a training run with other settings (differs in: "
                            f"{', '.join(diff)}); use the same settings to resume it, or another --runs-dir "
                            "for a new experiment")
    return (out / "final").is_dir()


def evaluate_longqa(engine: Any, cfg: Any) -> dict[str, Any]:
    """``memtrain eval`` (:func:`memtrain.recipes.evaluate.evaluate`) on a long-QA task set, on an engine the
    proxy evaluation shares: same checks, config.json, run info, results and report as the recipe."""
    from memtrain.agent.engine import Sampling
    from memtrain.config import to_dict
    from memtrain.eval.report import write_report
    from memtrain.eval.runner import evaluate
    from memtrain.io import write_json
    from memtrain.recipes.evaluate import first_questions
    from memtrain.tasks.taskset import agent_for, check_tokenizer, open_taskset

    ts = open_taskset(cfg.tasks_dir)
    if ts.manifest.kind != "longqa":
        raise MemtrainError(f"{cfg.tasks_dir}: expected a long-QA task set, found {ts.manifest.kind}")
    agent = agent_for(cfg.agent, ts, "EvalConfig")
    check_tokenizer(engine.tokenizer, ts, cfg.model, "EvalConfig")
    cfg = dataclasses.replace(cfg, agent=agent)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", to_dict(cfg))
    run_info = {"model": cfg.model, "engine": cfg.engine.kind, "tasks_dir": str(ts.path),
                "task_set": ts.manifest.config_hash, "seed": cfg.seed, "temperature": cfg.temperature,
                "top_p": cfg.top_p}
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    m = evaluate(engine, first_questions(ts.tasks, cfg.num_questions), agent, sampling, out,
                 batch_size=cfg.batch_size, resume=cfg.resume, label=f"{cfg.label} memory agent",
                 run_info=run_info, trace=cfg.trace, progress=cfg.progress)
    source = ts.manifest.config.get("longqa", {}).get("source", "long QA")
    write_report([out / "metrics.json"], out, title=f"{source}: accuracy vs context length ({cfg.model})")
    return m


def evaluate_proxy_tail(engine: Any, exp: ExperimentConfig, arm: str, seed: int, runs: Path = RUNS,
                        progress: bool = True) -> dict[str, Any]:
    """E2E/IMR accuracy on the first ``proxy_tasks`` of the E2E set's held-out tail."""
    from memtrain.eval.proxy import evaluate_proxy
    from memtrain.tasks.taskset import agent_for, check_tokenizer, open_taskset

    p = proxy_settings(exp, arm, seed, runs)
    ts = open_taskset(p["tasks_dir"])
    model = evaluated_model(exp, arm, seed, runs)
    check_tokenizer(engine.tokenizer, ts, model, "headline proxy eval")
    agent = agent_for(stage_config(exp, "memtrain", "B", seed, runs).agent, ts, "memtrain")
    held = ts.tasks[-p["held_out_tail"]:][: p["n_tasks"]]
    return evaluate_proxy(engine, held, agent, p["out"], reward=p["reward"], temperature=p["temperature"],
                          seed=seed, batch_size=exp.eval.batch_size, label=ARM_LABELS[arm],
                          run_info={"arm": arm, "seed": seed, "model": model, "tasks_dir": p["tasks_dir"],
                                    "task_set": ts.manifest.config_hash, "tail": p["held_out_tail"]},
                          progress=progress)


def run_arm(exp: ExperimentConfig, arm: str, seed: int, runs: Path = RUNS, progress: bool = True) -> Path:
    """Build the task sets (once per scale), train (resuming) and evaluate (resuming) one arm × seed."""
    import torch

    from memtrain.agent.engines import build_engine
    from memtrain.io import write_json
    from memtrain.recipes.train import train

    if exp.threads:
        torch.set_num_threads(exp.threads)
    out = run_dir(exp, arm, seed, runs)
    # every config is checked, and stage folders with other settings refused, before anything is written
    resolved = resolve(exp, arm, seed, runs)
    for kind, owner in STAGES[arm]:
        _stage_done(stage_config(exp, kind, owner, seed, runs))
    t0 = time.perf_counter()
    ensure_tasksets(exp, needed_sets(exp, arm), runs, progress)  # refuses a task set built otherwise
    build_s = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", resolved)
    info_path = out / "run_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    info["hardware"] = hardware()
    info.setdefault("wall_s", {})

    def record(key: str, seconds: float) -> None:
        info["wall_s"][key] = round(info["wall_s"].get(key, 0.0) + seconds, 1)
        write_json(info_path, info)

    record("data_build", build_s)

    for kind, owner in STAGES[arm]:
        cfg = stage_config(exp, kind, owner, seed, runs)
        if _stage_done(cfg):
            print(f"headline: {kind} stage of arm {owner} seed {seed} already done: {cfg.out_dir}/final")
            continue
        print(f"headline: training {kind} stage of arm {owner} seed {seed} -> {cfg.out_dir}")
        t0 = time.perf_counter()
        train(cfg)
        record(f"train_{kind}" + ("" if owner == arm else f"_reused_from_{owner}"), time.perf_counter() - t0)

    t0 = time.perf_counter()
    ev = eval_config(exp, arm, seed, runs, progress)
    engine = build_engine(ev.engine, ev.model)
    evaluate_longqa(engine, ev)
    record("eval_longqa", time.perf_counter() - t0)
    if exp.proxy_tasks > 0:
        t0 = time.perf_counter()
        evaluate_proxy_tail(engine, exp, arm, seed, runs, progress)
        record("eval_proxy", time.perf_counter() - t0)
    info["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(info_path, info)
    return out


# ---------------------------------------------------------------------------------------------- report


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _cell(xs: list[float]) -> str:
    if not xs:
        return "–"
    m, s = _mean_std([100 * x for x in xs])
    return f"{m:.1f} ± {s:.1f}" if len(xs) > 1 else f"{m:.1f}"


def collect(scale: str, runs: Path = RUNS) -> dict[str, dict[int, dict[str, Any]]]:
    """{arm: {seed: {"longqa", "proxy" (or None), "info", "training": {stage: metrics}}}}, finished runs."""
    from memtrain.io import read_jsonl_tolerant

    found: dict[str, dict[int, dict[str, Any]]] = {}
    for arm in ARMS:
        for d in sorted((runs / scale / arm).glob("seed*")):
            m = d / "eval" / "longqa" / "metrics.json"
            if not m.is_file() or not d.name[4:].isdigit():
                continue
            proxy = d / "eval" / "proxy" / "metrics.json"
            info = d / "run_info.json"
            found.setdefault(arm, {})[int(d.name[4:])] = {
                "longqa": json.loads(m.read_text(encoding="utf-8")),
                "proxy": json.loads(proxy.read_text(encoding="utf-8")) if proxy.is_file() else None,
                "info": json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {},
                "training": {kind: read_jsonl_tolerant(d / kind / "metrics.jsonl")
                             for kind in ("memtrain", "task") if (d / kind / "metrics.jsonl").is_file()},
            }
    return found


def training_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What a stage's metrics.jsonl says about its learning signal (the step-0 check of the issue)."""
    steps = [r for r in rows if r.get("step", 0) > 0 and "reward/coupled" in r]
    evals = [r for r in rows if "eval/coupled" in r]
    groups = sum(r.get("groups/e2e", 0) + r.get("groups/imr", 0) for r in steps)
    dropped = sum(r.get("groups/e2e_dropped", 0) + r.get("groups/imr_dropped", 0) for r in steps)
    return {
        "steps": len(steps),
        "reward_first": steps[0]["reward/coupled"] if steps else None,
        "reward_mean": statistics.fmean(r["reward/coupled"] for r in steps) if steps else None,
        "groups_with_signal": f"{groups - dropped:.0f}/{groups:.0f}",
        "updates": sum(1 for r in steps if not r.get("update/skipped")),
        "kl_last": steps[-1].get("loss/kl") if steps else None,
        "held_out": (evals[0]["eval/coupled"], evals[-1]["eval/coupled"]) if len(evals) > 1 else None,
        "step_s": statistics.median(r["time/step_s"] for r in steps) if steps else None,
    }


def training_lines(found: dict[str, dict[int, dict[str, Any]]]) -> str:
    """Per trained stage: rewards, groups with any signal (DAPO keeps only those), updates, held-out."""
    rows = ["| arm | seed | stage | steps | reward step 1 | reward mean | groups with signal | updates | "
            "KL last | held-out reward start → end | median s / step |", "|" + "---|" * 11]
    for arm in ARMS:
        for seed, r in sorted(found.get(arm, {}).items()):
            for kind, metrics in r.get("training", {}).items():
                t = training_summary(metrics)
                if not t["steps"]:
                    continue
                held = f"{t['held_out'][0]:.3f} → {t['held_out'][1]:.3f}" if t["held_out"] else "–"
                rows.append(f"| {arm} | {seed} | {kind} | {t['steps']} | {t['reward_first']:.3f} | "
                            f"{t['reward_mean']:.3f} | {t['groups_with_signal']} | {t['updates']} | "
                            f"{t['kl_last']:.1e} | {held} | {t['step_s']:.0f} |")
    return "\n".join(rows) + "\n" if len(rows) > 2 else ""


def _avg_over_lengths(metrics: dict[str, Any], key: str) -> float | None:
    vals = [g[key] for g in metrics["by_length"].values() if g.get(key) is not None]
    return statistics.fmean(vals) if vals else None


def report_table(found: dict[str, dict[int, dict[str, Any]]]) -> str:
    """Markdown: arms × context lengths (accuracy %, mean ± std over seeds) + proxy E2E/IMR."""
    keys = {k for seeds in found.values() for r in seeds.values() for k in r["longqa"]["by_length"]}
    lengths = sorted(keys, key=lambda k: int(k) if k.isdigit() else 1 << 60)
    head = ["arm", "seeds", *[f"{n} docs" for n in lengths], "avg", "avg EM", "avg F1", "proxy E2E",
            "proxy IMR"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in ARMS:
        if arm not in found:
            continue
        runs = list(found[arm].values())
        cells = [ARM_LABELS[arm], ",".join(str(s) for s in sorted(found[arm]))]
        for n in lengths:
            cells.append(_cell([r["longqa"]["by_length"][n]["accuracy"] for r in runs
                                if n in r["longqa"]["by_length"]
                                and r["longqa"]["by_length"][n]["accuracy"] is not None]))
        cells.append(_cell([r["longqa"]["average_over_lengths"] for r in runs
                            if r["longqa"].get("average_over_lengths") is not None]))
        for key in ("em", "f1"):  # beside sub-EM, which also pays for a gold string inside a wrong answer
            cells.append(_cell([_avg_over_lengths(r["longqa"], key) for r in runs
                                if _avg_over_lengths(r["longqa"], key) is not None]))
        for key in ("e2e_accuracy", "imr_accuracy"):
            vals = [r["proxy"][key] for r in runs if r["proxy"] and r["proxy"].get(key) is not None]
            cells.append(_cell(vals))
        lines.append("| " + " | ".join(cells) + " |")
    n_q = {arm: sorted({r["longqa"]["overall"]["n"] for r in seeds.values()}) for arm, seeds in found.items()}
    tokens = []
    for n in lengths:
        toks = [r["longqa"]["by_length"][n]["mean_tokens"] for s in found.values() for r in s.values()
                if n in r["longqa"]["by_length"] and r["longqa"]["by_length"][n].get("mean_tokens")]
        if toks:
            tokens.append(f"{n} docs ≈ {statistics.fmean(toks):.0f} tokens")
    return ("\n".join(lines) + "\n\nAccuracy = each run's headline metric (%; MemAgent's two-way substring "
            "match since the faithful-evaluation change, sub-EM in runs made before it) on the held-out "
            "long-document QA questions (the scale's task_eval set), "
            "greedy; mean ± std over seeds (one seed: no ±); avg EM / F1: the same answers scored by exact "
            "match / token F1, averaged over lengths. Proxy = strict EM on held-out E2E tasks and one "
            f"IMR probe per task. Rows per run (questions × lengths): {n_q}. Context: {'; '.join(tokens)}.\n")


# two-sided 95 % quantiles of Student's t by degrees of freedom (a paired difference over n seeds has n - 1)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def paired(found: dict[str, dict[int, dict[str, Any]]], x: str, y: str, length: str | None = None
           ) -> dict[str, Any] | None:
    """``x − y`` of the averaged (or one ``length``'s) accuracy, paired by seed: mean, sd and a 95 % t
    interval over the seeds both arms finished (arm A, the untrained base, pairs with every seed)."""
    def acc(r: dict[str, Any]) -> float | None:
        m = r["longqa"]
        if length is None:
            return m.get("average_over_lengths")
        return m["by_length"].get(length, {}).get("accuracy")

    xs, ys = found.get(x, {}), found.get(y, {})
    seeds = sorted(set(xs) & set(ys)) if y != "A" else sorted(xs)
    base = next(iter(ys.values()), None) if y == "A" else None
    diffs = []
    for s in seeds:
        a, b = acc(xs[s]), acc(base if base is not None else ys[s])
        if a is not None and b is not None:
            diffs.append(a - b)
    if not diffs:
        return None
    mean, sd = _mean_std(diffs)
    half = T95.get(len(diffs) - 1, 1.96) * sd / len(diffs) ** 0.5 if len(diffs) > 1 else None
    return {"x": x, "y": y, "length": length, "seeds": seeds, "diffs": diffs, "mean": mean, "sd": sd,
            "ci95": None if half is None else [mean - half, mean + half]}


COMPARISONS = (("D", "C", "MemTrain before task RL vs task RL alone (the paper's claim)"),
               ("B", "A", "MemTrain alone vs the base model (no labels)"),
               ("D", "E", "IMR's share: MemTrain with vs without IMR, both then task RL"),
               ("D", "F", "coupled vs decoupled IMR, both then task RL"))


def summary(found: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """The JSON behind the table: per arm, per seed, per length (accuracy, EM, F1, n), the paired
    comparisons and each arm's drop from the shortest to the longest length."""
    arms: dict[str, Any] = {}
    for arm, seeds in found.items():
        per_seed = {}
        for seed, r in sorted(seeds.items()):
            m = r["longqa"]
            per_seed[str(seed)] = {
                "average_accuracy": m.get("average_over_lengths"),
                "by_length": {n: {k: g.get(k) for k in ("accuracy", "em", "f1", "n", "mean_tokens")}
                              for n, g in m["by_length"].items()},
                "proxy": r["proxy"] and {k: r["proxy"].get(k) for k in ("e2e_accuracy", "imr_accuracy")},
            }
        lengths = sorted({n for v in per_seed.values() for n in v["by_length"]}, key=int)
        drops = [v["by_length"][lengths[0]]["accuracy"] - v["by_length"][lengths[-1]]["accuracy"]
                 for v in per_seed.values() if v["by_length"].get(lengths[0], {}).get("accuracy") is not None
                 and v["by_length"].get(lengths[-1], {}).get("accuracy") is not None]
        arms[arm] = {"label": ARM_LABELS[arm], "seeds": per_seed,
                     "drop_shortest_to_longest": {"lengths": [lengths[0], lengths[-1]], "per_seed": drops,
                                                  "mean": statistics.fmean(drops) if drops else None}}
    lengths = sorted({n for a in arms.values() for v in a["seeds"].values() for n in v["by_length"]}, key=int)
    comparisons = []
    for x, y, what in COMPARISONS:
        for length in (None, *lengths):
            c = paired(found, x, y, length)
            if c:
                comparisons.append({**c, "what": what})
    return {"arms": arms, "comparisons": comparisons}


def comparison_lines(s: dict[str, Any]) -> str:
    """Markdown: each paired comparison, averaged over lengths (points of accuracy)."""
    rows = ["| comparison | seeds | per seed | mean | 95 % interval |", "|---|---|---|---|---|"]
    for c in s["comparisons"]:
        if c["length"] is not None:
            continue
        ci = "–" if c["ci95"] is None else f"[{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]"
        rows.append(f"| {c['x']} − {c['y']}: {c['what']} | {','.join(map(str, c['seeds']))} | "
                    f"{', '.join(f'{100 * d:+.1f}' for d in c['diffs'])} | {100 * c['mean']:+.1f} | {ci} |")
    drops = [f"{arm} {100 * a['drop_shortest_to_longest']['mean']:.1f}" for arm, a in s["arms"].items()
             if a["drop_shortest_to_longest"]["mean"] is not None]
    return ("\n".join(rows) + "\n\nDrop from the shortest to the longest length (points, mean over seeds): "
            + "; ".join(drops) + ".\n") if len(rows) > 2 else ""


def plot(found: dict[str, dict[int, dict[str, Any]]], path: Path, title: str) -> Path:
    """Accuracy vs context length, one line per arm (seed means), via memtrain.eval.report."""
    from memtrain.eval.report import plot_accuracy

    series = []
    for arm in ARMS:
        if arm not in found:
            continue
        runs = list(found[arm].values())
        by_length = {}
        for n in {k for r in runs for k in r["longqa"]["by_length"]}:
            groups = [r["longqa"]["by_length"][n] for r in runs if n in r["longqa"]["by_length"]]
            accs = [g["accuracy"] for g in groups if g["accuracy"] is not None]
            toks = [g["mean_tokens"] for g in groups if g.get("mean_tokens")]
            by_length[n] = {"accuracy": statistics.fmean(accs) if accs else None,
                            "accuracy_sd": statistics.stdev(accs) if len(accs) > 1 else None,
                            "samples": len(accs), "n": sum(g["n"] for g in groups),
                            "mean_tokens": statistics.fmean(toks) if toks else None}
        series.append({"label": ARM_LABELS[arm], "by_length": by_length})
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_accuracy(series, path, title=title, samples_are="seeds (n = questions × seeds)")
    path.chmod(0o644)  # the atomic writer's temp file is private; the plot is meant to be shared
    return path


def hardware_lines(found: dict[str, dict[int, dict[str, Any]]]) -> str:
    rows = ["| arm | seed | wall clock (s) | hardware |", "|---|---|---|---|"]
    for arm in ARMS:
        for seed, r in sorted(found.get(arm, {}).items()):
            hw = r["info"].get("hardware", {})
            wall = ", ".join(f"{k} {v}" for k, v in r["info"].get("wall_s", {}).items())
            desc = (f"{hw.get('platform', '?')}, {hw.get('cpu_count', '?')} CPUs, "
                    f"torch {hw.get('torch', '?')}, "
                    f"{hw.get('torch_threads', '?')} threads" + (f", {hw['gpu']}" if hw.get("gpu") else ""))
            rows.append(f"| {arm} | {seed} | {wall} | {desc} |")
    return "\n".join(rows) + "\n"


def replace_section(text: str, name: str, body: str) -> str:
    """Replace what lies between ``<!-- name:begin -->`` and ``<!-- name:end -->`` (appended if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        return pre + block + rest.split(end, 1)[1]
    return text.rstrip() + "\n\n" + block + "\n"


def report(scale: str, runs: Path = RUNS, results_md: Path = RESULTS_MD, png: Path | None = None) -> str:
    """Aggregate finished runs of ``scale``; write the PNG and RESULTS.md's section; return the markdown."""
    from memtrain.io import atomic_open, write_json

    found = collect(scale, runs)
    if not found:
        raise MemtrainError(f"no finished evaluation under {runs / scale}/<arm>/seed<S>/eval/longqa; run "
                            f"`python experiments/headline.py run --arm A --seed 0 --scale {scale}` first")
    png = png or (Path(__file__).resolve().parent / "results" / f"headline_{scale}.png")
    plot(found, png, f"headline ({scale}): accuracy vs context length")
    try:
        rel = png.resolve().relative_to(results_md.resolve().parent)
    except ValueError:
        rel = png
    train = training_lines(found)
    s = summary(found)
    write_json(png.with_suffix(".json"), s)
    body = (f"{report_table(found)}\n![accuracy vs context length]({rel})\n\n"
            + (f"Paired by seed (points of averaged accuracy; `{png.with_suffix('.json').name}` has every "
               f"length):\n\n{comparison_lines(s)}\n" if comparison_lines(s) else "")
            + (f"Training stages (sampled rollouts; reward = the stage's training reward):\n\n{train}\n"
               if train else "")
            + f"Runs and hardware:\n\n{hardware_lines(found)}")
    text = results_md.read_text(encoding="utf-8") if results_md.is_file() else "# Results\n"
    with atomic_open(results_md) as f:
        f.write(replace_section(text, f"headline:{scale}", body))
    return body


# ------------------------------------------------------------------------------------------------- CLI


def dry_run(exp: ExperimentConfig, arm: str, seed: int, runs: Path) -> None:
    """Print the resolved configs and the equivalent ``memtrain`` commands; writes nothing."""
    resolved = resolve(exp, arm, seed, runs)
    print(json.dumps(resolved, indent=2, sort_keys=True, default=str))
    for name, d in resolved["data"].items():
        print(f"# task set {name} (built once per scale, skipped when complete):\n{d['command']}")
    for st in resolved["stages"]:
        reused = ", reused" if st["reused"] else ""
        print(f"# {st['kind']} stage (arm {st['owner']}{reused}):\n{st['command']}")
    ev = resolved["eval"]
    lq = ev["longqa"]["config"]
    proxy = ev["proxy"]
    which = f"first {lq['num_questions']} questions" if lq["num_questions"] else "every question"
    print(f"# eval: {ev['model']} on {lq['tasks_dir']} ({which}, every length) -> {lq['out']}:\n"
          f"{ev['longqa']['command']}")
    if proxy:
        print(f"# eval: + {proxy['n_tasks']} proxy tasks (the first of the last {proxy['held_out_tail']} of "
              f"{proxy['tasks_dir']}, which MemTrain holds out) -> {proxy['out']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    from memtrain.config import help_text

    settings = help_text(ExperimentConfig, "experiments").replace(
        "settings (KEY=VALUE", "experiment settings for --set (KEY=VALUE", 1)
    note = "(dataclass defaults; the --scale file and its presets set most of them; --dry-run shows them)"
    r = sub.add_parser("run", help="train (resuming) and evaluate one arm × seed",
                       epilog=f"{settings}\n{note}", formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--arm", required=True, choices=ARMS)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--scale", default="cpu", help="experiments/configs/<scale>.yaml or a YAML path")
    r.add_argument("--steps-memtrain", type=int, default=None, help="= --set memtrain.steps=N")
    r.add_argument("--steps-task", type=int, default=None, help="= --set task.steps=N")
    r.add_argument("--model", default=None, help="override the model of every stage (e.g. tiny for tests)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override an experiment setting, e.g. --set task.rollout.g1=2 or --set "
                        "task_eval_data.longqa.n_docs=[5,10] (repeatable)")
    r.add_argument("--threads", type=int, default=None, help="torch threads (= --set threads=N)")
    r.add_argument("--runs-dir", default=str(RUNS))
    r.add_argument("--dry-run", action="store_true", help="print the resolved configs and commands only")
    r.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("report", help="aggregate finished arms × seeds into a table, a PNG and RESULTS.md")
    p.add_argument("--scale", default="cpu")
    p.add_argument("--runs-dir", default=str(RUNS))
    p.add_argument("--results-md", default=str(RESULTS_MD))
    p.add_argument("--png", default=None)
    args = ap.parse_args(argv)

    try:
        if args.cmd == "report":
            print(report(Path(args.scale).stem, Path(args.runs_dir), Path(args.results_md),
                         Path(args.png) if args.png else None))
            return 0
        sets = [*args.sets, *([f"threads={args.threads}"] if args.threads is not None else [])]
        exp = load_experiment(args.scale, sets, args.model, args.steps_memtrain, args.steps_task)
        runs = Path(args.runs_dir)
        if args.dry_run:
            dry_run(exp, args.arm, args.seed, runs)
            return 0
        out = run_arm(exp, args.arm, args.seed, runs, progress=not args.no_progress)
        print(f"headline: arm {args.arm} seed {args.seed} done: {out}")
        return 0
    except MemtrainError as e:
        print(f"headline: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
