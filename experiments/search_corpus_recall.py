"""Retrieval quality of the local search corpus (DESIGN §10): what a searching agent can find in it.

    memtrain data build search_corpus_cpu            # data/search_corpus_cpu, seconds
    python experiments/search_corpus_recall.py [--corpus data/search_corpus_cpu] [--dense]

Queries are the questions themselves (one search, no reformulation), top-k of the whole pool:

- HotpotQA dev (500, IRCoT subsample): at least one / both gold paragraphs in the top k (gold paragraphs
  are matched by normalised text, so a copy kept under another source's id counts);
- MuSiQue-Ans (100, train split): at least one / every supporting paragraph in the top k;
- NQ-open dev (3,610): an answer string (SQuAD-normalised, word-bounded) in the top k, over every question
  and over the subset answerable in the pool (``in_pool`` of the corpus' ``answerable_nq.json``);
- 2WikiMultihopQA dev (1,000, no evidence shipped): an answer string in the top k.

Writes docs/results/search_corpus.md and .json. ``--dense`` adds all-MiniLM-L6-v2 (encoding the pool took
~18 min on 2 cores the first time; cached afterwards).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "search_corpus.md"
KS = (3, 10)


def load_questions(data: Path) -> dict[str, list[dict]]:
    """Per benchmark: {question, answers, gold (normalised paragraph texts, [] when none ship)}."""
    from memtrain.search.corpus import dedup_key

    out: dict[str, list[dict]] = {}
    with open(data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled500.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    out["hotpotqa"] = [{"question": r["question_text"], "answers": r["answers_objects"][0]["spans"],
                        "gold": [dedup_key(c["paragraph_text"]) for c in r["contexts"] if c["is_supporting"]]}
                       for r in rows]
    mus = json.loads((data / "musique" / "musique_ans_train_sample100_hipporag.json").read_text())
    out["musique"] = [{"question": r["question"], "answers": [r["answer"], *r.get("answer_aliases", [])],
                       "gold": [dedup_key(p["paragraph_text"]) for p in r["paragraphs"]
                                if p["is_supporting"]]} for r in mus]
    with open(data / "nq_open" / "NQ-open.dev.jsonl", encoding="utf-8") as f:
        out["nq"] = [{"question": r["question"], "answers": r["answer"], "gold": []}
                     for r in map(json.loads, f) if r]
    two = json.loads((data / "2wikimultihopqa" / "2wiki_dev_first1000_qa_only.json").read_text())
    out["2wiki"] = [{"question": r["question"], "answers": r["answer"] if isinstance(r["answer"], list)
                     else [r["answer"]], "gold": []} for r in two]
    return out


def measure(index, questions: dict[str, list[dict]], answerable: dict[str, dict]) -> dict[str, dict]:
    """Recall numbers per benchmark for one index (percentages, rounded to 0.1)."""
    from memtrain.search.corpus import dedup_key, has_answer

    res: dict[str, dict] = {}
    for name, qs in questions.items():
        t0 = time.perf_counter()
        hits = index.search([q["question"] for q in qs], max(KS))
        seconds = time.perf_counter() - t0
        r: dict = {"questions": len(qs), "search_s": round(seconds, 2)}
        for k in KS:
            if qs[0]["gold"]:
                found = [len(set(q["gold"]) & {dedup_key(h.text) for h in row[:k]})
                         for q, row in zip(qs, hits, strict=True)]
                r[f"any_gold@{k}"] = pct(sum(f >= 1 for f in found), len(qs))
                complete = [f >= len(set(q["gold"])) for f, q in zip(found, qs, strict=True)]
                r[f"all_gold@{k}"] = pct(sum(complete), len(qs))
            ans = [any(has_answer(h.contents, q["answers"]) for h in row[:k])
                   for q, row in zip(qs, hits, strict=True)]
            r[f"answer@{k}"] = pct(sum(ans), len(qs))
            if name == "nq":
                sub = [a for a, q in zip(ans, qs, strict=True) if answerable[q["question"]]["in_pool"]]
                r["answerable_questions"] = len(sub)
                r[f"answer@{k}_answerable"] = pct(sum(sub), len(sub))
        res[name] = r
    return res


def pct(n: int, d: int) -> float:
    return round(100 * n / d, 1) if d else 0.0


def render(corpus: Path, manifest: dict, results: dict[str, dict], index_s: dict[str, float],
           cmd: str) -> str:
    kinds = list(results)
    head = "| benchmark | metric | " + " | ".join(kinds) + " |"
    rows = [head, "|---|---|" + "---|" * len(kinds)]
    lines = [
        ("hotpotqa", "≥ 1 gold paragraph in top 3", "any_gold@3"),
        ("hotpotqa", "both gold in top 3", "all_gold@3"),
        ("hotpotqa", "≥ 1 gold in top 10", "any_gold@10"), ("hotpotqa", "both gold in top 10", "all_gold@10"),
        ("hotpotqa", "answer string in top 3", "answer@3"),
        ("musique", "≥ 1 gold paragraph in top 3", "any_gold@3"),
        ("musique", "all gold in top 3", "all_gold@3"), ("musique", "≥ 1 gold in top 10", "any_gold@10"),
        ("nq", "answer string in top 3 (all 3,610)", "answer@3"),
        ("nq", "answer string in top 10 (all)", "answer@10"),
        ("nq", "answer string in top 3 (answerable in the pool)", "answer@3_answerable"),
        ("nq", "answer string in top 10 (answerable in the pool)", "answer@10_answerable"),
        ("2wiki", "answer string in top 3", "answer@3"), ("2wiki", "answer string in top 10", "answer@10"),
    ]
    for bench, label, key in lines:
        rows.append(f"| {bench} ({results[kinds[0]][bench]['questions']}) | {label} | "
                    + " | ".join(f"{results[k][bench][key]} %" for k in kinds) + " |")
    nq = manifest["answerable_nq"]
    by = {s["name"]: s for s in manifest["sources"]}
    src = ", ".join(f"{n} {s['kept']}" for n, s in by.items())
    n = sum(r["questions"] for r in results[kinds[0]].values())
    timing = ", ".join(f"{k}: index {index_s[k]:.1f} s, {n} searches (top 10) "
                       f"{sum(r['search_s'] for r in results[k].values()):.1f} s" for k in kinds)
    return f"""# Retrieval on the local search corpus ({manifest['n_passages']} passages)

