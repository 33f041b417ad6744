"""BM25 vs dense (all-MiniLM-L6-v2) related passages on the embedded dump, and E2E tasks under each.

    python experiments/retriever_overlap.py [--k 5] [--num-tasks 200]

Writes docs/results/retrievers.md: the mean overlap of the two retrievers' top-k related passages per
pivot (|BM25 ∩ dense| / k over every passage of the pool), and the `cpu` E2E build statistics with each
(tasks, drops, tokens per document, IMR candidates per chunk).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "retrievers.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--num-tasks", type=int, default=200)
    args = ap.parse_args()

    from memtrain.config import load_config
    from memtrain.io import atomic_open
    from memtrain.recipes.build_tasks import BuildConfig, build, read_pool
    from memtrain.tasks.retrieval import make_retriever

    cfg = load_config(BuildConfig, "data", "cpu", ["progress=false"])
    passages, _ = read_pool(cfg)
    texts = [f"{p.title} {p.text}" for p in passages]
    hits, seconds = {}, {}
    for kind in ("bm25", "dense"):
        r = make_retriever(kind, progress=True)
        t0 = time.perf_counter()
        r.index(texts)
        hits[kind] = r.topk(list(range(len(texts))), args.k)
        seconds[kind] = time.perf_counter() - t0
    overlap = [len(set(a) & set(b)) / args.k for a, b in zip(hits["bm25"], hits["dense"], strict=True)]
    same_title = {kind: sum(passages[j].title == passages[i].title for i, h in enumerate(hs) for j in h)
                  / max(1, sum(map(len, hs))) for kind, hs in hits.items()}
    stats = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("bm25", "dense"):
            out = Path(tmp) / kind
            build(load_config(BuildConfig, "data", "cpu", [f"out={out}", f"retriever={kind}",
                                                           f"num_tasks={args.num_tasks}", "progress=false"]))
            stats[kind] = json.loads((out / "stats.json").read_text())
    rows = ["| retriever | index + top-k s | top-k from the same article | tasks | pivots tried | drops | "
            "tokens per doc (mean) | IMR candidates per chunk (mean) |", "|" + "---|" * 8]
    for kind in ("bm25", "dense"):
        s = stats[kind]
        rows.append(f"| {kind} | {seconds[kind]:.1f} | {100 * same_title[kind]:.1f} % | {s['documents']} | "
                    f"{s['pivots_tried']} | {s['drops'] or 'none'} | {s['tokens_per_doc']['mean']} | "
                    f"{s['imr_candidates_per_chunk']['mean']} |")
    mean = 100 * sum(overlap) / len(overlap)
    text = (f"# BM25 vs dense related passages (embedded dump, {len(texts)} passages)\n\n"
            f"`python experiments/retriever_overlap.py --k {args.k} --num-tasks {args.num_tasks}`\n\n"
            f"Mean overlap of the top-{args.k} related passages per pivot: **{mean:.1f} %** (pivots with no "
            f"shared passage: {sum(o == 0 for o in overlap)} of {len(overlap)}).\n\n" + "\n".join(rows)
            + "\n\nThe dense index time includes encoding the pool with all-MiniLM-L6-v2 on this 2-core CPU "
            "(cached afterwards). `cpu` data preset for both builds.\n")
    with atomic_open(OUT) as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
