"""How `memtrain data build` scales with corpus size: time per task, throughput and peak RSS per stage.

    nice -n 10 python benchmarks/bench_data_scale.py          # 10k, 100k, 1M passages; 1 and 2 workers
    python benchmarks/bench_data_scale.py --quick             # 2k and 10k passages (a smoke run, ~2 min)
    python benchmarks/bench_data_scale.py --sizes 10000,50000 --tasks 400

**Corpora.** Real passages from ../shared/data (Wikipedia Vital Articles leads, HotpotQA, MuSiQue and SQuAD
paragraphs, deduplicated) and gensim's embedded enwiki dump, each cut by the reader into one passage of
20-200 words. A corpus of N passages is a JSONL file of N records, one passage each: the real passages in
order, then **replicas** with a new title (``"Title (r)"`` for replica r) once the ~30k real ones are used
up. Replicas repeat real text, so they are not new information (BM25 finds a pivot's own replicas among its
hits); they are realistic load for every stage: same lengths, entities and vocabulary statistics (document
frequencies grow with N, as in a real corpus). Entities come from the ``rules`` extractor (JSONL holds no
wiki links).

**Runs.** Each (size, workers) runs ``memtrain.recipes.build_tasks.build`` (the `data build` recipe, preset
``cpu``, ``--tasks`` tasks in 4 shards) in its own interpreter, so high-water marks do not leak between
runs. Stages are timed by the recipe (``stats.json``: read, index, build). Peak RSS per stage is the
process's VmHWM, reset at each stage start (``/proc/self/clear_refs``): read, pool + BM25 index, build;
for the build stage with workers, also the largest worker's peak and the peak of parent + workers' summed
PSS (shared pages counted once), sampled every 0.2 s. Bytes per passage = RSS growth of the read stage
(the pool held in memory) / N, and a least-squares line of each stage's peak over N.

In the same interpreter, after the recipe, **paper-shaped** tasks (n_related 29, n_random 120, 5,120-token
chunks, <= 8 chunks; SmolLM2's tokenizer, as the paper preset's Qwen3 tokenizer is not available offline)
are built from the same pool and index, timed per task, and BM25 top-29 retrieval is timed alone, to
extrapolate to the paper preset on a full English dump (written down in the results page).

**Multistream read.** The embedded dump re-packed as a multistream file (``--ms-copies`` copies of its 98
articles under new titles, 100 pages per stream) is read by ``iter_passages`` with workers 1 and 2: the
parallel reader of :mod:`memtrain.corpus.multistream` against the sequential one.

Writes benchmarks/results/data_scale.{json,md,png} (``--quick``: data_scale_quick.*).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from memprobe import reset_peak, status_mib  # benchmarks/memprobe.py (the script's folder)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
MIB = 2**20
FULL = [10_000, 100_000, 1_000_000]
QUICK = [2_000, 10_000]
PAPER = {"n_related": 29, "n_random": 120, "chunk_tokens": 5120, "max_chunks": 8}
# Assumptions of the extrapolation (stated in the results page)
FULL_DUMP = {"articles": 6_900_000, "passages": 30_000_000, "wikitext_bytes": 95e9, "paper_tasks": 30_000}


# ------------------------------------------------------------------------------------------ corpora


def real_passages() -> list[tuple[str, str]]:
    """Every real passage of the shared data and the embedded dump, deduplicated, in a fixed order."""
    from memtrain.corpus import iter_passages

    docs: list[tuple[str, str]] = []
    for f in sorted((DATA / "wikipedia").glob("enwiki_*.jsonl")):
        docs += [(r["title"], r["text"]) for r in map(json.loads, f.read_text(encoding="utf-8").splitlines())]
    for line in (DATA / "hotpotqa" / "ircot_hotpotqa_dev_subsampled500.jsonl").read_text().splitlines():
        docs += [(c["title"], c["paragraph_text"]) for c in json.loads(line)["contexts"]]
    for q in json.loads((DATA / "musique" / "musique_ans_train_sample100_hipporag.json").read_text()):
        docs += [(p["title"], p["paragraph_text"]) for p in q["paragraphs"]]
    for a in json.loads((DATA / "squad" / "squad_v2.0_dev_rebuilt.json").read_text())["data"]:
        docs += [(a["title"].replace("_", " "), p["context"]) for p in a["paragraphs"]]
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "real.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for t, x in docs:
                if (t, x) not in seen:
                    seen.add((t, x))
                    f.write(json.dumps({"title": t, "text": x}) + "\n")
        out = [(p.title, p.text) for p in iter_passages(str(path), entities="rules")]
    out += [(p.title, p.text) for p in iter_passages("embedded", entities="rules")]
    return out


def write_corpus(base: list[tuple[str, str]], n: int, path: Path) -> int:
    """``n`` one-passage records: the real passages, then replicas with new titles. Returns replicas."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            r, (title, text) = divmod(i, len(base))[0], base[i % len(base)]
            f.write(json.dumps({"title": f"{title} ({r})" if r else title, "text": text}) + "\n")
    return max(0, n - len(base))


