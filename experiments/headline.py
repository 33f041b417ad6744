"""The headline experiment: does memory pre-training (MemTrain) beat task training alone?

Five arms share the model, agent budgets, evaluation and seeds; each differs only in the stage under test:

    A  base model, no training
    B  MemTrain only (self-supervised E2E + IMR GRPO on Wikipedia E2E tasks)
    C  task RL only (long-document HotpotQA built from training questions disjoint from the eval questions)
    D  MemTrain (B's stage, reused) then the same task RL as C (same settings, same budget)
    E  ablation: MemTrain without IMR (rollout.imr: false), then the same task RL

Commands (resumable: training resumes from checkpoints, evaluation per question)::

    python experiments/headline.py run --arm {A,B,C,D,E} --seed S [--scale cpu|paper|paper_qwen25_7b]
        [--steps-memtrain N --steps-task N] [--model NAME] [--set section.key=VALUE] [--threads N] [--dry-run]
    python experiments/headline.py report [--scale cpu]

A run writes experiments/runs/<scale>/<arm>/seed<S>/: ``config.json`` (the exact resolved stage configs
and evaluation settings), ``run_info.json`` (wall clock per stage, platform, CPU count, torch version),
``memtrain/`` and/or ``task/`` (training runs), ``eval/longqa/`` (results.jsonl + metrics.json per question
and length) and ``eval/proxy/`` (held-out E2E/IMR accuracy). ``report`` aggregates every finished arm and
seed into a table (mean ± std over seeds) and a PNG, and rewrites the matching section of RESULTS.md.

Leakage control: evaluation questions are ``split_questions(eval_fraction, seed=split_seed).eval``; the
task-RL stage builds its training questions from the other side with ``exclude=split.eval_keys``
(memtrain.rl.data), with ``data.split_seed`` pinned so a training seed never moves the split.
``scripts/check_overlap.py --headline`` proves the resolved sets disjoint.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / "configs"
RUNS = Path(__file__).resolve().parent / "runs"
RESULTS_MD = ROOT / "RESULTS.md"
ARMS = ("A", "B", "C", "D", "E")
ARM_LABELS = {
    "A": "A base",
    "B": "B MemTrain only",
    "C": "C task RL only",
    "D": "D MemTrain + task RL",
    "E": "E MemTrain (no IMR) + task RL",
}
# which training stages each arm runs, in order; (stage kind, owner arm of the stage's output folder)
STAGES: dict[str, list[tuple[str, str]]] = {
    "A": [],
    "B": [("memtrain", "B")],
    "C": [("task", "C")],
    "D": [("memtrain", "B"), ("task", "D")],
    "E": [("memtrain", "E"), ("task", "E")],
}


# ------------------------------------------------------------------------------------------ configuration


def load_experiment(scale: str, sets: list[str] = (), model: str | None = None,  # type: ignore[assignment]
                    steps_memtrain: int | None = None, steps_task: int | None = None) -> dict[str, Any]:
    """The experiment settings of ``scale`` (a file in experiments/configs or a path), with overrides."""
    from memtrain.config import load_yaml
    from memtrain.errors import MemtrainError
    from memtrain.rl.cli import apply_overrides

    path = Path(scale) if Path(scale).is_file() else CONFIGS / f"{scale}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
        raise MemtrainError(f"--scale {scale!r}: no experiments/configs/{scale}.yaml; choose one of {names}")
    exp = load_yaml(path)
    if "base" in exp:  # a variant: ``base: cpu`` plus only the settings that differ
        exp = _merge(load_experiment(exp.pop("base")), exp)
    exp["scale"] = path.stem
    exp = apply_overrides(exp, list(sets))
    if model:
        exp["model"] = model
    if steps_memtrain is not None:
        exp["memtrain"]["steps"] = steps_memtrain
    if steps_task is not None:
        exp["task"]["steps"] = steps_task
    return exp


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``, section by section (a dict value merges, anything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _abs(path: str) -> str:
    """Data paths in configs are relative to the repository root (``../shared/data/...``)."""
    p = Path(path)
    return str(p if p.is_absolute() else (ROOT / p).resolve())


def scale_dir(exp: dict[str, Any], runs: Path = RUNS) -> Path:
    return runs / exp["scale"]


def run_dir(exp: dict[str, Any], arm: str, seed: int, runs: Path = RUNS) -> Path:
    return scale_dir(exp, runs) / arm / f"seed{seed}"


def e2e_dir(exp: dict[str, Any], runs: Path = RUNS) -> Path:
    """Built E2E tasks, shared by every arm and seed of a scale (the builder is seeded on its own)."""
    return scale_dir(exp, runs) / "_data" / "e2e"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c.d": 2}`` -> ``{"a.b": 1, "c.d": 2}`` (``--set task.set.a.b=1`` nests)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _dotted(d: dict[str, Any]) -> list[str]:
    """``{"a.b": 1}`` -> ``["a.b=1"]``; values as JSON, which YAML reads back exactly."""
    return [f"{k}={json.dumps(v)}" for k, v in _flatten(d).items()]


def stage_overrides(exp: dict[str, Any], kind: str, arm: str, seed: int, runs: Path = RUNS) -> list[str]:
    """``--set`` overrides that turn a packaged preset into one arm's stage (shared settings first)."""
    sec = exp[kind]
    ov = {"model.name": exp["model"], "seed": seed,
          **{f"agent.{k}": v for k, v in exp.get("agent", {}).items()}, **sec.get("set", {})}
    if kind == "memtrain":
        ov["data.tasks_dir"] = str(e2e_dir(exp, runs))
        ov["data.eval_size"] = exp["e2e_data"]["eval_size"]
        if arm == "E":
            ov["rollout.imr"] = False
    else:
        ev = exp["eval"]
        ov["data.data_file"] = _abs(ev["data_file"])
        # the split must be the evaluation's split whatever the training seed
        ov["data.split_seed"] = ev["split_seed"]
        ov["data.longqa.eval_fraction"] = ev["eval_fraction"]
        owner = {"D": "B", "E": "E"}.get(arm)
        if owner:
            ov["model.init_from"] = str(run_dir(exp, owner, seed, runs) / "memtrain" / "final")
    return _dotted(ov)


