"""Does MemTrain learn at micro scale on CPU? Several seeds of the `micro_memtrain` preset, measured.

    python experiments/learning_micro.py [--seeds 0 1 2] [--steps N] [--threads T] [--report-only]

1. Build the micro E2E task set once (`memtrain data build micro`, 24-token chunks; resumable).
2. For every seed, train MemTrain (E2E + IMR, coupled reward) with the `micro_memtrain` preset into
   experiments/runs_micro/seed<S>/ (resumes from its checkpoints); the held-out proxy evaluation (greedy,
   the last 64 tasks, never trained on) runs at step 0, every `eval_every` steps and at the end.
3. Write experiments/results/learning_micro.{json,md,png}: per seed the held-out reward at the start and the
   end, the curve, and the training-signal counts (groups DAPO kept).

The bar (issue 10): the held-out reward at the end is above the start for every seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = Path(__file__).resolve().parent / "runs_micro"
RESULTS = Path(__file__).resolve().parent / "results"
METRIC = "eval/coupled"  # the training objective, R^E = E2E answer reward + λ·mean IMR reward, held out
ALSO = ("eval/e2e_sub_em", "eval/imr_sub_em", "eval/e2e_strict_em", "eval/imr_strict_em")


def run_seed(seed: int, steps: int | None) -> Path:
    from memtrain.config import load_config
    from memtrain.recipes.train import train
    from memtrain.rl.config import TrainConfig

    out = RUNS / f"seed{seed}"
    over = [f"seed={seed}", f"out_dir={out}", "log.tensorboard=false"] + ([f"steps={steps}"] if steps else [])
    cfg = load_config(TrainConfig, "train", "micro_memtrain", over)
    if not (out / "final").is_dir():
        train(cfg)
    return out


def curves(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


def report(seeds: list[int]) -> dict:
    runs = {s: curves(RUNS / f"seed{s}") for s in seeds if (RUNS / f"seed{s}" / "metrics.jsonl").is_file()}
    if not runs:
        raise SystemExit(f"no finished seed under {RUNS}; run without --report-only first")
    entries = []
    for s, rows in runs.items():
        evals = [r for r in rows if METRIC in r]
        train_rows = [r for r in rows if r["step"] > 0 and "reward/coupled" in r]
        kept = sum(r["groups/e2e"] - r["groups/e2e_dropped"] + r["groups/imr"] - r["groups/imr_dropped"]
                   for r in train_rows)
        total = sum(r["groups/e2e"] + r["groups/imr"] for r in train_rows)
        entries.append({
            "seed": s, "start": evals[0][METRIC], "end": evals[-1][METRIC],
            "curve": [(r["step"], r[METRIC]) for r in evals],
            "also": {k: [(r["step"], r[k]) for r in evals] for k in ALSO},
            "train_reward": [(r["step"], r["reward/coupled"]) for r in train_rows],
            "groups_with_signal": f"{kept:.0f}/{total:.0f}",
            "updates": sum(1 for r in train_rows if not r.get("update/skipped")),
        })
    steps = max(e["curve"][-1][0] for e in entries)
    result = {"metric": METRIC, "seeds": [e["seed"] for e in entries], "start": [e["start"] for e in entries],
              "end": [e["end"] for e in entries], "steps": steps, "runs": entries,
              "passed": all(e["end"] > e["start"] for e in entries)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    from memtrain.io import write_json

    write_json(RESULTS / "learning_micro.json", result)
    plot(entries, RESULTS / "learning_micro.png")
    write_markdown(result, RESULTS / "learning_micro.md")
    return result


def table(result: dict) -> str:
    """The measured part of the results page (rewritten by every report; the prose around it is kept)."""
    rows = ["| seed | held-out start | held-out end | curve (step: value) | IMR sub-EM start → end | "
            "E2E sub-EM start → end | groups with signal | updates |", "|" + "---|" * 8]
    for e in result["runs"]:
        imr, e2e = e["also"]["eval/imr_sub_em"], e["also"]["eval/e2e_sub_em"]
        curve = ", ".join(f"{s}: {v:.3f}" for s, v in e["curve"])
        rows.append(f"| {e['seed']} | {e['start']:.3f} | {e['end']:.3f} | {curve} | {imr[0][1]:.3f} → "
                    f"{imr[-1][1]:.3f} | {e2e[0][1]:.3f} → {e2e[-1][1]:.3f} | {e['groups_with_signal']} | "
                    f"{e['updates']} |")
    verdict = "**passed**" if result["passed"] else "**not passed**"
    return ("\n".join(rows) + f"\n\nMean over seeds: start {mean_sd(result['start'])}, end "
            f"{mean_sd(result['end'])} ({result['metric']}, {result['steps']} steps). Bar (end above start "
            f"for every seed): {verdict}.\n\n![held-out and training reward](learning_micro.png)\n")


def write_markdown(result: dict, path: Path) -> None:
    from memtrain.io import atomic_open

    begin, end = "<!-- learning_micro:begin -->", "<!-- learning_micro:end -->"
    blank = f"# Learning at micro scale\n\n{begin}\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.is_file() else blank
    pre, rest = text.split(begin, 1)
    with atomic_open(path) as f:
        f.write(f"{pre}{begin}\n{table(result)}{end}{rest.split(end, 1)[1]}")


def plot(entries: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for e in entries:
        axes[0].plot(*zip(*e["curve"], strict=True), marker="o", label=f"seed {e['seed']}")
        axes[1].plot(*zip(*e["train_reward"], strict=True), marker=".", label=f"seed {e['seed']}")
    axes[0].set_title(f"held-out {METRIC} (greedy)")
    axes[1].set_title("training reward/coupled (sampled)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def mean_sd(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not args.report_only:
        from memtrain.config import load_config
        from memtrain.recipes.build_tasks import BuildConfig, build
        from memtrain.tasks.taskset import MANIFEST

        data = load_config(BuildConfig, "data", "micro", ["progress=false"])
        if not (Path(data.out) / MANIFEST).is_file():
            build(data)
        for s in args.seeds:
            run_seed(s, args.steps)
    r = report(args.seeds)
    print(json.dumps({k: r[k] for k in ("metric", "seeds", "start", "end", "steps", "passed")}))
    print(f"start {mean_sd(r['start'])} -> end {mean_sd(r['end'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
