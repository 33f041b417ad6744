"""Training-update throughput: memtrain's GRPO update vs TRL's ``GRPOTrainer`` loss, same batch, one run.

    python benchmarks/bench_train.py            # embedded SmolLM2-135M
    python benchmarks/bench_train.py --quick    # tiny random model, seconds

Both sides get the same model weights, the same single-turn batch (same prompt and completion token ids and
lengths, same advantages), the same micro-batch size, the same bf16 autocast / gradient-checkpointing
settings, and one AdamW step per update. Only the update is timed (rollouts are engine-bound and identical
by construction): memtrain's :func:`memtrain.rl.trainer.update` (collate -> forward on the completion window
-> clipped loss -> backward per micro-batch -> clip -> step) against TRL's ``GRPOTrainer._compute_loss``
called per micro-batch with TRL's own input layout (left-padded prompts, right-padded completions) + backward
+ clip + step. KL is off on both sides (beta = kl_coef = 0) so neither computes reference log-probs.
Throughput = conversation tokens (prompt + completion) per second per update. Peak RSS is the process
high-water mark per side (reset through /proc/self/clear_refs before each side where the kernel allows).
Writes benchmarks/results/train.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from memprobe import reset_peak, status_mib  # benchmarks/memprobe.py (the script's folder)

ROOT = Path(__file__).resolve().parents[1]


def make_batch(tok, n: int, prompt_len: int, completion_len: int, seed: int = 0):
    """n single-turn rows of real text tokens, lengths jittered around the targets (same for both sides)."""
    from memtrain.records import Row

    g = torch.Generator().manual_seed(seed)
    words = ("memory agent reads the article chunk by chunk and keeps every useful detail about the entity "
             "named in the problem while the section mentions places dates and people ").split()
    rows = []
    for i in range(n):
        pl = prompt_len + int(torch.randint(-prompt_len // 8, prompt_len // 8 + 1, (1,), generator=g))
        q = completion_len // 4
        cl = completion_len + int(torch.randint(-q, q + 1, (1,), generator=g))
        text = " ".join(words[int(j)] for j in torch.randint(0, len(words), (pl + cl,), generator=g))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        while len(ids) < pl + cl:
            ids = ids + ids
        rows.append(Row(ids[:pl], ids[pl : pl + cl], advantage=float(i % 3) - 1.0, kind="update"))
    return rows


def ours(model, rows, args):
    from memtrain.config import from_dict
    from memtrain.rl import trainer
    from memtrain.rl.config import TrainConfig

    cfg = from_dict(TrainConfig, {"data": {"tasks_dir": "unused"}, "loss": {"kl_coef": 0.0},
                                  "micro_batch_size": args.micro_batch, "bf16": args.bf16,
                                  "optim": {"lr": 1e-6, "grad_clip": 1.0}})
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    pad = model.config.pad_token_id or 0

    def step():
        trainer.update(model, None, rows, opt, cfg, step=1, pad_id=pad)

    return step


def trl_side(model, tok, rows, args):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    out = ROOT / "benchmarks" / ".work" / "trl"
    conf = GRPOConfig(output_dir=str(out), per_device_train_batch_size=args.micro_batch,
                      num_generations=2, beta=0.0, loss_type="grpo", bf16=False, use_cpu=True,
                      report_to=[], logging_steps=10**9, save_strategy="no", learning_rate=1e-6,
                      max_completion_length=max(len(r.completion_ids) for r in rows), epsilon=0.2,
                      epsilon_high=0.28)
    ds = Dataset.from_list([{"prompt": "x"}] * 4)
    tr = GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=conf,
                     train_dataset=ds, processing_class=tok)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    pad = tok.pad_token_id
    micro = [rows[i : i + args.micro_batch] for i in range(0, len(rows), args.micro_batch)]
    inputs = []
    for mb in micro:  # TRL's layout: prompts left-padded, completions right-padded
        pw, cw = max(len(r.prompt_ids) for r in mb), max(len(r.completion_ids) for r in mb)
        p = torch.tensor([[pad] * (pw - len(r.prompt_ids)) + r.prompt_ids for r in mb])
        pm = torch.tensor([[0] * (pw - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in mb])
        c = torch.tensor([r.completion_ids + [pad] * (cw - len(r.completion_ids)) for r in mb])
        cm = torch.tensor([[1] * len(r.completion_ids) + [0] * (cw - len(r.completion_ids)) for r in mb])
        inputs.append({"prompt_ids": p, "prompt_mask": pm, "completion_ids": c, "completion_mask": cm,
                       "advantages": torch.tensor([r.advantage for r in mb]), "old_per_token_logps": None,
                       "num_items_in_batch": cm.sum()})
    tr.current_gradient_accumulation_steps = len(inputs)
    tr.model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        for inp in inputs:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = tr._compute_loss(tr.model, inp)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), 1.0)
        opt.step()

    return step


def timed(step, repeats: int) -> tuple[list[float], float]:
    reset_ok = reset_peak()
    step()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times, (status_mib() or float("nan")) / 1024 if reset_ok else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny random model, small batch")
    ap.add_argument("--model", default=None, help="model name (default smollm2; tiny with --quick)")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--completion-len", type=int, default=128)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-bf16", dest="bf16", action="store_false")
    ap.add_argument("--no-gc", dest="gc", action="store_false", help="disable gradient checkpointing")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.prompt_len, args.completion_len, args.repeats = 8, 128, 32, 2
    name = args.model or ("tiny" if args.quick else "smollm2")

    from memtrain.models import cpu_has_bf16, enable_checkpointing, load_model

    if args.bf16 and not torch.cuda.is_available() and not cpu_has_bf16():
        args.bf16 = False  # as `memtrain train` decides: emulated bf16 would time torch's fallback, not us
        print("bf16 autocast off on both sides: this CPU has no native bf16 (AVX512-BF16/AMX)")

    torch.manual_seed(0)
    base, tok = load_model(name, dtype="fp32")
    rows = make_batch(tok, args.rows, args.prompt_len, args.completion_len)
    n_tokens = sum(len(r.prompt_ids) + len(r.completion_ids) for r in rows)
    results = {}
    for label in ("memtrain", "trl"):
        model = copy.deepcopy(base)
        if args.gc:
            enable_checkpointing(model)
        model.train()
        step = ours(model, rows, args) if label == "memtrain" else trl_side(model, tok, rows, args)
        times, peak = timed(step, args.repeats)
        med = statistics.median(times)
        results[label] = {"seconds_median": med, "seconds_all": times, "tokens_per_s": n_tokens / med,
                          "peak_rss_gib": peak}
        print(f"{label}: {n_tokens / med:.0f} conversation tok/s (median {med:.2f}s over {args.repeats}), "
              f"peak RSS {peak:.2f} GiB")
        del model, step
    ratio = results["memtrain"]["tokens_per_s"] / results["trl"]["tokens_per_s"]
    import trl

    summary = {"model": name, "rows": args.rows, "prompt_len": args.prompt_len,
               "completion_len": args.completion_len, "micro_batch": args.micro_batch, "bf16": args.bf16,
               "gradient_checkpointing": args.gc, "conversation_tokens": n_tokens,
               "completion_tokens": sum(len(r.completion_ids) for r in rows), "trl_version": trl.__version__,
               "torch_threads": torch.get_num_threads(), "results": results, "ratio_vs_trl": ratio}
    print(f"ratio memtrain / TRL = {ratio:.2f}x (target >= 1.0x)")
    if not args.quick:
        from memtrain.io import write_json

        out = ROOT / "benchmarks" / "results"
        write_json(out / "train.json", summary)
        m, t = results["memtrain"], results["trl"]
        md = [
            "# Training-update throughput: memtrain vs TRL GRPOTrainer", "",
            f"`python benchmarks/bench_train.py` — model {name}, {args.rows} single-turn rows "
            f"(prompt ~{args.prompt_len}, completion ~{args.completion_len} tokens; {n_tokens} conversation "
            f"tokens), micro-batch {args.micro_batch}, bf16 autocast {args.bf16}, gradient checkpointing "
            f"{args.gc}, KL off, TRL {trl.__version__}, CPU ({torch.get_num_threads()} threads, shared).",
            "", "| side | median s / update | conversation tok/s | peak RSS GiB |", "|---|---|---|---|",
            f"| memtrain | {m['seconds_median']:.2f} | {m['tokens_per_s']:.0f} | {m['peak_rss_gib']:.2f} |",
            f"| TRL | {t['seconds_median']:.2f} | {t['tokens_per_s']:.0f} | {t['peak_rss_gib']:.2f} |", "",
            f"**Ratio memtrain / TRL: {ratio:.2f}x** (target >= 1.0x).", "",
            "memtrain computes the LM head only over the completion window and uses gather − logsumexp "
            "instead of a full log-softmax; TRL also computes per-token entropies in its loss. Timings come "
            "from a machine shared with other jobs, so repeat before drawing fine conclusions.",
        ]
        (out / "train.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