def stage_config(exp: dict[str, Any], kind: str, arm: str, seed: int, runs: Path = RUNS) -> Any:
    """The resolved :class:`~memtrain.rl.config.TrainConfig` of one stage of one arm."""
    from memtrain.rl.cli import load_train_config

    out = run_dir(exp, arm, seed, runs) / kind
    cfg = load_train_config(exp[kind]["preset"], stage_overrides(exp, kind, arm, seed, runs),
                            steps=exp[kind]["steps"], out=str(out))
    cfg.validate()
    return cfg


def train_command(exp: dict[str, Any], kind: str, arm: str, seed: int, runs: Path = RUNS) -> str:
    """The equivalent ``memtrain train`` command line of a stage (for the record and --dry-run)."""
    import shlex

    parts = ["memtrain", "train", exp[kind]["preset"]]
    for o in stage_overrides(exp, kind, arm, seed, runs):
        parts += ["--set", o]
    parts += ["--steps", str(exp[kind]["steps"]), "--out", str(run_dir(exp, arm, seed, runs) / kind)]
    return " ".join(shlex.quote(p) for p in parts)


def evaluated_model(exp: dict[str, Any], arm: str, seed: int, runs: Path = RUNS) -> str:
    """What an arm evaluates: the base model (A) or the final model of its last stage."""
    stages = STAGES[arm]
    if not stages:
        return exp["model"]
    kind, owner = stages[-1]
    return str(run_dir(exp, owner, seed, runs) / kind / "final")


def eval_agent(exp: dict[str, Any], max_chunks: Any) -> Any:
    from memtrain.agent.loop import AgentConfig
    from memtrain.config import from_dict

    return from_dict(AgentConfig, {**exp.get("agent", {}), "max_chunks": max_chunks}, "experiment.agent")


