"""Does MemTrain GRPO learn at CPU scale? One command: build tasks, measure, train, re-measure.

    python experiments/learning_check.py [--steps 8] [--n-train 24] [--n-eval 12]

1. Builds a small fixed E2E task set from the embedded gensim Wikipedia dump with ``memtrain data build``'s
   recipe (the ``data/cpu`` preset plus documented difficulty knobs: the masked entity is mentioned
   >= ``--min-mentions`` times, answers are <= 3 words); training holds out its last ``--n-eval`` tasks (the
   builder's order is seeded).
2. Trains with the ``train/cpu_memtrain`` preset (``memtrain.recipes.train.train``); the trainer measures
   held-out proxy rewards (greedy: E2E strict EM, IMR strict EM, coupled) at step 0 and after the last step.
3. Writes experiments/results/learning_check.{json,md} with the numbers as measured — if held-out reward
   does not rise, the report says so.

The equivalent commands are printed first (``memtrain data build cpu ...`` and ``memtrain train
cpu_memtrain ...``); ``--dry-run`` prints them and the resolved configs without building or training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from memtrain.io import read_jsonl_tolerant, write_json

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAMES = {"smollm2": "embedded SmolLM2-135M-Instruct", "tiny": "tiny random-weight test model"}


def build_config(out: Path, n: int, min_mentions: int, chunk_tokens: int, max_chunks: int,
                 mask_scope: str = "pivot", tokenizer: str = "smollm2") -> Any:
    """The task set's :class:`~memtrain.recipes.build_tasks.BuildConfig`: the ``data/cpu`` preset and the
    knobs above (``overwrite``: a task set built with other knobs in ``out`` is replaced)."""
    from memtrain.config import load_config
    from memtrain.recipes.build_tasks import BuildConfig

    overrides = [f"out={out}", f"num_tasks={n}", f"tokenizer={tokenizer}", f"e2e.min_mentions={min_mentions}",
                 "e2e.max_answer_words=3", f"e2e.chunk_tokens={chunk_tokens}", f"e2e.max_chunks={max_chunks}",
                 "e2e.min_chunks=2", f"e2e.mask_scope={mask_scope}", "overwrite=true"]
    return load_config(BuildConfig, "data", "cpu", overrides)


def train_config(tasks_dir: Path, args: argparse.Namespace) -> Any:
    """The run's :class:`~memtrain.rl.config.TrainConfig`: ``train/cpu_memtrain`` on the task set."""
    from memtrain.config import load_config
    from memtrain.rl.config import TrainConfig

    overrides = [f"data.tasks_dir={tasks_dir}", f"data.eval_size={args.n_eval}", f"eval_docs={args.n_eval}",
                 f"model.name={args.model}", f"agent.chunk_tokens={args.chunk_tokens}",
                 f"agent.max_chunks={args.max_chunks}", f"optim.lr={args.lr}", "save_every=0", "eval_every=0",
                 f"steps={args.steps}", f"out_dir={Path(args.workdir) / 'run'}", *args.overrides]
    return load_config(TrainConfig, "train", "cpu_memtrain", overrides)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=24)
    ap.add_argument("--n-eval", type=int, default=12)
    ap.add_argument("--min-mentions", type=int, default=3)
    ap.add_argument("--chunk-tokens", type=int, default=320)
    ap.add_argument("--max-chunks", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--mask-scope", default="pivot", choices=["pivot", "document"],
                    help="pivot (default here): easier, the other passages may name the answer")
    ap.add_argument("--model", default="smollm2",
                    help="policy model; the tasks are chunked with its tokenizer (tiny: SmolLM2's)")
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "learning_check"))
    ap.add_argument("--results-dir", default=str(ROOT / "experiments" / "results"),
                    help="where learning_check.{json,md} go")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra TrainConfig override, key.sub=value (repeatable)")
    ap.add_argument("--dry-run", action="store_true", help="print the resolved configs only")
    args = ap.parse_args(argv)

    from memtrain.config import to_dict
    from memtrain.errors import MemtrainError

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from headline import command

    work = Path(args.workdir)
    try:
        bcfg = build_config(work / "tasks", args.n_train + args.n_eval, args.min_mentions, args.chunk_tokens,
                            args.max_chunks, args.mask_scope, args.model)
        cfg = train_config(work / "tasks", args)
    except MemtrainError as e:
        print(f"learning_check: error: {e}", file=sys.stderr)
        return 2
    print(f"# tasks:\n{command('data build', 'data', bcfg)}\n# training:\n{command('train', 'train', cfg)}")
    if args.dry_run:
        print(json.dumps({"data": to_dict(bcfg), "train": to_dict(cfg)}, indent=2, sort_keys=True))
        return 0

    from memtrain.recipes.build_tasks import build
    from memtrain.recipes.train import train
    from memtrain.tasks.taskset import load_tasks

    build(bcfg)
    tasks = load_tasks(bcfg.out)
    t0 = time.perf_counter()
    train(cfg)
    minutes = (time.perf_counter() - t0) / 60

    reward = cfg.rollout.reward
    rows = read_jsonl_tolerant(Path(cfg.out_dir) / "metrics.jsonl")
    ev = {r["step"]: {k[5:]: v for k, v in r.items() if k.startswith("eval/")} for r in rows
          if any(k.startswith("eval/") for k in r)}
    train_rows = [r for r in rows if r["step"] > 0]
    first, last = min(ev), max(ev)
    curve_keys = ("step", "reward/coupled", f"reward/e2e_{reward}", f"reward/imr_{reward}",
                  "score/e2e_strict_em", "score/imr_strict_em", "groups/e2e_dropped", "groups/imr_dropped",
                  "loss/kl", "loss/clip_frac", "update/tokens_per_s", "time/step_s")
    result = {
        "tasks": {"n_total": len(tasks), "n_train": len(tasks) - args.n_eval, "n_eval": args.n_eval,
                  "min_mentions": args.min_mentions, "chunk_tokens": args.chunk_tokens,
                  "max_chunks": args.max_chunks, "mask_scope": args.mask_scope, "tasks_dir": bcfg.out},
        "config": {"steps": cfg.steps, "lr": cfg.optim.lr, "g1": cfg.rollout.g1, "g2": cfg.rollout.g2,
                   "batch_size": cfg.batch_size, "memory_tokens": cfg.agent.memory_tokens,
                   "answer_tokens": cfg.agent.answer_tokens, "kl_coef": cfg.loss.kl_coef, "reward": reward},
        "held_out": {"before": ev[first], "after": ev[last], "before_step": first, "after_step": last},
        "train_curve": [{k: r.get(k) for k in curve_keys} for r in train_rows],
        "minutes": round(minutes, 1),
        "model": cfg.model.name,
    }
    keys = ("e2e_strict_em", "imr_strict_em", "coupled")
    delta = {k: result["held_out"]["after"][k] - result["held_out"]["before"][k] for k in keys}
    result["held_out"]["delta"] = delta
    out = Path(args.results_dir)
    write_json(out / "learning_check.json", result)
    b, a = result["held_out"]["before"], result["held_out"]["after"]
    d = delta["coupled"]
    verdict = ("held-out coupled reward rose" if d > 0 else
               "held-out coupled reward did NOT rise" if d < 0 else "held-out reward unchanged")
    lines = [
        f"# Learning check (CPU, {MODEL_NAMES.get(cfg.model.name, cfg.model.name)})", "",
        f"`python experiments/learning_check.py --steps {args.steps}` — {len(tasks)} E2E tasks from the "
        f"embedded gensim dump ({result['tasks']['n_train']} train / {args.n_eval} held-out), answer "
        f"mentioned >= {args.min_mentions} times, masked in the {args.mask_scope} scope, "
        f"<= {args.max_chunks} chunks of {args.chunk_tokens} tokens; "
        f"cpu_memtrain preset (G1={cfg.rollout.g1}, G2={cfg.rollout.g2}, {cfg.batch_size} docs/step, "
        f"lr {cfg.optim.lr}, reward {reward}, answer mode {cfg.agent.answer_mode}); "
        f"{result['minutes']} min on 2 shared cores.", "",
        f"| held-out (greedy) | step 0 | step {last} | delta |", "|---|---|---|---|",
        *[f"| {k} | {b[k]:.3f} | {a[k]:.3f} | {delta[k]:+.3f} |" for k in keys],
        f"| no_boxed_final | {b['no_boxed_final']:.3f} | {a['no_boxed_final']:.3f} | |", "",
        f"**Verdict:** {verdict} after {cfg.steps} steps. With {args.n_eval} held-out tasks one task is "
        f"{1 / args.n_eval:.3f} of E2E EM, so differences of one or two tasks are noise.", "",
        "Training rollouts (sampled):", "",
        f"| step | coupled | e2e {reward} | imr {reward} | E2E groups dropped | IMR groups dropped | KL | "
        "clip frac | update tok/s | step s |", "|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['step']} | {r['reward/coupled']:.3f} | {r[f'reward/e2e_{reward}']:.3f} | "
          f"{r[f'reward/imr_{reward}']:.3f} | "
          f"{r['groups/e2e_dropped']:.0f} | {r['groups/imr_dropped']:.0f} | {r['loss/kl']:.2e} | "
          f"{r['loss/clip_frac']:.3f} | {r['update/tokens_per_s']:.0f} | {r['time/step_s']:.0f} |"
          for r in result["train_curve"]],
    ]
    (out / "learning_check.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
