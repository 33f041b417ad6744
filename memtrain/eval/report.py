"""Tables and plots from one or several ``metrics.json`` files (accuracy vs context length).

Rows are methods/models (each file's ``label``), columns are context lengths (``n_docs``, with the mean
document length in tokens underneath) plus the average over lengths, as in the paper's tables. A cell is
``–`` when a method has no scored question at that length (e.g. the full-context baseline beyond the
model's window); the average is taken over the lengths where every method was scored, and the table says
which when that is not all of them. With several samples per question the spread over samples follows ±.

The plot marks each point with the questions scored there (``n=``; ``n=40×4`` for 40 questions
answered 4 times each) and, with several samples per question, draws the spread over samples (± one
standard deviation of the per-sample means) as error bars; with one sample it says there is none to draw.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memtrain.errors import MemtrainError
from memtrain.io import atomic_open


def load_metrics(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            path = path / "metrics.json"
        if not path.is_file():
            raise MemtrainError(f"metrics file not found: {path} (run `memtrain eval` first)")
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as e:
            raise MemtrainError(f"{path}: not valid JSON ({e})") from None
        if "by_length" not in out[-1]:
            raise MemtrainError(f"{path}: no per-length results (is it a proxy-task metrics file?)")
    return out


def _lengths(metrics: Sequence[dict[str, Any]]) -> list[str]:
    keys = {k for m in metrics for k in m["by_length"]}
    return sorted(keys, key=lambda k: (int(k), "") if k.isdigit() else (1 << 60, k))


def _tokens(metrics: Sequence[dict[str, Any]], length: str) -> float | None:
    toks = [m["by_length"][length].get("mean_tokens") for m in metrics if length in m["by_length"]]
    toks = [t for t in toks if t]
    return sum(toks) / len(toks) if toks else None


def _fmt_tokens(n: float | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1000:.1f}K" if n >= 1000 else f"{n:.0f}"


def _value(group: dict[str, Any] | None, metric: str) -> float | None:
    if not group:
        return None
    return group.get("accuracy" if metric == "accuracy" else metric)


def _spread(group: dict[str, Any] | None, metric: str) -> float | None:
    """The standard deviation of ``metric`` over samples (None with one sample per question)."""
    return (group or {}).get(f"{metric}_sd")


def markdown_table(metrics: Sequence[dict[str, Any]], metric: str = "accuracy") -> str:
    """A markdown table of ``metric`` (percent) per method and context length, plus the average."""
    lengths = _lengths(metrics)
    # the average is taken over the lengths where every method was scored, so rows stay comparable
    common = [n for n in lengths if all(_value(m["by_length"].get(n), metric) is not None for m in metrics)]
    head = "| method | " + " | ".join(f"{n} docs (≈{_fmt_tokens(_tokens(metrics, n))} tok)" for n in lengths)
    lines = [head + " | avg |", "|---" * (len(lengths) + 2) + "|"]
    for m in metrics:
        cells = []
        for n in lengths:
            g = m["by_length"].get(n)
            v = _value(g, metric)
            sd = f" ± {100 * _spread(g, metric):.1f}" if v is not None and _spread(g, metric) is not None \
                else ""
            cells.append("–" if v is None else f"{100 * v:.1f}{sd}")
        scored = [_value(m["by_length"][n], metric) for n in common]
        avg = "–" if not scored else f"{100 * sum(scored) / len(scored):.1f}"  # type: ignore[arg-type]
        lines.append(f"| {m.get('label', '?')} | " + " | ".join(cells) + f" | {avg} |")
    counts = ", ".join(
        f"{m.get('label', '?')}: {m['overall']['n_scored']} scored / {m['overall']['n']}" for m in metrics
    )
    note = metrics[0].get("headline_note", "") if metric == "accuracy" else metric
    avg_note = "" if len(common) == len(lengths) else (
        f" avg: over the {len(common)} length(s) every method was scored at ({', '.join(common) or 'none'}).")
    return "\n".join(lines) + f"\n\nMetric: {note}. Questions: {counts}.{avg_note}\n"


def plot_accuracy(metrics: Sequence[dict[str, Any]], path: str | Path, metric: str = "accuracy",
                  title: str | None = None, samples_are: str = "samples per question") -> Path:
    """PNG of ``metric`` vs mean context length in tokens (log x), one line per method; ``samples_are``
    names what a group's ``samples`` count (the headline's spread is over training seeds)."""
    import matplotlib.pyplot as plt

    fig = accuracy_figure(metrics, metric, title, samples_are)
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path


def accuracy_figure(metrics: Sequence[dict[str, Any]], metric: str = "accuracy", title: str | None = None,
                    samples_are: str = "samples per question") -> Any:
    """The matplotlib figure of :func:`plot_accuracy`: a point per length, marked with its ``n``, and the
    spread over samples as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    samples = set()
    for m in metrics:
        pts = []  # (tokens, value %, spread %, n scored)
        for g in m["by_length"].values():
            v = _value(g, metric)
            if v is not None and g.get("mean_tokens"):
                sd = _spread(g, metric)
                n, k = g.get("n_scored", g.get("n")), g.get("samples", 1)
                n = f"{n // k}×{k}" if k > 1 and n % k == 0 else n  # questions × samples
                pts.append((g["mean_tokens"], 100 * v, None if sd is None else 100 * sd, n))
                samples.add(g.get("samples", 1))
        pts.sort()
        if not pts:
            continue
        xs, ys, sds, ns = zip(*pts, strict=True)
        spread = [0.0 if sd is None else sd for sd in sds]
        line = ax.errorbar(xs, ys, yerr=spread if any(sds) else None, marker="o", capsize=3,
                           label=m.get("label", "?"))
        for x, y, n in zip(xs, ys, ns, strict=True):
            ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(4, 5), fontsize=7,
                        color=line.lines[0].get_color())
    many = sorted(k for k in samples if k > 1)
    note = f"bars: ± sd over {'/'.join(map(str, many))} {samples_are}" if many else \
        f"no spread: one of the {samples_are.split(' (')[0]} per point"
    ax.set_xscale("log")
    ax.set_xlabel("context length (tokens, log scale)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    ax.legend(title=note, title_fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def write_report(metrics_paths: Sequence[str | Path], out_dir: str | Path, metric: str = "accuracy",
                 title: str | None = None) -> str:
    """``results.md`` and ``accuracy_vs_length.png`` in ``out_dir``; returns the markdown table."""
    metrics = load_metrics(metrics_paths)
    out = Path(out_dir)
    table = markdown_table(metrics, metric)
    text = (f"# {title}\n\n" if title else "") + table
    with atomic_open(out / "results.md") as f:
        f.write(text)
    plot_accuracy(metrics, out / "accuracy_vs_length.png", metric, title)
    return table
