"""BM25 indexes for the data build at scale: today's (bm25s in memory) vs bm25s memory-mapped vs tantivy.

    nice -n 10 python benchmarks/bench_bm25_index.py                    # 10k and 100k passages
    python benchmarks/bench_bm25_index.py --sizes 2000 --queries 50     # a smoke run

**Pools.** The passages of ``bench_data_scale.py`` (real ones from ../shared/data and the embedded dump,
then replicas titled ``"Title (r)"``), indexed as the build indexes them (``title + " " + text``).

**Queries.** ``--queries`` pivots drawn at random; each is a query by example, as in the build: the
pivot's own tokens (bm25s's tokenizer: lowercased words of 2+ characters minus English stopwords, repeated
words counted again), top-29 hits, the pivot itself excluded.

**Indexes**, each built and queried in its own interpreter so that peak RSS (VmHWM) is its own:

- ``today``: :class:`memtrain.tasks.retrieval.BM25Retriever` (bm25s, Lucene BM25, k1=1.5, b=0.75, the
  whole sparse score matrix in memory, exhaustive scoring). The reference: exact BM25 as the build uses it.
- ``bm25s_mmap``: the same bm25s index saved to disk and loaded with ``mmap=True``: same scores, the
  matrix paged in from disk; scoring is still exhaustive (every posting of every query term, then a top-k
  over all N scores), so ms/query stays linear in N.
- ``bm25s_k1.2``: exact bm25s with tantivy's k1=1.2 (in memory): how much of tantivy's difference from
  ``today`` is the constant alone (its recall against it is the ``vs k1.2`` column).
- ``tantivy``: :class:`memtrain.tasks.retrieval.TantivyRetriever` (``retriever=tantivy``): an on-disk
  inverted index (tantivy 0.27), documents pre-tokenized by the same bm25s tokenizer (same terms), the query
  an OR of term queries (a repeated word boosted by its count), top-k by block-max WAND. Its BM25 differs
  from today's in two ways: k1=1.2 (tantivy's constant) and document lengths stored as one-byte norms.
- ``*_top32``: the same retriever with ``top_terms=32``: the pivot's 32 highest-IDF distinct terms that
  occur in some other passage (:func:`memtrain.tasks.retrieval.top_idf_terms`, a MoreLikeThis-style cut).

Replicas make near-ties (a passage and its replicas differ only by the title's "(r)"), which any change
of scoring reorders: recall against ``today`` falls with N partly for that reason.

Reported per (N, index): build s (tokenize + index + write), ms/query, peak RSS of the build and of the
query stage (process high-water mark, the index open), bytes on disk, recall@29 against ``today`` and
the share of queries whose top-29 list equals today's in the same order.

Writes benchmarks/results/bm25_index.{json,md} (other ``--sizes``: bm25_index_<sizes>.*).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memprobe import reset_peak, status_mib  # benchmarks/memprobe.py (the script's folder)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_SIZES = [10_000, 100_000]
K = 29
TOP_TERMS = 32
METHODS = ["today", "today_top32", "bm25s_mmap", "bm25s_k1.2", "tantivy", "tantivy_top32"]


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


# ------------------------------------------------------------------------------------------ one index


def run_today(texts, pivots, top: int | None, tmp: Path) -> tuple[list[list[int]], dict]:
    from memtrain.tasks.retrieval import BM25Retriever

    t0 = time.perf_counter()
    r = BM25Retriever(top_terms=top)
    r.index(texts)
    build_s = time.perf_counter() - t0
    build_peak = status_mib("VmHWM")
    reset_peak()
    t0 = time.perf_counter()
    hits = r.topk(pivots, K)
    return hits, {"build_s": build_s, "build_peak_mib": build_peak, "query_s": time.perf_counter() - t0,
                  "disk_bytes": 0}


def run_bm25s_mmap(texts, pivots, top: int | None, tmp: Path, k1: float = 1.5, mmap: bool = True
                   ) -> tuple[list[list[int]], dict]:
    import bm25s

    t0 = time.perf_counter()
    tok = bm25s.tokenize(texts, stopwords="en", show_progress=False)
    model = bm25s.BM25(k1=k1)
    model.index(tok, show_progress=False)
    if mmap:
        model.save(str(tmp / "bm25s"))
        del model, tok
    build_s = time.perf_counter() - t0
    build_peak = status_mib("VmHWM")
    reset_peak()
    if mmap:
        model = bm25s.BM25.load(str(tmp / "bm25s"), mmap=True)
    vocab = model.vocab_dict
    t0 = time.perf_counter()
    queries = [[vocab[w] for w in q if w in vocab] for q in tokenize([texts[p] for p in pivots])]
    docs, scores = model.retrieve(queries, k=K + 1, show_progress=False, n_threads=0)
    hits = [[int(d) for d, s in zip(dr, sr, strict=True) if s > 0 and int(d) != p][:K]
            for p, dr, sr in zip(pivots, docs, scores, strict=True)]
    return hits, {"build_s": build_s, "build_peak_mib": build_peak, "query_s": time.perf_counter() - t0,
                  "disk_bytes": dir_bytes(tmp / "bm25s") if mmap else 0}


def run_tantivy(texts, pivots, top: int | None, tmp: Path) -> tuple[list[list[int]], dict]:
    from memtrain.tasks.retrieval import TantivyRetriever

    t0 = time.perf_counter()
    r = TantivyRetriever(tmp / "tantivy", top_terms=top)
    r.index(texts)
    build_s = time.perf_counter() - t0
    build_peak = status_mib("VmHWM")
    reset_peak()
    t0 = time.perf_counter()
    hits = r.topk(pivots, K)
    return hits, {"build_s": build_s, "build_peak_mib": build_peak, "query_s": time.perf_counter() - t0,
                  "disk_bytes": dir_bytes(tmp / "tantivy"), "segments": r._open().num_segments}


RUNNERS = {"today": run_today, "bm25s_mmap": run_bm25s_mmap, "tantivy": run_tantivy,
           "bm25s_k1.2": lambda *a: run_bm25s_mmap(*a, k1=1.2, mmap=False)}


def worker(args: argparse.Namespace) -> None:
    texts = [json.loads(line) for line in Path(args.texts).read_text(encoding="utf-8").splitlines()]
    pivots = json.loads(Path(args.pivots).read_text())
    method, _, top = args.worker.partition("_top")
    runner = RUNNERS[method]
    with tempfile.TemporaryDirectory(dir=args.tmp) as td:
        reset_peak()
        start = status_mib("VmRSS")
        hits, m = runner(texts, pivots, int(top) if top else None, Path(td))
        m["query_peak_mib"] = status_mib("VmHWM")
    m.update(start_rss_mib=start, ms_per_query=round(1000 * m.pop("query_s") / len(pivots), 3),
             build_s=round(m["build_s"], 2))
    Path(args.out).write_text(json.dumps({"metrics": m, "hits": hits}))


# ------------------------------------------------------------------------------------------ the sweep


def corpus_texts(n: int) -> list[str]:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_data_scale import real_passages

    base = corpus_texts.base = getattr(corpus_texts, "base", None) or real_passages()
    out = []
    for i in range(n):
        r, (title, text) = i // len(base), base[i % len(base)]
        out.append(f"{f'{title} ({r})' if r else title} {text}")
    return out


def compare(ref: list[list[int]], got: list[list[int]]) -> dict:
    recall = [len(set(a) & set(b)) / len(a) for a, b in zip(ref, got, strict=True) if a]
    same = sum(a == b for a, b in zip(ref, got, strict=True))
    return {f"recall@{K}": round(sum(recall) / max(1, len(recall)), 4),
            "same_order": round(same / len(ref), 4)}


def sweep(args: argparse.Namespace) -> dict:
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bm25bench-"))
    try:
        for n in args.sizes:
            texts = corpus_texts(n)
            (tmp / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
            pivots = random.Random(n).sample(range(n), min(n, args.queries))
            (tmp / "pivots.json").write_text(json.dumps(pivots))
            ref = ref12 = None
            for method in args.methods:
                out = tmp / f"{method}.json"
                cmd = [sys.executable, __file__, "--worker", method, "--texts", str(tmp / "texts.jsonl"),
                       "--pivots", str(tmp / "pivots.json"), "--out", str(out), "--tmp", str(tmp)]
                subprocess.run(cmd, check=True)
                res = json.loads(out.read_text())
                ref = res["hits"] if method == "today" else ref
                ref12 = res["hits"] if method == "bm25s_k1.2" else ref12
                row = {"passages": n, "index": method, "queries": len(pivots), **res["metrics"],
                       **(compare(ref, res["hits"]) if ref is not None else {})}
                if ref12 is not None:
                    row[f"recall@{K}_vs_k1.2"] = compare(ref12, res["hits"])[f"recall@{K}"]
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"rows": rows, "k": K, "top_terms": TOP_TERMS, "queries": args.queries,
            "host": {"python": platform.python_version(), "cpus": os.cpu_count(),
                     "load_avg_at_end": os.getloadavg()}, "command": " ".join(sys.argv)}


def markdown(res: dict) -> str:
    lines = [
        "# BM25 indexes at scale: today's (bm25s in memory) vs bm25s memory-mapped vs tantivy", "",
        f"`{res['command']}` ({res['queries']} query-by-example pivots per size, top-{res['k']}, pivot "
        f"excluded; each index in its own interpreter; host: {res['host']['cpus']} CPUs shared with other "
        f"jobs, load average at the end {tuple(round(x, 2) for x in res['host']['load_avg_at_end'])}, so "
        "times are upper bounds). Method and caveats: the script's docstring.", "",
        "| passages | index | build s | ms/query | build peak MiB | query peak MiB | on disk MiB | "
        f"recall@{res['k']} vs today | same order | vs k1.2 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    recall = f"recall@{res['k']}"
    for r in res["rows"]:
        lines.append(
            f"| {r['passages']:,} | {r['index']} | {r['build_s']} | {r['ms_per_query']} | "
            f"{round(r['build_peak_mib'])} | {round(r['query_peak_mib'])} | "
            f"{round(r['disk_bytes'] / 2**20, 1)} | {r.get(recall, '-')} | "
            f"{r.get('same_order', '-')} | {r.get(recall + '_vs_k1.2', '-')} |")
    sizes = sorted({r["passages"] for r in res["rows"]})
    if len(sizes) > 1:  # how each index's query time grows with the pool (linear would be the pool's ratio)
        at = {(r["passages"], r["index"]): r for r in res["rows"]}
        grow = [f"{m} x{at[sizes[-1], m]['ms_per_query'] / at[sizes[0], m]['ms_per_query']:.1f}"
                for m in dict.fromkeys(r["index"] for r in res["rows"])
                if (sizes[0], m) in at and (sizes[-1], m) in at]
        lines += ["", f"ms/query from {sizes[0]:,} to {sizes[-1]:,} passages (x{sizes[-1] // sizes[0]} the "
                  f"pool): {', '.join(grow)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=DEFAULT_SIZES)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--methods", type=lambda s: s.split(","), default=METHODS)
    ap.add_argument("--worker")
    ap.add_argument("--texts")
    ap.add_argument("--pivots")
    ap.add_argument("--out")
    ap.add_argument("--tmp")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.methods[0] != "today":
        ap.error("--methods must start with today (the reference of recall)")
    res = sweep(args)
    name = "bm25_index" if args.sizes == DEFAULT_SIZES else f"bm25_index_{'_'.join(map(str, args.sizes))}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