def resolve(exp: dict[str, Any], arm: str, seed: int, runs: Path = RUNS) -> dict[str, Any]:
    """Everything one run will do, as plain data (written to config.json, printed by --dry-run)."""
    from memtrain.config import to_dict

    stages = []
    for kind, owner in STAGES[arm]:
        cfg = stage_config(exp, kind, owner, seed, runs)
        stages.append({"kind": kind, "owner": owner, "reused": owner != arm, "config": to_dict(cfg),
                       "command": train_command(exp, kind, owner, seed, runs)})
    ev = exp["eval"]
    proxy_agent = stage_config(exp, "memtrain", "B", seed, runs).agent
    return {
        "arm": arm, "label": ARM_LABELS[arm], "seed": seed, "scale": exp["scale"], "experiment": exp,
        "stages": stages,
        "eval": {
            "model": evaluated_model(exp, arm, seed, runs),
            "longqa": {"data_file": _abs(ev["data_file"]), "eval_fraction": ev["eval_fraction"],
                       "split_seed": ev["split_seed"], "num_questions": ev["num_questions"],
                       "n_docs": list(ev["n_docs"]), "agent": to_dict(eval_agent(exp, ev.get("max_chunks"))),
                       "sampling": "greedy"},
            "proxy": {"tasks_dir": str(e2e_dir(exp, runs)), "n_tasks": ev["proxy_tasks"],
                      "agent": to_dict(proxy_agent), "sampling": "greedy"},
            "engine": ev.get("engine", "hf"), "dtype": ev.get("dtype", "auto"),
            "batch_size": ev["batch_size"],
        },
    }


# ------------------------------------------------------------------------------------------------ data


def ensure_e2e_tasks(exp: dict[str, Any], runs: Path = RUNS) -> Path:
    """Build the scale's E2E tasks once (resumable, seeded); every arm's proxy eval uses their tail."""
    from memtrain.tasks.build import BuildConfig, build_dataset
    from memtrain.tasks.e2e import preset

    out = e2e_dir(exp, runs)
    d = exp["e2e_data"]
    if (out / "stats.json").is_file():
        return out
    corpus = d["corpus"] if d["corpus"] == "embedded" else _abs(d["corpus"])
    task = preset(d["preset"], chunk_tokens=exp["agent"]["chunk_tokens"], **d.get("task", {}))
    build_dataset(BuildConfig(corpus=corpus, out=str(out), task=task, num_tasks=d["num_tasks"]))
    return out


def eval_questions(exp: dict[str, Any]) -> tuple[Any, list[Any], list[Any]]:
    """(split, chosen eval questions, paragraph pool): the fixed held-out HotpotQA sample."""
    from memtrain.tasks import longqa

    ev = exp["eval"]
    items, pool = longqa.load_source("hotpotqa", _abs(ev["data_file"]))
    split = longqa.split_questions(items, eval_fraction=ev["eval_fraction"], seed=ev["split_seed"])
    chosen = longqa.select_questions(split.eval, ev["num_questions"], ev["split_seed"])
    return split, chosen, pool


def eval_tasks(exp: dict[str, Any], tokenizer: Any) -> list[Any]:
    """The held-out long-document HotpotQA tasks, identical for every arm and seed."""
    from memtrain.tasks import longqa

    ev = exp["eval"]
    _, chosen, pool = eval_questions(exp)
    return longqa.build_longqa_tasks(chosen, pool, ev["n_docs"], tokenizer, exp["agent"]["chunk_tokens"],
                                     ev["split_seed"])


def task_train_tasks(exp: dict[str, Any], seed: int = 0, runs: Path = RUNS) -> list[Any]:
    """The task-RL stage's training tasks exactly as the trainer builds them (for leakage checks)."""
    from memtrain.models import load_tokenizer
    from memtrain.rl.data import load_data

    cfg = stage_config(exp, "task", "C", seed, runs)
    train, _ = load_data(cfg, load_tokenizer(cfg.model.name))
    return train


