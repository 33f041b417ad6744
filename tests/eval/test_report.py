"""Markdown table and accuracy-vs-length plot from metrics.json files."""

from __future__ import annotations

import pytest

from memtrain.errors import MemtrainError
from memtrain.eval.report import markdown_table, write_report
from memtrain.eval.results import write_metrics


def _row(n: int, sub: float | None) -> dict:
    keys = ("accuracy", "sub_em", "em", "f1")
    metrics = None if sub is None else {**dict.fromkeys(keys, sub), "strict_em": 0.0, "boxed": 1.0}
    return {"n_docs": n, "n_tokens": 140 * n, "n_chunks": 1, "seconds": 0.1, "metrics": metrics}


def test_table_and_plot_from_two_runs(tmp_path):
    a = write_metrics(tmp_path / "agent", [_row(5, 1.0), _row(5, 0.0), _row(50, 0.5), _row(50, 0.5)],
                      {"label": "agent"})
    b = write_metrics(tmp_path / "full", [_row(5, 1.0), _row(5, 1.0), _row(50, None), _row(50, None)],
                      {"label": "full"})
    table = markdown_table([a, b])
    lines = table.splitlines()
    assert "5 docs (≈700 tok)" in lines[0] and "50 docs (≈7.0K tok)" in lines[0]
    assert lines[0].endswith("avg |")
    # a skipped length is a dash, and every row averages over the lengths all methods ran (here: 5 docs)
    assert lines[2] == "| agent | 50.0 | 50.0 | 50.0 |"
    assert lines[3] == "| full | 100.0 | – | 100.0 |"
    assert "avg: over the 1 length(s) every method was scored at (5)" in table
    paths = [tmp_path / "agent" / "metrics.json", tmp_path / "full"]
    out = write_report(paths, tmp_path / "report", title="t")
    assert out == table
    md = (tmp_path / "report" / "results.md").read_text()
    assert md.startswith("# t\n") and "| agent |" in md
    png = (tmp_path / "report" / "accuracy_vs_length.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_missing_metrics_file_is_a_clear_error(tmp_path):
    with pytest.raises(MemtrainError, match="not found"):
        write_report([tmp_path / "nope"], tmp_path)


def _sampled(n_docs: int, per_sample: list[float]) -> list[dict]:
    """One question at ``n_docs`` answered once per sample, scored ``per_sample[k]``."""
    return [{**_row(n_docs, v), "sample": k} for k, v in enumerate(per_sample)]


def test_the_plot_shows_n_per_point_and_the_spread_over_samples(tmp_path):
    import statistics

    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    from memtrain.eval.report import accuracy_figure

    rows = _sampled(5, [1.0, 0.0, 1.0]) + _sampled(5, [1.0, 1.0, 0.0]) + _sampled(50, [0.0, 0.0, 1.0])
    m = write_metrics(tmp_path / "sampled", rows, {"label": "agent"})
    g5 = m["by_length"]["5"]
    assert g5["samples"] == 3 and g5["accuracy_sd"] == pytest.approx(statistics.stdev([1.0, 0.5, 0.5]))
    assert g5["f1_sd"] == pytest.approx(g5["accuracy_sd"])  # every score's spread, not only accuracy's
    fig = accuracy_figure([m])
    ax = fig.axes[0]
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    (segments,) = bars.lines[2]  # the vertical bars: one per point, ± one sd
    heights = sorted(abs(s[1][1] - s[0][1]) / 2 for s in segments.get_segments())
    sds = [100 * g["accuracy_sd"] for g in m["by_length"].values()]
    assert heights == pytest.approx(sorted(sds))
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("n=2×3") == 1 and texts.count("n=1×3") == 1  # questions x samples at each point
    assert "sd over 3 samples" in ax.get_legend().get_title().get_text()
    plt.close(fig)

    single = write_metrics(tmp_path / "greedy", [_row(5, 1.0), _row(5, 0.0)], {"label": "greedy"})
    fig = accuracy_figure([single])
    assert "n=2" in [t.get_text() for t in fig.axes[0].texts]
    assert "no spread" in fig.axes[0].get_legend().get_title().get_text()
    plt.close(fig)
