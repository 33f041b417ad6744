"""Per-benchmark aggregation of search-QA results: EM averaged over objectives, the NQ answerable subset,
the average over benchmarks, the markdown table."""

from __future__ import annotations

from memtrain.eval.search import aggregate, table


def row(source, em, answerable=None, sample=None):
    return {"source": source, "answerable": answerable, "sample": sample, "n_turns": 2, "n_searches": 1,
            "invalid": ["no_action"] if em == 0 else [], "seconds": 1.0,
            "metrics": {"em": em, "sub_em": em, "accuracy": em, "f1": em, "strict_em": em, "answered": 1.0,
                        "parts_ok": 1.0}}


def test_aggregate_per_benchmark_and_answerable_subset():
    rows = [row("hotpotqa", 1.0), row("hotpotqa", 0.0), row("nq", 0.5, True), row("nq", 0.0, False),
            row("musique", 0.0)]
    m = aggregate(rows)
    by = m["by_benchmark"]
    assert by["hotpotqa"]["em"] == 0.5 and by["nq"]["em"] == 0.25 and by["nq_answerable"]["em"] == 0.5
    assert by["nq_answerable"]["n"] == 1 and by["hotpotqa"]["invalid_reasons"] == {"no_action": 1}
    assert m["average_over_benchmarks"] == (0.5 + 0.25 + 0.0) / 3  # the subset is not a benchmark
    text = table(m, "x")
    assert "| hotpotqa | 2 | 50.0 |" in text and "Average EM over benchmarks (NQ unfiltered): 25.0" in text


def test_explicit_answerable_benchmark_is_kept():
    m = aggregate([row("nq", 0.0, False), row("nq_answerable", 1.0, True), row("nq_answerable", 1.0, True)])
    assert m["by_benchmark"]["nq_answerable"]["n"] == 2 and m["average_over_benchmarks"] == 0.0


def test_spread_over_samples():
    m = aggregate([row("nq", 1.0, sample=0), row("nq", 0.0, sample=1)])
    assert m["overall"]["samples"] == 2 and m["overall"]["em_sd"] > 0