`{cmd}` over `{corpus}`, built by `memtrain data build search_corpus_cpu`
({src} passages kept, {manifest['duplicates_dropped']} duplicates dropped; passages sha256
`{manifest['passages_sha256'][:16]}…`).
One search per question, the question itself as the query, over the whole pool.

{chr(10).join(rows)}

Timings on this 2-core box: {timing}. The dense index time is the pool's encoding with all-MiniLM-L6-v2
when its embeddings are not cached yet (they are cached afterwards, keyed by the encoder and every passage,
and load in seconds); dense searches include encoding the queries.

**What these numbers are.** HotpotQA and MuSiQue ship their paragraphs, and every one of them is in the
pool, so their recall measures the retriever (a gold paragraph counts when its normalised text is in the
top k, whichever source's copy was kept). NQ, 2Wiki, TriviaQA, PopQA and Bamboogle ship no evidence:
their answers are in the pool only by chance overlap with the 10,033 Wikipedia leads and the other
paragraphs. **2Wiki, TriviaQA, PopQA and Bamboogle therefore cannot be reproduced here** (the paper's
numbers need wiki-18, 21M passages; TriviaQA, PopQA and Bamboogle are not even in `../shared/data`); the
2Wiki row above only shows how rarely an answer string turns up.

**NQ must be reported twice**, unfiltered (all 3,610 questions, comparable in kind to the paper's but not in
value) and on the subset answerable in the pool. `answerable_nq.json` in the corpus folder holds, per
question, `in_pool` (some answer, SQuAD-normalised, occurs word-bounded in the normalised title + text of
at least one passage: {nq['in_pool']} of {nq['questions_unique']} questions) and `bm25_rank` (rank of the
first BM25 top-{nq['topk']} hit holding an answer: {nq['bm25_in_topk']} questions have one). `in_pool` is
an upper bound on evidence — short answers (years, numbers, common names) occur in passages unrelated to
the question — and does not depend on the retriever, so the same subset serves BM25, dense and HTTP
agents; `bm25_rank` is the stricter, retriever-specific test (`memtrain.search.load_answerable_nq`).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT / "data" / "search_corpus_cpu"))
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    ap.add_argument("--dense", action="store_true", help="also all-MiniLM-L6-v2 (slow the first time)")
    ap.add_argument("--render-only", action="store_true", help=f"rewrite {OUT.name} from the saved .json")
    args = ap.parse_args()

    from memtrain.io import atomic_open, write_json
    from memtrain.search.backends import LocalIndex
    from memtrain.search.corpus import load_answerable_nq

    corpus = Path(args.corpus)
    manifest = json.loads((corpus / "manifest.json").read_text())
    if args.render_only:
        saved = json.loads(OUT.with_suffix(".json").read_text())
        with atomic_open(OUT) as f:
            f.write(render(Path(saved["corpus"]), manifest, saved["results"], saved["index_s"],
                           saved["command"]))
        return
    questions = load_questions(Path(args.data))
    answerable = load_answerable_nq(corpus)
    results, index_s = {}, {}
    for kind in ["bm25", *(["dense"] if args.dense else [])]:
        t0 = time.perf_counter()
        index = LocalIndex.from_corpus(corpus, kind, progress=True)
        index_s[kind] = time.perf_counter() - t0
        results[kind] = measure(index, questions, answerable)
        print(kind, json.dumps(results[kind]), flush=True)
    cmd = "python experiments/search_corpus_recall.py" + (" --dense" if args.dense else "")
    try:
        shown = corpus.resolve().relative_to(ROOT)
    except ValueError:
        shown = corpus
    write_json(OUT.with_suffix(".json"), {
        "command": cmd, "corpus": str(shown), "n_passages": manifest["n_passages"],
        "passages_sha256": manifest["passages_sha256"],
        "index_s": {k: round(v, 1) for k, v in index_s.items()}, "results": results})
    with atomic_open(OUT) as f:
        f.write(render(shown, manifest, results, index_s, cmd))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
