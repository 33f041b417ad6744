"""Memory-agent rollout throughput: concurrent trajectories through the turn batcher vs one document at a
time, same run.

    python benchmarks/bench_rollout.py             # embedded SmolLM2, 16 HotpotQA documents, 3 chunks each
    python benchmarks/bench_rollout.py --quick     # 8 documents, 2 chunks, shorter budgets (a minute or two)
    python benchmarks/bench_rollout.py --dtype fp32 --name rollout_fp32

Both sides use the same engine (same weights, dtype, micro-batch size), the same documents (real HotpotQA
dev items: their 10 paragraphs concatenated, read for ``--chunks`` chunks), the same budgets and greedy
decoding. The baseline calls :func:`run_memory_agent` once per document; the batched side once for all of
them: the per-trajectory loops run concurrently and the turn batcher makes each step one batched
``generate``. Reports documents/s, generated tokens/s and the speedup, and
whether both sides produced identical memories and answers (in bf16, batching changes the shape of the
matmuls and so can flip a near-tied greedy choice; that is reported, not hidden).
Writes benchmarks/results/rollout.{json,md} (``--name`` changes the stem; ``--quick`` writes rollout_quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "hotpotqa" / "ircot_hotpotqa_dev_subsampled500.jsonl"


def load_items(n: int) -> list[dict]:
    if not DATA.is_file():
        sys.exit(f"bench_rollout: {DATA} not found; it needs ../shared/data beside the repository")
    items = []
    with DATA.open(encoding="utf-8") as f:
        for line in f:
            items.append(json.loads(line))
            if len(items) == n:
                break
    return items


def gen_tokens(trajs) -> int:
    return sum(len(t.completion.completion_ids) for tr in trajs for t in tr.turns)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n-docs", type=int, default=16)
    ap.add_argument("--chunks", type=int, default=3, help="chunks read per document")
    ap.add_argument("--chunk-tokens", type=int, default=256)
    ap.add_argument("--memory-tokens", type=int, default=64)
    ap.add_argument("--answer-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16, help="HFEngine micro-batch size")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on CPUs with native bf16), bf16, fp32")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch default); 1 avoids OpenMP spin-waits on a shared, busy CPU",
    )
    ap.add_argument("--quick", action="store_true", help="8 documents, 2 chunks, memory 32")
    ap.add_argument(
        "--name", default="rollout", help="results file stem (e.g. rollout_fp32 for a second dtype)"
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    if args.quick:  # a smoke run: never overwrite the full run's results
        args.n_docs, args.chunks, args.memory_tokens = 8, 2, 32
        args.name = args.name if args.name != "rollout" else "rollout_quick"

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from memtrain.agent.engine import HFEngine, Sampling
    from memtrain.agent.loop import AgentConfig, make_task, run_memory_agent
    from memtrain.models import load_model

    model, tok = load_model(args.model, dtype=args.dtype)
    engine = HFEngine(model, tok, batch_size=args.batch_size)
    cfg = AgentConfig(
        chunk_tokens=args.chunk_tokens,
        memory_tokens=args.memory_tokens,
        answer_tokens=args.answer_tokens,
        max_chunks=args.chunks,
    )
    tasks = []
    for it in load_items(args.n_docs):
        doc = "\n\n".join(f"{c['title']}\n{c['paragraph_text']}" for c in it["contexts"])
        tasks.append(make_task(doc, it["question_text"], tok, cfg, task_id=it["question_id"]))
    sampling = Sampling()  # greedy
    engine.generate([[{"role": "user", "content": "warm up"}]], Sampling(max_new_tokens=4))
    load0 = os.getloadavg()[0]

    t0 = time.perf_counter()
    sequential = [run_memory_agent(engine, [t], cfg, sampling, progress=False)[0] for t in tasks]
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = run_memory_agent(engine, tasks, cfg, sampling, progress=False)
    t_bat = time.perf_counter() - t0

    same = [
        s.memories == b.memories and s.response == b.response
        for s, b in zip(sequential, batched, strict=True)
    ]
    n_turns = sum(len(t.turns) for t in batched)
    n = len(tasks)
    result = {
        "benchmark": "rollout",
        "model": args.model,
        "dtype": str(model.dtype).removeprefix("torch."),
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_avg_at_start": round(load0, 2),
        "n_docs": n,
        "chunks_per_doc": [len(t.chunks[: cfg.max_chunks]) for t in tasks],
        "budgets": {"chunk": cfg.chunk_tokens, "memory": cfg.memory_tokens, "answer": cfg.answer_tokens},
        "batch_size": args.batch_size,
        "conversations": n_turns,
        "sequential": {
            "seconds": round(t_seq, 2),
            "docs_per_s": round(n / t_seq, 4),
            "gen_tokens": gen_tokens(sequential),
            "gen_tokens_per_s": round(gen_tokens(sequential) / t_seq, 2),
        },
        "batched": {
            "seconds": round(t_bat, 2),
            "docs_per_s": round(n / t_bat, 4),
            "gen_tokens": gen_tokens(batched),
            "gen_tokens_per_s": round(gen_tokens(batched) / t_bat, 2),
        },
        "speedup": round(t_seq / t_bat, 2),
        "outputs_identical": f"{sum(same)}/{n}",
        "mismatched_docs": [t.id for t, ok in zip(tasks, same, strict=True) if not ok],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    s, b = result["sequential"], result["batched"]
    cmd = " ".join(["python benchmarks/bench_rollout.py", *sys.argv[1:]])
    setup = (
        f"{args.model} ({result['dtype']}, {result['device']}, {result['torch_threads']} torch threads, "
        f"load average {result['load_avg_at_start']} at start), {n} HotpotQA docs x {args.chunks} chunks "
        f"of {cfg.chunk_tokens} tokens, memory {cfg.memory_tokens}, answer {cfg.answer_tokens}, greedy, "
        f"micro-batch {args.batch_size}"
    )
    md = [
        "# Rollout throughput: batched memory loop vs one document at a time",
        "",
        f"`{cmd}`: {setup}.",
        "",
        "| loop | seconds | docs/s | generated tokens | generated tokens/s |",
        "|---|---|---|---|---|",
        f"| one document at a time (baseline) | {s['seconds']} | {s['docs_per_s']} | {s['gen_tokens']} | "
        f"{s['gen_tokens_per_s']} |",
        f"| batched, turn-synchronous | {b['seconds']} | {b['docs_per_s']} | {b['gen_tokens']} | "
        f"{b['gen_tokens_per_s']} |",
        "",
        f"**Speedup: {result['speedup']}x.** Identical memories and answers (batched vs one at a time): "
        f"{result['outputs_identical']} documents.",
        "",
    ]
    (out / f"{args.name}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
