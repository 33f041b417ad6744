"""Every benchmark, one command: runs them one after another, then prints their headline ratios.

    python benchmarks/run_all.py          # the full runs the README table reports (about 1.5 hours, 2 cores)
    python benchmarks/run_all.py --quick  # smoke runs (minutes): they write *_quick files, not the full ones

Each benchmark runs in its own interpreter (so one's memory high-water mark does not leak into the next) with
the arguments the README table lists, and writes benchmarks/results/<name>.{json,md}. Each benchmark times
its baseline in the same run, so the ratios below are comparable across machines; the absolute times are not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# (script, full-run arguments, quick-run arguments or None to skip in --quick, results stem, quick stem)
BENCHMARKS = [
    ("bench_data_build.py", [], None, "data_build", None),
    ("bench_data_scale.py", [], ["--quick"], "data_scale", "data_scale_quick"),
    ("bench_rollout.py", ["--threads", "1"], ["--threads", "1", "--quick"], "rollout", "rollout_quick"),
    ("bench_context_length.py", ["--threads", "1"], ["--threads", "1", "--quick"], "context_length",
     "context_length_quick"),
    ("bench_train.py", ["--rows", "8", "--repeats", "2"], ["--quick"], "train", None),
    ("bench_serve_load.py", ["--threads", "1"], ["--threads", "1", "--quick"], "serve_load",
     "serve_load_quick"),
]


def headline(stem: str) -> str:
    """One line of the benchmark's own result file: its ratio against the baseline of the same run."""
    path = RESULTS / f"{stem}.json"
    if not path.is_file():
        return "no results file"
    r = json.loads(path.read_text(encoding="utf-8"))
    if stem.startswith("data_build"):
        x = r["results"]["memtrain per-article"]["ratio_vs_wikiextractor"]
        return f"full build takes {x:.2f}x wikiextractor's time (target <= 1.5x)"
    if stem.startswith("data_scale"):
        sp = r["speedup_2_workers"][-1]
        lines = r["rss_lines"]["index_peak_mib"]
        return (f"{r['sizes'][0]} -> {r['sizes'][-1]} passages: time/task "
                f"{r['per_task_ratio_largest_vs_smallest']}x (target <= 1.5x), 2 workers "
                f"{sp['build_separate_processes']}x / {sp['build_same_process']}x (target >= 1.7x), "
                f"peak RSS {lines['bytes_per_passage']} B/passage")
    if stem.startswith("rollout"):
        bound = r.get("speedup_bound_free_decode")
        return f"batched rollout {r['speedup']:.2f}x one-at-a-time (target >= 4x; prefill bound {bound}x)"
    if stem.startswith("context_length"):
        first, last = r["rows"][0], r["rows"][-1]
        return (f"{first['input_tokens']} -> {last['input_tokens']} tokens: time/token "
                f"{last['time_per_token_vs_shortest']}x, "
                f"RSS after the last step {last.get('rss_last_step_vs_shortest')}x, update peak "
                f"{last.get('update_peak_median_vs_shortest')}x the shortest's")
    if stem.startswith("serve_load"):
        top = r["levels"][-1]["concurrency"]
        ratio = r["throughput_ratio_vs_concurrency_1"]
        return (f"serving at {top} clients {ratio:.2f}x one client's tokens/s, "
                f"{r['failed_total']} failed, {r['lost_total']} lost")
    if stem.startswith("train"):
        return f"GRPO update {r['ratio_vs_trl']:.2f}x TRL GRPOTrainer tokens/s (target >= 1.0x)"
    return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke runs; skips the data-build benchmark")
    ap.add_argument("--only", default=None, help="comma-separated results stems, e.g. rollout,train")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    summary, failed = [], []
    for script, full, quick, stem, quick_stem in BENCHMARKS:
        if only and stem not in only:
            continue
        argv = quick if args.quick else full
        if argv is None:
            print(f"run_all: skipping {script} in --quick (it has no smoke mode)")
            continue
        print(f"run_all: python benchmarks/{script} {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / script), *argv])
        took = time.perf_counter() - t0
        if rc != 0:
            failed.append(script)
            summary.append(f"{script}: FAILED (exit {rc}) after {took:.0f} s")
            continue
        # bench_train --quick prints its ratio without writing a file; nothing to summarise from disk
        shown = quick_stem if args.quick else stem
        summary.append(f"{script}: {headline(shown) if shown else 'see its output above'} ({took:.0f} s)")
    print("\n".join(["", "run_all summary:", *summary]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
