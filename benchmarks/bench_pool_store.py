"""The passage pool in memory (a list, as before) vs on disk (the passage store), per build stage.

    nice -n 10 python benchmarks/bench_pool_store.py                        # 10k and 100k passages
    python benchmarks/bench_pool_store.py --sizes 2000 --tasks 40           # a smoke run

Each (size, setting) is one ``bench_data_scale.py --one`` run (its own interpreter, the ``cpu`` preset,
``--tasks`` tasks in 4 shards, 1 worker) on the same corpus of real passages and replicas
(``bench_data_scale.write_corpus``), with peak RSS per stage as that script measures it (VmHWM reset at
each stage): read, index (the pool's form index + the retriever), build. Settings:

- ``memory``: ``pool=memory``, the pre-store path (every passage a Python object from read to the end);
- ``disk``: ``pool=disk`` (the default): passages streamed into ``out/pool`` and memory-mapped;
- ``disk+tantivy``: ``pool=disk retriever=tantivy``: the BM25 index on disk too (its hits differ from
  ``bm25``'s: ``bench_bm25_index.py``), so the tasks differ and ms/task is not comparable one to one.

``read MiB/10k`` is the growth of RSS over the read stage per 10k passages, constant costs included (the
disk path imports pyarrow, ~50 MiB); the table below it gives the growth per passage between the smallest
and the largest size, where constant costs cancel: what holding the pool costs.
Writes benchmarks/results/pool_store.{json,md} (other ``--sizes``: pool_store_<sizes>.*).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_data_scale import real_passages, write_corpus

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_SIZES = [10_000, 100_000]
SETTINGS = {"memory": ["pool=memory"], "disk": ["pool=disk"],
            "disk+tantivy": ["pool=disk", "retriever=tantivy"]}
KEEP = ["read_corpus_s", "index_s", "build_s", "ms_per_task", "tasks", "start_rss_mib", "read_peak_mib",
        "read_end_rss_mib", "index_peak_mib", "index_end_rss_mib", "build_peak_mib"]


def run(corpus: Path, out: Path, tasks: int, overrides: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).with_name("bench_data_scale.py")), "--one", "--corpus",
           str(corpus), "--out", str(out), "--workers-one", "1", "--tasks", str(tasks), "--paper-tasks", "0",
           "--set", *overrides]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def markdown(res: dict) -> str:
    lines = ["# Passage pool in memory vs on disk (the passage store), per build stage", "",
             f"`{res['command']}` (cpu preset, {res['tasks']} tasks, 1 worker; {res['cpus']} CPUs shared "
             f"with other jobs, load average at the end {res['load_avg']}: times are upper bounds). "
             "Method: the script's docstring.", "",
             "| passages | pool | read s | index s | build ms/task | read peak MiB | read MiB/10k | "
             "index peak MiB | build peak MiB |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        grow = (r["read_end_rss_mib"] - r["start_rss_mib"]) * 10_000 / r["passages"]
        lines.append(f"| {r['passages']:,} | {r['setting']} | {r['read_corpus_s']} | {r['index_s']} | "
                     f"{r['ms_per_task']} | {r['read_peak_mib']} | {grow:.1f} | {r['index_peak_mib']} | "
                     f"{r['build_peak_mib']} |")
    sizes = sorted({r["passages"] for r in res["rows"]})
    if len(sizes) > 1:  # the slope between the smallest and largest size: constant costs (imports) cancel
        lo, hi = sizes[0], sizes[-1]
        lines += ["", f"Growth per passage from {lo:,} to {hi:,} passages (bytes; RSS at the end of read, "
                  "and the peaks):", "", "| pool | read end | read peak | index peak | build peak |",
                  "|---|---:|---:|---:|---:|"]
        for name in dict.fromkeys(r["setting"] for r in res["rows"]):
            a, b = ({r["passages"]: r for r in res["rows"] if r["setting"] == name}[n] for n in (lo, hi))
            per = [round((b[k] - a[k]) * 2**20 / (hi - lo)) for k in
                   ("read_end_rss_mib", "read_peak_mib", "index_peak_mib", "build_peak_mib")]
            lines.append(f"| {name} | " + " | ".join(map(str, per)) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=DEFAULT_SIZES)
    ap.add_argument("--tasks", type=int, default=100)
    args = ap.parse_args()
    base = real_passages()
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_pool_store_") as td:
        for n in args.sizes:
            corpus = Path(td) / f"corpus_{n}.jsonl"
            write_corpus(base, n, corpus)
            for name, overrides in SETTINGS.items():
                r = run(corpus, Path(td) / f"out_{n}_{name}", args.tasks, overrides)
                row = {"passages": r["passages"], "setting": name, **{k: r.get(k) for k in KEEP}}
                print(json.dumps(row), flush=True)
                rows.append(row)
    res = {"rows": rows, "tasks": args.tasks, "cpus": os.cpu_count(),
           "load_avg": tuple(round(x, 2) for x in os.getloadavg()),
           "seconds": round(time.perf_counter() - t0),
           "command": " ".join(["python", *sys.argv])}
    stem = "pool_store" if args.sizes == DEFAULT_SIZES else f"pool_store_{'_'.join(map(str, args.sizes))}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