# ------------------------------------------------------------------------------------------------- run


def hardware() -> dict[str, Any]:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _stage_done(cfg: Any) -> bool:
    """True when the stage's final model exists and was written by this very config.

    A stage folder written with *other* settings is refused (e.g. D asking for a longer MemTrain stage
    than B ran): resuming would silently change the model another arm was evaluated with.
    """
    from memtrain.config import to_dict
    from memtrain.errors import MemtrainError

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


def run_arm(exp: dict[str, Any], arm: str, seed: int, runs: Path = RUNS, progress: bool = True) -> Path:
    """Train (resuming) and evaluate (resuming) one arm × seed; returns its run folder."""
    import torch

    from memtrain.agent.engine import Sampling
    from memtrain.agent.engines import build_engine
    from memtrain.eval.proxy import evaluate_proxy
    from memtrain.eval.runner import evaluate
    from memtrain.io import write_json
    from memtrain.tasks.build import load_tasks

    if exp.get("threads"):
        torch.set_num_threads(int(exp["threads"]))
    out = run_dir(exp, arm, seed, runs)
    out.mkdir(parents=True, exist_ok=True)
    resolved = resolve(exp, arm, seed, runs)
    write_json(out / "config.json", resolved)
    info_path = out / "run_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    info["hardware"] = hardware()
    info.setdefault("wall_s", {})

    def record(key: str, seconds: float) -> None:
        info["wall_s"][key] = round(info["wall_s"].get(key, 0.0) + seconds, 1)
        write_json(info_path, info)

    needs_e2e = any(kind == "memtrain" for kind, _ in STAGES[arm]) or exp["eval"]["proxy_tasks"] > 0
    if needs_e2e:
        t0 = time.perf_counter()
        ensure_e2e_tasks(exp, runs)
        record("e2e_build", time.perf_counter() - t0)

    from memtrain.rl.trainer import train

    for kind, owner in STAGES[arm]:
        cfg = stage_config(exp, kind, owner, seed, runs)
        if _stage_done(cfg):
            print(f"headline: {kind} stage of arm {owner} seed {seed} already done: {cfg.out_dir}/final")
            continue
        print(f"headline: training {kind} stage of arm {owner} seed {seed} -> {cfg.out_dir}")
        t0 = time.perf_counter()
        train(cfg)
        record(f"train_{kind}" + ("" if owner == arm else f"_reused_from_{owner}"), time.perf_counter() - t0)

    ev = resolved["eval"]
    t0 = time.perf_counter()
    opts: dict[str, Any] = {"dtype": ev["dtype"]}
    if ev["engine"] == "hf":
        opts["batch_size"] = ev["batch_size"]
    engine = build_engine(ev["engine"], ev["model"], **opts)
    sampling = Sampling(temperature=0.0)
    tasks = eval_tasks(exp, engine.tokenizer)
    agent = eval_agent(exp, exp["eval"].get("max_chunks"))
    longqa_info = {k: v for k, v in ev["longqa"].items() if k != "agent"}
    run_info = {"arm": arm, "seed": seed, "model": ev["model"], "longqa": longqa_info}
    evaluate(engine, tasks, agent, sampling, out / "eval" / "longqa", batch_size=ev["batch_size"],
             label=ARM_LABELS[arm], run_info=run_info, progress=progress)
    record("eval_longqa", time.perf_counter() - t0)
    n_proxy = ev["proxy"]["n_tasks"]
    if n_proxy > 0:
        t0 = time.perf_counter()
        held = load_tasks(e2e_dir(exp, runs))[-exp["e2e_data"]["eval_size"]:][:n_proxy]
        proxy_agent = stage_config(exp, "memtrain", "B", seed, runs).agent
        evaluate_proxy(engine, held, proxy_agent, sampling, out / "eval" / "proxy", seed=seed,
                       batch_size=ev["batch_size"], label=ARM_LABELS[arm],
                       run_info={"arm": arm, "seed": seed, "model": ev["model"]}, progress=progress)
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
    """Markdown: arms × context lengths (accuracy = sub-EM, %, mean ± std over seeds) + proxy E2E/IMR."""
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
    return ("\n".join(lines) + "\n\nAccuracy = sub-EM (%) on the held-out long-document HotpotQA questions, "
            "greedy; mean ± std over seeds (one seed: no ±); avg EM / F1: the same answers scored by exact "
            "match / token F1, averaged over lengths. Proxy = strict EM on held-out E2E tasks and one "
            f"IMR probe per task. Rows per run (questions × lengths): {n_q}. Context: {'; '.join(tokens)}.\n")


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
                            "mean_tokens": statistics.fmean(toks) if toks else None}
        series.append({"label": ARM_LABELS[arm], "by_length": by_length})
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_accuracy(series, path, title=title)
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
    from memtrain.errors import MemtrainError
    from memtrain.io import atomic_open

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
    body = (f"{report_table(found)}\n![accuracy vs context length]({rel})\n\n"
            + (f"Training stages (sampled rollouts; reward = the stage's training reward):\n\n{train}\n"
               if train else "")
            + f"Runs and hardware:\n\n{hardware_lines(found)}")
    text = results_md.read_text(encoding="utf-8") if results_md.is_file() else "# Results\n"
    with atomic_open(results_md) as f:
        f.write(replace_section(text, f"headline:{scale}", body))
    return body


