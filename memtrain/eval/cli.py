"""``memtrain eval`` (long-document QA or the proxy tasks) and ``memtrain report`` (tables and plots).

``memtrain eval`` builds the tasks for every context length, runs the memory agent (and optionally the
full-context baseline), and writes to ``--out``: ``results.jsonl`` and ``metrics.json`` (memory agent),
``full_context/`` (baseline), ``results.md`` (the table) and ``accuracy_vs_length.png``. Re-running the same
command with the same ``--out`` resumes where it stopped.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from memtrain.errors import MemtrainError

QA_TASKS = ("hotpotqa", "squad", "narrativeqa")


def _int_list(s: str) -> list[int]:
    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {s!r}")
    return vals


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a memory agent on long-document QA or the proxy tasks",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="smollm2", help="smollm2 (embedded), tiny, a hub id or a local path")
    p.add_argument("--engine", default="hf", choices=["hf", "openai", "vllm"], help="generation engine")
    p.add_argument("--base-url", help="OpenAI-compatible server URL (--engine openai)")
    p.add_argument("--tokenizer", help="tokenizer for chunking with openai/vllm engines (default: --model)")
    p.add_argument("--task", default="hotpotqa", choices=[*QA_TASKS, "proxy"], help="benchmark")
    p.add_argument("--data", help="data file (default: the ../shared/data copy, relative to the current dir)")
    p.add_argument("--tasks-dir", help="built E2E task shards for --task proxy (`memtrain data build`)")
    p.add_argument("--n-docs", type=_int_list, default=[10, 20, 50],
                   help="context lengths in documents (gold included), comma-separated")
    p.add_argument("--num-questions", type=int, default=20, help="questions per length (0 = all)")
    p.add_argument("--chunk-tokens", type=int, default=512, help="tokens per chunk")
    p.add_argument("--memory-tokens", type=int, default=256, help="memory budget in tokens")
    p.add_argument("--answer-tokens", type=int, default=64, help="final-answer budget in tokens")
    p.add_argument("--max-chunks", type=int, help="read at most this many chunks (default: all)")
    p.add_argument("--prompt-version", default="v1", help="prompt template version")
    p.add_argument("--answer-mode", default="boxed", choices=["boxed", "lenient"],
                   help="boxed: score only \\boxed{} answers (paper); lenient: fall back to the first line "
                        "when there is none (for tiny models; see memtrain.scoring)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0, help="seed for task construction and sampling")
    p.add_argument("--batch-size", type=int, default=16, help="documents read together (turn-synchronous)")
    p.add_argument("--baseline", choices=["none", "full-context"], default="none",
                   help="also run the model on the whole document in one prompt")
    p.add_argument("--max-context-tokens", type=int, default=8192,
                   help="full-context baseline: longer prompts are skipped, not scored as wrong")
    p.add_argument("--dtype", default="auto", help="hf engine dtype: auto, bf16, fp16, fp32")
    p.add_argument("--device", default="auto", help="hf engine device: auto, cpu, cuda")
    p.add_argument("--label", help="row label in the table (default: model name)")
    p.add_argument("--trace", action="store_true", help="write every agent conversation to trace.jsonl")
    p.add_argument("--no-resume", action="store_true", help="start over, discarding results in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run_eval)

    r = subparsers.add_parser("report", help="table and plot from one or several eval metrics.json files")
    r.add_argument("metrics", nargs="+", help="metrics.json files or eval output folders")
    r.add_argument("--out", required=True, help="folder for results.md and accuracy_vs_length.png")
    r.add_argument("--metric", default="accuracy", choices=["accuracy", "em", "f1", "strict_em", "sub_em"])
    r.add_argument("--title", help="plot and table title")
    r.set_defaults(func=run_report)


def _data_path(args: argparse.Namespace) -> Path:
    from memtrain.tasks.longqa import DEFAULT_PATHS

    path = Path(args.data or DEFAULT_PATHS[args.task])
    if not path.is_file():
        hint = "" if args.data else f" (the default location, relative to {Path.cwd()})"
        raise MemtrainError(f"{args.task} data file not found: {path}{hint}; pass --data PATH")
    return path


def _engine(args: argparse.Namespace) -> Any:
    from memtrain.agent.engines import build_engine

    if args.engine == "hf":
        return build_engine("hf", args.model, dtype=args.dtype, device=args.device,
                            batch_size=args.batch_size)
    opts: dict[str, Any] = {"tokenizer": args.tokenizer or args.model}
    if args.engine == "openai":
        opts["base_url"] = args.base_url
    return build_engine(args.engine, args.model, **opts)


def _agent_cfg(args: argparse.Namespace) -> Any:
    from memtrain.agent.loop import AgentConfig
    from memtrain.config import from_dict

    keys = ("chunk_tokens", "memory_tokens", "answer_tokens", "max_chunks", "prompt_version", "answer_mode")
    return from_dict(AgentConfig, {k: getattr(args, k) for k in keys})


def _check_args(args: argparse.Namespace) -> None:
    for name in ("num_questions",):
        if getattr(args, name) < 0:
            raise MemtrainError(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("chunk_tokens", "memory_tokens", "answer_tokens", "batch_size", "max_context_tokens"):
        if getattr(args, name) <= 0:
            raise MemtrainError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")


def run_eval(args: argparse.Namespace) -> int:
    _check_args(args)
    out = Path(args.out)
    if args.task == "proxy":
        return _run_proxy(args, out)
    data = _data_path(args)  # before loading any model: a wrong path fails in a second

    from memtrain.agent.engine import Sampling
    from memtrain.tasks.longqa import build_longqa_tasks, load_source, select_questions

    from .baselines import evaluate_full_context
    from .report import write_report
    from .runner import evaluate

    agent_cfg = _agent_cfg(args)
    sampling = Sampling(temperature=args.temperature, seed=args.seed)
    items, pool = load_source(args.task, data)
    engine = _engine(args)
    if engine.tokenizer is None:
        raise MemtrainError("the engine has no tokenizer to chunk documents with; pass --tokenizer NAME")
    chosen = select_questions(items, args.num_questions, args.seed)
    tasks = build_longqa_tasks(chosen, pool, args.n_docs, engine.tokenizer, args.chunk_tokens, args.seed,
                               progress=not args.no_progress)
    label = args.label or args.model
    run_info = {
        "model": args.model, "engine": args.engine, "task": args.task, "data": str(data), "seed": args.seed,
        "temperature": args.temperature,
    }
    resume = not args.no_resume
    progress = not args.no_progress
    paths = [out / "metrics.json"]
    evaluate(engine, tasks, agent_cfg, sampling, out, batch_size=args.batch_size, resume=resume,
             label=f"{label} memory agent", run_info={**run_info, "chunk_tokens": args.chunk_tokens,
                                                       "memory_tokens": args.memory_tokens,
                                                       "answer_tokens": args.answer_tokens,
                                                       "max_chunks": args.max_chunks,
                                                       "prompt_version": args.prompt_version,
                                                       "answer_mode": args.answer_mode},
             trace=args.trace, progress=progress)
    if args.baseline == "full-context":
        evaluate_full_context(engine, tasks, sampling, out / "full_context", answer_tokens=args.answer_tokens,
                              max_context_tokens=args.max_context_tokens, batch_size=args.batch_size,
                              resume=resume, label=f"{label} full context", answer_mode=args.answer_mode,
                              run_info={**run_info, "max_context_tokens": args.max_context_tokens,
                                        "answer_tokens": args.answer_tokens}, progress=progress)
        paths.append(out / "full_context" / "metrics.json")
    table = write_report(paths, out, title=f"{args.task}: accuracy vs context length ({args.model})")
    print(table)
    print(f"wrote {out / 'results.md'}, {out / 'accuracy_vs_length.png'}, {out / 'metrics.json'}")
    return 0


def _run_proxy(args: argparse.Namespace, out: Path) -> int:
    if not args.tasks_dir:
        raise MemtrainError("--task proxy needs --tasks-dir DIR with built E2E tasks (`memtrain data build`)")
    from memtrain.agent.engine import Sampling
    from memtrain.io import atomic_open
    from memtrain.tasks.build import load_tasks

    from .proxy import evaluate_proxy

    tasks = load_tasks(args.tasks_dir)
    if args.num_questions:
        tasks = tasks[: args.num_questions]
    if not tasks:
        raise MemtrainError(f"no tasks in {args.tasks_dir}")
    agent_cfg = _agent_cfg(args)
    engine = _engine(args)
    label = args.label or args.model
    m = evaluate_proxy(engine, tasks, agent_cfg, Sampling(temperature=args.temperature, seed=args.seed), out,
                       seed=args.seed, batch_size=args.batch_size, resume=not args.no_resume, label=label,
                       run_info={"model": args.model, "engine": args.engine, "task": "proxy",
                                 "tasks_dir": str(args.tasks_dir), "seed": args.seed},
                       progress=not args.no_progress)

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    table = (
        "| method | E2E acc (strict EM) | IMR acc (strict EM) | tasks | IMR probes |\n|---|---|---|---|---|\n"
        f"| {label} | {pct(m['e2e_accuracy'])} | {pct(m['imr_accuracy'])} | {m['n']} | {m['n_imr']} |\n"
    )
    with atomic_open(out / "results.md") as f:
        f.write(table)
    print(table)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(write_report(args.metrics, args.out, metric=args.metric, title=args.title))
    return 0
