"""Data-build throughput: ``memtrain data build`` vs wikiextractor on the same Wikipedia dump, one run.

    python benchmarks/bench_data_build.py                 # gensim's embedded enwiki excerpt, 1 process
    python benchmarks/bench_data_build.py --processes 2 --repeats 1

Both tools run as command-line programs in fresh interpreters (so interpreter start-up and imports are
counted on both sides) with the same number of processes, on the same ``.xml.bz2`` dump:

- **wikiextractor** (``python -m wikiextractor.WikiExtractor DUMP --json -o TMP --processes P``): dump ->
  clean article text. It is the usual first step of a Wikipedia pipeline and does strictly less work than
  our build.
- **memtrain** (``memtrain data build cpu corpus=DUMP workers=P``): dump -> clean passages
  with link/rule entities -> BM25 index -> related + random passages per pivot -> masking everywhere ->
  token chunks (SmolLM2 tokenizer) -> leak check -> IMR candidates -> JSONL shards + stats.

Two memtrain workloads are timed: ``per-article`` builds one E2E task per article wikiextractor emits
(equal output count: one document in, one document out), the headline ratio; ``all-pivots`` tries every
passage of the pool once as a pivot (the default of ``memtrain data build``), ~12 passages rendered and
tokenized per task, so it does ~30x the text work of wikiextractor and is reported for throughput.
Rates: passages/s = passages read from the dump (memtrain pool; wikiextractor: non-empty paragraphs of
its output) per second of wall time; tokens/s = SmolLM2 tokens of that text per second (counted after
timing); task tokens/s = tokens of all task chunks per second. Times are the median of ``--repeats`` runs.
Writes benchmarks/results/data_build.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def timed(cmd: list[str]) -> float:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-2000:]}")
    return dt


def wikiextractor_output(folder: Path) -> list[dict]:
    docs = []
    for f in sorted(folder.rglob("wiki_*")):
        docs.extend(json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip())
    return docs


def count_tokens(tok, texts: list[str]) -> int:
    return sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]) if texts else 0


def run_wikiextractor(dump: str, processes: int, tmp: Path) -> tuple[float, Path]:
    out = tmp / "wikiextractor"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "wikiextractor.WikiExtractor", dump, "--json", "-q", "-o", str(out),
           "--processes", str(processes)]
    return timed(cmd), out


def run_memtrain(
    dump: str, processes: int, tmp: Path, num_tasks: int | None, name: str
) -> tuple[float, Path]:
    out = tmp / name
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "memtrain.cli", "data", "build", "cpu", f"corpus={dump}", f"out={out}",
           f"workers={processes}", f"num_tasks={num_tasks or 'null'}", "progress=false"]
    return timed(cmd), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dump", default=None, help="a .xml.bz2 dump (default: gensim's embedded excerpt)")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-all-pivots", action="store_true", help="only the per-article workload")
    args = ap.parse_args()

    from memtrain.corpus import EMBEDDED_CORPUS, resolve_source
    from memtrain.tasks.chunking import resolve_tokenizer

    dump = args.dump or resolve_source(EMBEDDED_CORPUS)
    tok = resolve_tokenizer("smollm2")
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        wx_times, our_times = [], []
        for _ in range(args.repeats):  # interleaved, so load changes on the machine hit both sides
            t, wx_dir = run_wikiextractor(dump, args.processes, tmp)
            wx_times.append(t)
            n_articles = len(wikiextractor_output(wx_dir))
            t, ours_dir = run_memtrain(dump, args.processes, tmp, n_articles, "per_article")
            our_times.append(t)
        wx_docs = wikiextractor_output(wx_dir)
        wx_paras = [p for d in wx_docs for p in d["text"].split("\n") if p.strip()]
        wx = {"seconds": statistics.median(wx_times), "runs": wx_times, "articles": len(wx_docs),
              "passages": len(wx_paras), "tokens": count_tokens(tok, wx_paras)}

        from memtrain.corpus import iter_passages

        pool = list(iter_passages(dump))
        pool_tokens = count_tokens(tok, [p.text for p in pool])

        def ours(t_runs: list[float], out: Path) -> dict:
            stats = json.loads((out / "stats.json").read_text())
            sec = statistics.median(t_runs)
            return {"seconds": sec, "runs": t_runs, "tasks": stats["documents"], "passages": len(pool),
                    "tokens": pool_tokens, "task_tokens": stats["tokens_per_doc"]["total"],
                    "stages_s": {k: v for k, v in stats["timings"].items() if k.endswith("_s")},
                    "drops": stats["drops"]}

        per_article = ours(our_times, ours_dir)
        rows = {"wikiextractor": wx, "memtrain per-article": per_article}
        if not args.skip_all_pivots:
            t, all_dir = run_memtrain(dump, args.processes, tmp, None, "all_pivots")
            rows["memtrain all-pivots"] = ours([t], all_dir)

    for r in rows.values():
        r["passages_per_s"] = round(r["passages"] / r["seconds"], 1)
        r["tokens_per_s"] = round(r["tokens"] / r["seconds"], 1)
        if "task_tokens" in r:
            r["task_tokens_per_s"] = round(r["task_tokens"] / r["seconds"], 1)
        r["ratio_vs_wikiextractor"] = round(r["seconds"] / wx["seconds"], 2)
    result = {
        "dump": str(dump), "processes": args.processes, "repeats": args.repeats, "preset": "cpu",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}",
        "python": platform.python_version(), "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "data_build.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Data build vs wikiextractor",
        "",
        f"Dump: `{Path(dump).name}`; {args.processes} process(es); median of {args.repeats} run(s) "
        f"(all-pivots: 1 run); {result['machine']}. Wall time of the CLI, start-up included. "
        "Generated by `python benchmarks/bench_data_build.py`.",
        "",
        "| run | seconds | tasks | passages/s | tokens/s | task tokens/s | time vs wikiextractor |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['seconds']:.2f} | {r.get('tasks', '-')} | {r['passages_per_s']} | "
                     f"{r['tokens_per_s']} | {r.get('task_tokens_per_s', '-')} | "
                     f"{r['ratio_vs_wikiextractor']}x |")
    lines += ["", "memtrain stage times (s): " + "; ".join(
        f"{n}: {r['stages_s']}" for n, r in rows.items() if "stages_s" in r), ""]
    (RESULTS / "data_build.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
