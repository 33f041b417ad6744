"""Search QA in the MEM1 setting at CPU scale: the step-0 check and the experiment (base / search-RL only /
MemTrain then search-RL), with the embedded SmolLM2-135M and the local BM25 corpus.

    python experiments/search_qa.py probe [--tasks 8] [--g 4]        # step-0 rewards: is there a signal?
    python experiments/search_qa.py run --seeds 0 1 2               # the three arms, per seed
    python experiments/search_qa.py table                           # the table from finished runs

Everything goes through the recipes (``memtrain data build``, ``memtrain train``, ``memtrain eval``) with
the presets ``memtrain/configs/data/searchqa_cpu_{train,eval}.yaml``, ``memtrain/configs/train/
cpu_task_search.yaml`` and ``memtrain/configs/eval/search_cpu.yaml``; this script only composes them.
"MemTrain then search-RL" starts from a short MemTrain run: ``experiments/runs_micro/seed<s>/final``
(``python experiments/learning_micro.py --seeds 0 1 2``: 16 steps of ``micro_memtrain``), because a full
MemTrain CPU run does not fit beside it. Outputs: ``experiments/runs_search/`` (ignored by git) and
``experiments/results/search_qa.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "experiments" / "runs_search"
RESULTS = ROOT / "experiments" / "results"
MEMTRAIN_RUNS = ROOT / "experiments" / "runs_micro"
BENCHMARKS = ("hotpotqa", "nq", "musique")
NAME = "search_qa"  # results files: experiments/results/<NAME>.{md,json}


def _load(recipe: str, preset: str, overrides: list[str]):  # noqa: ANN202
    from memtrain.config import load_config

    if recipe == "data":
        from memtrain.recipes.build_tasks import BuildConfig as C
    elif recipe == "train":
        from memtrain.rl.config import TrainConfig as C
    else:
        from memtrain.recipes.evaluate import EvalConfig as C
    return load_config(C, recipe, preset, overrides)


def ensure_data() -> None:
    from memtrain.recipes.build_tasks import build

    for preset in ("searchqa_cpu_train", "searchqa_cpu_eval"):
        build(_load("data", preset, []))


def probe(args: argparse.Namespace) -> int:
    """Step-0 rollouts on training tasks, per on_invalid mode: the reward under every per-objective metric,
    groups with signal (G episodes not all equal), actions; every episode is kept for rescoring."""
    import dataclasses

    from memtrain.agent.engines import build_engine
    from memtrain.agent.search import objectives, step_row
    from memtrain.rl.search_rollout import collect
    from memtrain.scoring import OBJECTIVE_METRICS, multi_objective_score
    from memtrain.search import make_search
    from memtrain.tasks.taskset import open_taskset

    ensure_data()
    cfg = _load("train", "cpu_task_search", [f"rollout.g1={args.g}", *args.set])
    ts = open_taskset(cfg.data.tasks_dir)
    by: dict[str, list] = {}
    for t in ts.tasks:
        if t.meta["source"] == "nq" and args.answerable_nq and not t.meta.get("answerable"):
            continue
        by.setdefault(t.meta["source"], []).append(t)
    tasks = [t for v in by.values() for t in v[: args.tasks]]
    engine = build_engine(cfg.engine, cfg.model.name)
    searcher = make_search(cfg.retriever)
    out: dict[str, dict] = {}
    episodes: dict[str, list] = {}
    g = cfg.rollout.g1
    for mode in args.modes:
        agent = dataclasses.replace(cfg.search, on_invalid=mode)
        t0 = time.perf_counter()
        r = collect(engine, searcher, tasks, agent, cfg.rollout, seed=cfg.seed, progress=True)
        secs = time.perf_counter() - t0
        rows = []
        for i, tr in enumerate(r.trajectories):
            task = tasks[r.doc_of[i]]
            rows.append({"task": task.id, "source": task.meta["source"], "golds": objectives(task),
                         "answer": tr.answer, "steps": [step_row(s) for s in tr.steps]})
        episodes[mode] = rows
        res: dict = {"seconds": round(secs, 1), "tasks": len(tasks), "g": g}
        for metric in OBJECTIVE_METRICS:
            scores = [multi_objective_score(x["answer"], x["golds"], metric) for x in rows]
            grouped = [scores[k * g:(k + 1) * g] for k in range(len(tasks))]
            res[metric] = {"reward": round(statistics.mean(scores), 4),
                           "groups_with_signal": sum(max(x) > min(x) for x in grouped),
                           "per_source": {s: round(statistics.mean(
                               sc for x, sc in zip(rows, scores, strict=True) if x["source"] == s), 4)
                               for s in by}}
        res.update({k: round(v, 4) for k, v in r.metrics.items() if k.startswith(("search/", "len/"))})
        out[mode] = res
        print(json.dumps({mode: res}, indent=1), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = args.name or "search_qa_probe"
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"command": "python experiments/search_qa.py " + " ".join(sys.argv[1:]), "results": out}, indent=1))
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{name}_episodes.json").write_text(json.dumps(episodes, indent=1))
    return 0


ARMS = ("base", "memtrain_only", "search_rl", "memtrain_search_rl")
ARM_LABELS = {"base": "base (SmolLM2-135M)", "memtrain_only": "MemTrain only (micro)",
              "search_rl": "search-RL only", "memtrain_search_rl": "MemTrain then search-RL"}


def memtrain_cli(args: list[str], log: Path) -> list[str]:
    """Run one ``memtrain`` command (a subprocess, niced), output appended to ``log``; returns the argv."""
    import shutil
    import subprocess

    exe = shutil.which("memtrain") or str(Path(sys.executable).with_name("memtrain"))
    argv = ["nice", "-n", "10", exe, *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$ memtrain " + " ".join(args), flush=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ memtrain " + " ".join(args) + "\n")
        f.flush()
        rc = subprocess.call(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if rc != 0:
        raise SystemExit(f"failed (rc {rc}): memtrain {' '.join(args)}; see {log}")
    return ["memtrain", *args]


def eval_args(model: str, out: Path, extra: list[str]) -> list[str]:
    return ["eval", "search_cpu", f"model={model}", f"out={out}", "progress=false", *extra]


def train_args(seed: int, out: Path, init_from: Path | None, extra: list[str]) -> list[str]:
    args = ["train", "cpu_task_search", f"seed={seed}", f"out_dir={out}", "eval_docs=0",
            "log.progress=false", "log.tensorboard=false"]
    if init_from is not None:
        args.append(f"model.init_from={init_from}")
    return [*args, *extra]


def configure(args: argparse.Namespace) -> None:
    """``--runs DIR`` / ``--name NAME``: where runs go and what the results files are called."""
    global RUNS, NAME
    RUNS = Path(args.runs).resolve() if getattr(args, "runs", None) else RUNS
    NAME = getattr(args, "name", None) or NAME


def run(args: argparse.Namespace) -> int:
    """Every arm for every seed (seed by seed, so finished seeds count if a later one is cut short)."""
    ensure_data()
    log = RUNS / "log.txt"
    commands: list[list[str]] = []
    ev = [f"num_questions={args.eval_tasks}", *args.set]
    tr = [f"steps={args.steps}", *args.set]
    base_out = RUNS / "base"
    if not (base_out / "metrics.json").is_file():  # greedy: the base model's score does not depend on seed
        commands.append(memtrain_cli(eval_args("smollm2", base_out, ev), log))
    for seed in args.seeds:
        mt = MEMTRAIN_RUNS / f"seed{seed}" / "final"
        if not mt.is_dir():
            raise SystemExit(f"{mt} is missing: run `python experiments/learning_micro.py --seeds {seed}` "
                             "first")
        for arm in ARMS[1:]:
            run_dir = RUNS / arm / f"seed{seed}"
            if (run_dir / "eval" / "metrics.json").is_file():
                continue
            model = mt
            if arm != "memtrain_only":
                if not (run_dir / "final").is_dir():
                    commands.append(memtrain_cli(train_args(seed, run_dir, mt if arm == "memtrain_search_rl"
                                                            else None, tr), log))
                model = run_dir / "final"
            commands.append(memtrain_cli(eval_args(str(model), run_dir / "eval", ev), log))
        table(args)
    return 0


def _metrics(path: Path) -> dict | None:
    p = path / "metrics.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _train_summary(run_dir: Path) -> dict | None:
    p = run_dir / "metrics.jsonl"
    if not p.is_file():
        return None
    rows = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
    steps = [r for r in rows if r.get("step", 0) >= 1 and "reward/coupled" in r]
    if not steps:
        return None
    return {"steps": len(steps), "reward_first": steps[0]["reward/coupled"],
            "reward_last": steps[-1]["reward/coupled"],
            "reward_mean": statistics.mean(r["reward/coupled"] for r in steps),
            "groups": sum(r["groups/e2e"] for r in steps),
            "groups_dropped": sum(r["groups/e2e_dropped"] for r in steps),
            "updates": sum(1 for r in steps if not r["update/skipped"]),
            "answered_first": steps[0]["search/answered"], "answered_last": steps[-1]["search/answered"]}


def _fmt(xs: list[float]) -> str:
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{100 * xs[0]:.1f}"
    return f"{100 * statistics.mean(xs):.1f} ± {100 * statistics.stdev(xs):.1f}"


def table(args: argparse.Namespace | None = None) -> int:
    """The results table (mean ± sd over seeds) from whatever runs have finished."""
    groups = [*BENCHMARKS, "nq_answerable"]
    data: dict[str, dict] = {}
    for arm in ARMS:
        dirs = [RUNS / "base"] if arm == "base" else sorted((RUNS / arm).glob("seed*/eval"))
        runs = {d.parent.name if arm != "base" else "greedy": m for d in dirs if (m := _metrics(d))}
        if runs:
            data[arm] = {"runs": runs,
                         "train": {d.parent.name: _train_summary(d.parent) for d in dirs if arm != "base"}}
    lines = []
    for metric, title in (("f1", "F1 (the training reward)"), ("em", "EM (the paper's metric)"),
                          ("sub_em", "sub-EM"), ("answered", "episodes that wrote an <answer>")):
        lines.append(f"\n**{title}**, % (mean ± sd over seeds; n tasks per benchmark in brackets)\n")
        lines.append("| arm | seeds | " + " | ".join(groups) + " | average (3 benchmarks) |")
        lines.append("|---|---|" + "---|" * (len(groups) + 1))
        for arm, d in data.items():
            cells = []
            for g in groups:
                ms = [m["by_benchmark"][g] for m in d["runs"].values() if g in m["by_benchmark"]]
                xs = [x[metric] for x in ms if x[metric] is not None]
                n = ms[0]["n"] if ms else 0
                cells.append(f"{_fmt(xs)} [{n}]")
            avg = [statistics.mean(m["by_benchmark"][g][metric] for g in BENCHMARKS)
                   for m in d["runs"].values() if all(g in m["by_benchmark"] for g in BENCHMARKS)]
            lines.append(f"| {ARM_LABELS[arm]} | {len(d['runs'])} | " + " | ".join(cells) +
                         f" | {_fmt(avg)} |")
    train_lines = ["\n**Training** (search RL, per seed): mean training reward (F1) at the first and "
                   "last step, groups with signal (not dropped by DAPO) / groups, optimizer updates\n",
                   "| arm | seed | steps | reward first → last (mean) | answered first → last | groups with "
                   "signal | updates |", "|---|---|---|---|---|---|---|"]
    for arm in ("search_rl", "memtrain_search_rl"):
        for seed, t in sorted(data.get(arm, {}).get("train", {}).items()):
            if t:
                train_lines.append(
                    f"| {ARM_LABELS[arm]} | {seed} | {t['steps']} | {t['reward_first']:.3f} → "
                    f"{t['reward_last']:.3f} ({t['reward_mean']:.3f}) | {t['answered_first']:.2f} → "
                    f"{t['answered_last']:.2f} | "
                    f"{t['groups'] - t['groups_dropped']:.0f}/{t['groups']:.0f} | {t['updates']} |")
    text = "\n".join(lines + train_lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    rel = RUNS.relative_to(ROOT) if RUNS.is_relative_to(ROOT) else RUNS
    head = (f"# Search QA at CPU scale (generated by `python experiments/search_qa.py table --runs {rel} "
            f"--name {NAME}`)\n")
    (RESULTS / f"{NAME}.md").write_text(head + text)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(data, indent=1, default=str))
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe", help="step-0 rewards on training tasks")
    p.add_argument("--tasks", type=int, default=8, help="training tasks per benchmark")
    p.add_argument("--g", type=int, default=4, help="episodes per task")
    p.add_argument("--modes", nargs="+", default=["end", "retry"], help="search.on_invalid values")
    p.add_argument("--answerable-nq", action="store_true", help="NQ tasks answerable from BM25 top-3 only")
    p.add_argument("--set", nargs="*", default=[], help="extra key=value overrides of cpu_task_search")
    p.add_argument("--name", default=None, help="output name (default search_qa_probe)")
    r = sub.add_parser("run", help="the experiment: every arm, every seed")
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--steps", type=int, default=6, help="search-RL steps per run")
    r.add_argument("--eval-tasks", type=int, default=16, help="evaluation tasks per benchmark")
    r.add_argument("--set", nargs="*", default=[], help="key=value overrides for every train and eval run")
    t = sub.add_parser("table", help="the table from finished runs")
    for q in (r, t):
        q.add_argument("--runs", default=None, help="runs folder (default experiments/runs_search)")
        q.add_argument("--name", default=None, help="results name (default search_qa)")
    args = ap.parse_args(argv)
    configure(args)
    return {"probe": probe, "run": run, "table": table}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