# ------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train (resuming) and evaluate one arm × seed")
    r.add_argument("--arm", required=True, choices=ARMS)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--scale", default="cpu", help="experiments/configs/<scale>.yaml or a YAML path")
    r.add_argument("--steps-memtrain", type=int, default=None)
    r.add_argument("--steps-task", type=int, default=None)
    r.add_argument("--model", default=None, help="override the model of every stage (e.g. tiny for tests)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override an experiment setting, e.g. --set eval.num_questions=2 (repeatable)")
    r.add_argument("--threads", type=int, default=None, help="torch threads")
    r.add_argument("--runs-dir", default=str(RUNS))
    r.add_argument("--dry-run", action="store_true", help="print the resolved configs and commands only")
    r.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("report", help="aggregate finished arms × seeds into a table, a PNG and RESULTS.md")
    p.add_argument("--scale", default="cpu")
    p.add_argument("--runs-dir", default=str(RUNS))
    p.add_argument("--results-md", default=str(RESULTS_MD))
    p.add_argument("--png", default=None)
    args = ap.parse_args(argv)

    from memtrain.errors import MemtrainError

    try:
        if args.cmd == "report":
            print(report(Path(args.scale).stem, Path(args.runs_dir), Path(args.results_md),
                         Path(args.png) if args.png else None))
            return 0
        exp = load_experiment(args.scale, args.sets, args.model, args.steps_memtrain, args.steps_task)
        if args.threads is not None:
            exp["threads"] = args.threads
        runs = Path(args.runs_dir)
        if args.dry_run:
            resolved = resolve(exp, args.arm, args.seed, runs)
            print(json.dumps(resolved, indent=2, sort_keys=True, default=str))
            for st in resolved["stages"]:
                print(f"# {st['kind']} stage (arm {st['owner']}{', reused' if st['reused'] else ''}):\n"
                      f"{st['command']}")
            print(f"# eval: {resolved['eval']['model']} on {resolved['eval']['longqa']['num_questions']} "
                  f"questions × n_docs {resolved['eval']['longqa']['n_docs']} + "
                  f"{resolved['eval']['proxy']['n_tasks']} proxy tasks -> "
                  f"{run_dir(exp, args.arm, args.seed, runs) / 'eval'}")
            return 0
        out = run_arm(exp, args.arm, args.seed, runs, progress=not args.no_progress)
        print(f"headline: arm {args.arm} seed {args.seed} done: {out}")
        return 0
    except MemtrainError as e:
        print(f"headline: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