# ------------------------------------------------------------------------------------------ one run


class Sampler:
    """Peaks, sampled every ``every`` s, of the summed PSS of this process and its children (shared pages
    counted once) and of the largest child's own high-water mark (VmHWM)."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self._stop = every, threading.Event()
        self.pss_mib, self.child_hwm_mib = 0.0, 0.0
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _field(path: str, name: str) -> float:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(name + ":"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    @staticmethod
    def _children() -> list[str]:
        pids = []
        for task in Path("/proc/self/task").iterdir():
            try:
                pids += (task / "children").read_text().split()
            except OSError:
                pass
        return pids

    def sample(self) -> None:
        kids = self._children()
        pss = self._field("/proc/self/smaps_rollup", "Pss")
        pss += sum(self._field(f"/proc/{k}/smaps_rollup", "Pss") for k in kids)
        self.pss_mib = max(self.pss_mib, pss)
        for k in kids:
            self.child_hwm_mib = max(self.child_hwm_mib, self._field(f"/proc/{k}/status", "VmHWM"))

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self) -> Sampler:
        self.sample()
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def _spin(n: int) -> float:
    t = time.perf_counter()
    x = 0
    for i in range(n):
        x += i
    return time.perf_counter() - t


def parallel_capacity(n: int = 6_000_000) -> float:
    """How many cores this process can use right now: 2 x (one loop alone) / (two loops at once), ~2.0 on
    an idle 2-core box, ~1.0 when other jobs take a core (then no program can speed up with 2 workers)."""
    import multiprocessing as mp

    alone = _spin(n)
    with mp.get_context("fork").Pool(2) as pool:
        both = max(pool.map(_spin, [n, n]))
    return round(2 * alone / both, 2)


def run_one(args: argparse.Namespace) -> dict:
    """One (corpus, workers) build with per-stage peaks, then paper-shaped tasks or repeated builds."""
    import shutil

    import memtrain.recipes.build_tasks as bt
    import memtrain.tasks.retrieval as retrieval
    from memtrain.config import load_config

    marks: dict[str, float | None] = {}

    def stage_end(name: str) -> None:
        marks[f"{name}_peak_mib"] = status_mib("VmHWM")
        marks[f"{name}_end_rss_mib"] = status_mib("VmRSS")
        reset_peak()

    real_read_pool, real_make = bt.read_pool, retrieval.make_retriever
    held: dict = {}

    def read_pool(cfg):
        if "passages" in held:  # a repeated build: the pool is already in memory
            return held["passages"], held["corpus_stats"]
        marks["start_rss_mib"] = status_mib("VmRSS")
        reset_peak()
        held["passages"], held["corpus_stats"] = real_read_pool(cfg)
        stage_end("read")
        return held["passages"], held["corpus_stats"]

    def make_retriever(kind, progress=False, **kw):
        if "retriever" in held:
            r = held["retriever"]
            r.index = lambda texts: stage_end("index")
            return r
        r = real_make(kind, progress, **kw)
        real_index = r.index

        def index(texts):
            real_index(texts)
            stage_end("index")  # the PassagePool, the index texts and BM25

        r.index = index
        held["retriever"] = r
        return r

    bt.read_pool, retrieval.make_retriever = read_pool, make_retriever

    def build(workers: int, out: str) -> dict:
        shutil.rmtree(out, ignore_errors=True)
        cfg = load_config(bt.BuildConfig, "data", "cpu", [
            f"corpus={args.corpus}", f"out={out}", f"num_tasks={args.tasks}",
            f"shard_size={-(-args.tasks // 4)}", f"workers={workers}", "progress=false", *args.set])
        capacity = parallel_capacity()
        t0 = time.perf_counter()
        with Sampler() as smp:
            stats = bt.build(cfg)
        wall = time.perf_counter() - t0
        stage_end("build")
        row = {"workers": workers, "tasks": stats["documents"], "pivots_tried": stats["pivots_tried"],
               "wall_s": round(wall, 2), **{k: v for k, v in stats["timings"].items() if k.endswith("_s")},
               "build_peak_mib": marks["build_peak_mib"],
               "build_worker_peak_mib": round(smp.child_hwm_mib, 1) if workers > 1 else None,
               "peak_total_pss_mib": round(smp.pss_mib, 1), "cpu_capacity": capacity}
        row["ms_per_task"] = round(1000 * row["build_s"] / max(1, row["tasks"]), 2)
        held["cfg"] = cfg
        return row

    first = build(args.workers, args.out)
    n = len(held["passages"])
    row = {
        "passages": n, **first, **{k: round(v, 1) if v else v for k, v in marks.items()},
        "read_passages_per_s": round(n / first["read_corpus_s"], 1),
        "index_passages_per_s": round(n / first["index_s"], 1),
        "tasks_per_s": round(first["tasks"] / first["build_s"], 2),
        "bytes_per_passage_read": round((marks["read_end_rss_mib"] - marks["start_rss_mib"]) * MIB / n),
        "bytes_per_passage_index": round((marks["index_end_rss_mib"] - marks["read_end_rss_mib"]) * MIB / n),
    }
    if args.repeat:  # the build stage again, 1 then 2 workers, on the pool and index already in memory
        row["repeats"] = [build(w, f"{args.out}-r{w}") for w in (1, 2)]
    if args.paper_tasks:
        row.update(paper_shaped(held["passages"], held["retriever"], held["cfg"], args.paper_tasks))
    shutil.rmtree(args.out, ignore_errors=True)
    for w in (1, 2):
        shutil.rmtree(f"{args.out}-r{w}", ignore_errors=True)
    return row


def paper_shaped(passages, retriever, cfg, n: int) -> dict:
    """Per-task time of paper-shaped tasks on this pool, and BM25 top-29 retrieval time per query."""
    from dataclasses import replace

    from memtrain.seeds import derive_seed
    from memtrain.tasks.chunking import resolve_tokenizer
    from memtrain.tasks.e2e import DropReason, E2EConfig, PassagePool, build_e2e_task

    tok = resolve_tokenizer(cfg.tokenizer)
    pool = PassagePool(passages)
    ecfg = replace(E2EConfig(), **PAPER, seed=cfg.e2e.seed)
    rng = random.Random(7)
    pivots = rng.sample(range(len(pool)), min(len(pool), 4 * n))
    t0 = time.perf_counter()
    hits = retriever.topk(pivots, ecfg.n_related)
    t_ret = time.perf_counter() - t0
    built, tokens, t_build = 0, 0, 0.0
    for p, h in zip(pivots, hits, strict=True):
        t = time.perf_counter()
        out = build_e2e_task(p, pool, h, random.Random(derive_seed(ecfg.seed, p)), tok, ecfg)
        t_build += time.perf_counter() - t
        if not isinstance(out, DropReason):
            built += 1
            tokens += out.meta["n_tokens"]
            if built >= n:
                break
    tried = pivots.index(p) + 1
    return {
        "paper_tasks": built, "paper_pivots_tried": tried,
        "paper_ms_per_task": round(1000 * (t_build + t_ret * tried / len(pivots)) / max(1, built), 1),
        "paper_tokens_per_task": round(tokens / max(1, built)),
        "bm25_ms_per_query": round(1000 * t_ret / len(pivots), 3),
    }


def ms_read(copies: int, workers: int, tmp: Path) -> dict:
    """Read the embedded dump re-packed as a multistream file of ``copies`` copies (new titles)."""
    from memtrain.corpus import CorpusStats, iter_passages
    from memtrain.corpus.multistream import write_multistream

    dump = tmp / "enwiki-copies-multistream.xml.bz2"
    if not dump.exists():
        src = tmp / "copies.xml.bz2"
        write_copies(src, copies)
        write_multistream(src, dump, pages_per_stream=100)
    stats = CorpusStats()
    t0 = time.perf_counter()
    n = sum(1 for _ in iter_passages(str(dump), stats=stats, workers=workers))
    sec = time.perf_counter() - t0
    return {"workers": workers, "pages": stats.pages, "passages": n, "seconds": round(sec, 2),
            "pages_per_s": round(stats.pages / sec, 1), "passages_per_s": round(n / sec, 1),
            "dump_mib": round(dump.stat().st_size / 2**20, 1)}


def write_copies(path: Path, copies: int) -> None:
    """A bz2 dump holding every embedded article ``copies`` times, copy c titled ``"Title (c)"``."""
    import bz2
    from xml.sax.saxutils import escape

    from memtrain.corpus import resolve_source
    from memtrain.corpus.wikixml import iter_pages

    pages = list(iter_pages(resolve_source("embedded")))
    with bz2.open(path, "wt", encoding="utf-8") as f:
        f.write('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/">\n')
        for c in range(copies):
            for title, text in pages:
                t = f"{title} ({c})" if c else title
                f.write(f"<page><title>{escape(t)}</title><ns>0</ns><revision><text>{escape(text)}</text>"
                        "</revision></page>\n")
        f.write("</mediawiki>\n")


def run_sub(corpus: Path, out: Path, workers: int, tasks: int, paper_tasks: int, repeat: bool) -> dict:
    cmd = [sys.executable, __file__, "--one", "--corpus", str(corpus), "--out", str(out),
           "--workers-one", str(workers), "--tasks", str(tasks), "--paper-tasks", str(paper_tasks)]
    if repeat:
        cmd.append("--repeat")
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"bench_data_scale: {' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line ``y = a + b x``: (a, b)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b = sxy / max(1e-9, sum((x - mx) ** 2 for x in xs))
    return my - b * mx, b


def summarise(rows: list[dict], ms: list[dict], base: list, sizes: list[int], tasks: int, paper_tasks: int,
              copies: int, seconds: float) -> dict:
    one = {r["passages"]: r for r in rows if r["workers"] == 1}
    two = {r["passages"]: r for r in rows if r["workers"] == 2}
    ns = sorted(one)
    lo, hi = one[ns[0]], one[ns[-1]]
    speedups = []
    for n in ns:
        a, b = one[n], two[n]
        rep = {r["workers"]: r for r in b.get("repeats", [])}
        speedups.append({
            "passages": n,
            "build_separate_processes": round(a["build_s"] / b["build_s"], 2),
            "build_same_process": round(rep[1]["build_s"] / rep[2]["build_s"], 2) if rep else None,
            "end_to_end": round(a["total_s"] / b["total_s"], 2),
            "cpu_capacity": [a["cpu_capacity"], b["cpu_capacity"],
                             *(x["cpu_capacity"] for x in rep.values())],
        })
    xs = [float(n) for n in ns]
    lines = {}
    for key in ("read_end_rss_mib", "read_peak_mib", "index_peak_mib", "index_end_rss_mib", "build_peak_mib"):
        a, b = fit(xs, [one[n][key] for n in ns])
        worst = max(abs(one[n][key] - (a + b * n)) / one[n][key] for n in ns)
        lines[key] = {"mib_at_0": round(a, 1), "bytes_per_passage": round(b * 2**20), "worst_rel_residual":
                      round(worst, 3)}
    ext = extrapolate(hi, lines, ms) if paper_tasks else None
    return {
        "benchmark": "data_scale", "preset": "cpu", "tasks_per_run": tasks, "shards": 4,
        "paper_shaped": {**PAPER, "tokenizer": "smollm2", "tasks_per_size": paper_tasks},
        "real_passages": len(base), "sizes": sizes,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f} at end",
        "python": platform.python_version(), "total_seconds": round(seconds, 1),
        "rows": rows, "speedup_2_workers": speedups, "rss_lines": lines,
        "per_task_ratio_largest_vs_smallest": round(hi["ms_per_task"] / lo["ms_per_task"], 2),
        "paper_per_task_ratio_largest_vs_smallest":
            round(hi["paper_ms_per_task"] / lo["paper_ms_per_task"], 2) if paper_tasks else None,
        "multistream_read": {"copies": copies, "runs": ms,
                             "speedup": round(ms[0]["seconds"] / ms[1]["seconds"], 2)},
        "extrapolation": ext,
    }


def extrapolate(hi: dict, lines: dict, ms: list[dict]) -> dict:
    """The paper preset (30k paper-shaped tasks, 8 workers) on a full English dump (FULL_DUMP)."""
    n = FULL_DUMP["passages"]
    workers = 8
    per_task_pivots = hi["paper_pivots_tried"] / max(1, hi["paper_tasks"])
    q_hi = hi["bm25_ms_per_query"]
    q_full = q_hi * n / hi["passages"]  # BM25 scores every posting of the query's words: linear in the pool
    task_ms = hi["paper_ms_per_task"] + per_task_pivots * (q_full - q_hi)
    seq_read_s = n / ms[0]["passages_per_s"]
    # reading in parallel leaves the per-passage work of the main process (splitting, entities): the read
    # rate of the JSONL corpus, which has no wikitext to render, bounds it
    par_floor_s = n / hi["read_passages_per_s"]
    pool_gib = lines["read_end_rss_mib"]["bytes_per_passage"] * n / 2**30
    index_gib = lines["index_peak_mib"]["bytes_per_passage"] * n / 2**30
    return {
        "assumptions": {**FULL_DUMP, "workers": workers, "pivots_per_task": round(per_task_pivots, 2)},
        "read_sequential_h": round(seq_read_s / 3600, 2),
        "read_parallel_floor_h": round(par_floor_s / 3600, 2),
        "index_h": round(n / hi["index_passages_per_s"] / 3600, 2),
        "bm25_ms_per_query_full": round(q_full, 1),
        "paper_ms_per_task_full": round(task_ms, 1),
        "build_h_8_workers": round(FULL_DUMP["paper_tasks"] * task_ms / 1000 / workers / 3600, 2),
        "build_h_1_worker": round(FULL_DUMP["paper_tasks"] * task_ms / 1000 / 3600, 2),
        "pool_gib": round(pool_gib, 1),
        "peak_after_index_gib": round(index_gib, 1),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    one = sorted((r for r in rows if r["workers"] == 1), key=lambda r: r["passages"])
    two = sorted((r for r in rows if r["workers"] == 2), key=lambda r: r["passages"])
    ns = [r["passages"] for r in one]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    ax[0].plot(ns, [r["ms_per_task"] for r in one], "o-", label="cpu preset, 1 worker")
    ax[0].plot(ns, [r["ms_per_task"] for r in two], "s-", label="cpu preset, 2 workers")
    if one[0].get("paper_ms_per_task"):
        ax[0].plot(ns, [r["paper_ms_per_task"] / 10 for r in one], "^--", label="paper-shaped / 10, 1 worker")
        ax[0].plot(ns, [r["bm25_ms_per_query"] for r in one], "x:", label="BM25 top-29, one query")
    ax[0].set(xscale="log", xlabel="passages in the pool", ylabel="ms", title="build time per task")
    ax[0].legend(fontsize=8)
    for key, name in (("read_peak_mib", "read"), ("index_peak_mib", "pool + index"),
                      ("build_peak_mib", "build (parent)")):
        ax[1].plot(ns, [r[key] for r in one], "o-", label=name)
    ax[1].plot(ns, [r["peak_total_pss_mib"] for r in two], "s--", label="build, 2 workers: total PSS")
    ax[1].set(xscale="log", yscale="log", xlabel="passages in the pool", ylabel="MiB",
              title="peak RSS per stage")
    ax[1].legend(fontsize=8)
    for key, name in (("read_corpus_s", "read"), ("index_s", "pool + index"), ("build_s", "build")):
        ax[2].plot(ns, [r[key] for r in one], "o-", label=f"{name}, 1 worker")
    ax[2].plot(ns, [r["build_s"] for r in two], "s--", label="build, 2 workers")
    ax[2].set(xscale="log", yscale="log", xlabel="passages in the pool", ylabel="seconds",
              title=f"stage wall time ({result['tasks_per_run']} tasks)")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(r: dict, stem: str) -> str:
    rows = sorted(r["rows"], key=lambda x: (x["passages"], x["workers"]))
    out = [
        "# Data build at scale",
        "",
        f"`python benchmarks/bench_data_scale.py{' --quick' if stem.endswith('quick') else ''}` "
        f"({r['total_seconds']:.0f} s; {r['machine']}; Python {r['python']}). Preset `cpu`, "
        f"{r['tasks_per_run']} tasks in {r['shards']} shards per run, each (size, workers) in its own "
        f"interpreter. Corpora: the {r['real_passages']} real passages of ../shared/data and the embedded "
        "dump, "
        "then replicas of them under new titles (column *replicas*): replicas repeat real text, so they are "
        "realistic load, not new information. Plot: "
        f"[{stem}.png]({stem}.png).",
        "",
        "| passages | replicas | workers | read s | pool+index s | build s | ms / task | read peak MiB | "
        "index peak MiB | build peak MiB (parent) | worker peak MiB | peak PSS, all MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in rows:
        out.append(f"| {x['passages']} | {x['replicated_passages']} | {x['workers']} | "
                   f"{x['read_corpus_s']} | {x['index_s']} | {x['build_s']} | {x['ms_per_task']} | "
                   f"{x['read_peak_mib']} | {x['index_peak_mib']} | {x['build_peak_mib']} | "
                   f"{x['build_worker_peak_mib'] or '-'} | "
                   f"{x['peak_total_pss_mib']} |")
    sp = r["speedup_2_workers"]
    out += ["", "**Speed-up with 2 workers** (build stage; read and index are one process). CPU capacity: "
            "2 x (a pure-Python loop alone) / (two at once), probed just before each build: 2.0 on an idle "
            "2-core box, 1.0 when other jobs hold a core (no program can then speed up):", "",
            "| passages | separate processes (1st measurement) | same process, re-run (2nd) | whole build | "
            "CPU capacity (1w, 2w, re-run 1w, 2w) |",
            "|---|---|---|---|---|"]
    out += [f"| {s['passages']} | {s['build_separate_processes']}x | {s['build_same_process']}x | "
            f"{s['end_to_end']}x | {', '.join(map(str, s['cpu_capacity']))} |" for s in sp]
    out += ["", "**Memory, fitted over the sizes** (1 worker): MiB = a + b x passages", "",
            "| what | a MiB | bytes / passage | worst relative residual |", "|---|---|---|---|"]
    for k, v in r["rss_lines"].items():
        out.append(f"| {k} | {v['mib_at_0']} | {v['bytes_per_passage']} | {v['worst_rel_residual']} |")
    one = [x for x in rows if x["workers"] == 1]
    if one[0].get("paper_ms_per_task"):
        out += ["", "**Paper-shaped tasks** (1 + 29 related + 120 random passages, 5,120-token chunks, <= 8; "
                "SmolLM2 tokenizer) on the same pools, 1 process, and BM25 top-29 alone:", "",
                "| passages | tasks | ms / task | tokens / task | BM25 ms / query |", "|---|---|---|---|---|"]
        out += [f"| {x['passages']} | {x['paper_tasks']} | {x['paper_ms_per_task']} | "
                f"{x['paper_tokens_per_task']} | {x['bm25_ms_per_query']} |" for x in one]
    m = r["multistream_read"]
    out += ["", f"**Multistream read** (`iter_passages`, the embedded dump x{m['copies']} re-packed as a "
            "multistream dump, 100 pages per stream):", "",
            "| workers | pages | passages | seconds | passages / s |", "|---|---|---|---|---|"]
    out += [f"| {x['workers']} | {x['pages']} | {x['passages']} | {x['seconds']} | {x['passages_per_s']} |"
            for x in m["runs"]]
    out += ["", f"Speed-up {m['speedup']}x."]
    e = r["extrapolation"]
    if e:
        a = e["assumptions"]
        out += [
            "", "## Extrapolation: the paper preset on a full English dump", "",
            f"Assumed: {a['articles']:,} articles, {a['passages']:,} passages of 20-200 words (tens of "
            f"millions; the count depends on the passage bounds), {a['paper_tasks']:,} tasks, "
            f"{a['workers']} workers (configs/data/paper.yaml), {a['pivots_per_task']} pivots tried per "
            "built task (measured), BM25 cost per query proportional to the pool (from the largest "
            "size).", "",
            f"- read: {e['read_sequential_h']} h sequentially (the multistream measurement's rate on real "
            f"wikitext); with the parallel reader at best {e['read_parallel_floor_h']} h (the main process "
            "still splits passages and extracts entities: the JSONL read rate)",
            f"- pool + BM25 index: {e['index_h']} h, one process",
            f"- BM25 top-29: {e['bm25_ms_per_query_full']} ms per query; paper-shaped task "
            f"{e['paper_ms_per_task_full']} ms -> build {e['build_h_1_worker']} h in 1 process, "
            f"{e['build_h_8_workers']} h with 8 (if they scale)",
            f"- memory: the passage pool {e['pool_gib']} GiB, peak after indexing "
            f"{e['peak_after_index_gib']} GiB (bytes per passage x passages)",
        ]
    out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=None, help=f"comma-separated passage counts (default {FULL})")
    ap.add_argument("--quick", action="store_true", help=f"sizes {QUICK}, fewer tasks; *_quick results")
    ap.add_argument("--tasks", type=int, default=None,
                    help="cpu-preset tasks per run (default 400; quick 200)")
    ap.add_argument("--paper-tasks", type=int, default=None, help="paper-shaped tasks per size (default 16)")
    ap.add_argument("--ms-copies", type=int, default=None, help="copies of the embedded dump (default 20)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--set", nargs="*", default=[], help=argparse.SUPPRESS)  # more overrides (--one)
    ap.add_argument("--workers-one", dest="workers_one", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        args.workers = args.workers_one
        print(json.dumps(run_one(args)))
        return 0

    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else (QUICK if args.quick else FULL)
    tasks = args.tasks or (200 if args.quick else 400)
    paper_tasks = args.paper_tasks if args.paper_tasks is not None else (6 if args.quick else 16)
    copies = args.ms_copies or (3 if args.quick else 20)
    t_start = time.perf_counter()
    base = real_passages()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_data_scale_") as td:
        tmp = Path(td)
        for n in sizes:
            corpus = tmp / f"corpus_{n}.jsonl"
            replicas = write_corpus(base, n, corpus)
            for w in (1, 2):
                row = run_sub(corpus, tmp / f"out_{n}_{w}", w, tasks, paper_tasks if w == 1 else 0, w == 2)
                row["replicated_passages"] = replicas
                rows.append(row)
                print(f"{n:>9} passages, {w} worker(s): read {row['read_corpus_s']:.1f} s, index "
                      f"{row['index_s']:.1f} s, build {row['build_s']:.1f} s ({row['ms_per_task']} ms/task), "
                      f"peaks read/index/build {row['read_peak_mib']}/{row['index_peak_mib']}/"
                      f"{row['build_peak_mib']} MiB", flush=True)
            corpus.unlink()
        ms = [ms_read(copies, w, tmp) for w in (1, 2)]
        print(f"multistream read: {ms}", flush=True)
    result = summarise(rows, ms, base, sizes, tasks, paper_tasks, copies, time.perf_counter() - t_start)
    stem = "data_scale_quick" if args.quick else "data_scale"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / f"{stem}.png")
    md = report(result, stem)
    (RESULTS / f"{stem}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
