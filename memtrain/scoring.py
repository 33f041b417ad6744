"""Answer extraction and scoring, in one place.

- :func:`extract_boxed` takes the content of the **last top-level** ``\\boxed{...}`` (``\\boxed {x}`` with a
  space counts; nested braces allowed; a box nested inside it is unwrapped to its content).
- Training rewards use :func:`strict_em`: exact match after :func:`normalize_strict` (lower-case, collapse
  whitespace, strip surrounding punctuation/quotes). Strict so the policy is paid only for the entity.
- Evaluation reports MemAgent's :func:`accuracy` (the headline: a normalised gold answer inside the
  normalised prediction **or** the prediction inside the gold, plain substrings) beside SQuAD-style
  :func:`em`, :func:`f1` and :func:`sub_em` (gold inside prediction, word-bounded) after
  :func:`normalize_answer` (lower-case, drop punctuation and articles a/an/the, collapse whitespace), max
  over gold aliases.
A missing ``\\boxed{}`` scores 0 everywhere (it is counted separately by callers as ``no_boxed``).

Answer modes (:func:`extract_answer`): ``boxed`` (the paper's, default) reads only ``\\boxed{}``;
``lenient`` — a CPU-scale knob beyond the paper — falls back, when there is no ``\\boxed{}``, to the first
non-empty line of the response without a leading "The answer is:". Tiny models such as the embedded
SmolLM2-135M almost never write ``\\boxed{}`` (measured: 0 of 16 sampled answers), so with ``boxed`` every
reward is 0 and GRPO has nothing to learn from.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_BOXED = re.compile(r"\\boxed\s*\{")


def _boxes(text: str) -> list[tuple[int, int, int]]:
    """Every closed top-level box as (start, content start, content end); unclosed ones are skipped."""
    out, pos = [], 0
    while (m := _BOXED.search(text, pos)) is not None:
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth:  # unclosed: look for a later, closed one inside it
            pos = m.end()
            continue
        out.append((m.start(), m.end(), i - 1))
        pos = i
    return out


def extract_boxed(text: str) -> str | None:
    """Content of the last top-level ``\\boxed{...}`` in ``text`` (inner boxes unwrapped), or None."""
    boxes = _boxes(text)
    if not boxes:
        return None
    _, a, b = boxes[-1]
    inner = text[a:b]
    while _boxes(inner):  # \\boxed{a \\boxed{b}} -> "a b"
        s, ia, ib = _boxes(inner)[0]
        inner = inner[:s] + inner[ia:ib] + inner[ib + 1 :]
    return inner.strip()


ANSWER_MODES = ("boxed", "lenient")
_ANSWER_LEAD = re.compile(r"^\s*(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:\-]?\s*", re.IGNORECASE)


def extract_answer(text: str, mode: str = "boxed") -> str | None:
    """The predicted answer of a response under an answer mode (see the module docstring)."""
    if mode not in ANSWER_MODES:
        raise ValueError(f"unknown answer mode {mode!r}; use one of {ANSWER_MODES}")
    boxed = extract_boxed(text)
    if boxed is not None or mode == "boxed":
        return boxed
    for line in text.splitlines():
        line = _ANSWER_LEAD.sub("", line).strip().rstrip(".").strip()
        if line:
            return line
    return None


_LATEX_TEXT = re.compile(r"\\text\{([^{}]*)\}")
_LATEX_SPACE = re.compile(r"\\[,\s]")  # \, and a backslash before any whitespace (LaTeX's control space)


def _strip_latex(s: str) -> str:
    r"""``\text{x}`` -> x and LaTeX spaces -> " ", repeated until nothing changes (``\text{\text{x}}``,
    ``\\ x``), so that normalising twice gives what normalising once does."""
    while True:
        out = _LATEX_SPACE.sub(" ", _LATEX_TEXT.sub(r"\1", s))
        if out == s:
            return out
        s = out


def normalize_strict(s: str) -> str:
    s = _strip_latex(s.lower())  # lower first: "\TEXT{x}" lowered must not become a box to strip next time
    s = " ".join(s.split())
    return s.strip(" \t\n.,;:!?\"'`()[]")


def normalize_answer(s: str) -> str:
    """SQuAD's normalisation: lower-case, no punctuation, no articles, single spaces."""
    s = _strip_latex(s).lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def strict_em(pred: str | None, golds: Sequence[str]) -> float:
    """1 when the prediction equals a gold answer after :func:`normalize_strict` (an empty one never does)."""
    if pred is None:
        return 0.0
    p = normalize_strict(pred)
    return float(bool(p) and any(p == normalize_strict(g) for g in golds))


def em(pred: str | None, golds: Sequence[str]) -> float:
    """1 when the prediction equals a gold answer after :func:`normalize_answer`; an empty normalised
    answer ("", "the", "?") never matches, as in :func:`sub_em` and :func:`accuracy`, so EM implies both."""
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    return float(bool(p) and any(p == normalize_answer(g) for g in golds))


def sub_em(pred: str | None, golds: Sequence[str]) -> float:
    """1 when a normalised gold answer occurs inside the normalised prediction (word-bounded)."""
    if pred is None:
        return 0.0
    p = f" {normalize_answer(pred)} "
    return float(any(normalize_answer(g) and f" {normalize_answer(g)} " in p for g in golds))


def accuracy(pred: str | None, golds: Sequence[str]) -> float:
    """MemAgent's accuracy: ``gold in pred or pred in gold`` on normalised strings (an empty prediction
    is never inside a gold answer)."""
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    if not p:
        return 0.0
    return float(any(g and (g in p or p in g) for g in map(normalize_answer, golds)))


def f1(pred: str | None, golds: Sequence[str]) -> float:
    if pred is None:
        return 0.0
    best = 0.0
    p_toks = normalize_answer(pred).split()
    for g in golds:
        g_toks = normalize_answer(g).split()
        common = sum((Counter(p_toks) & Counter(g_toks)).values())
        if common == 0:
            continue
        prec, rec = common / len(p_toks), common / len(g_toks)
        best = max(best, 2 * prec * rec / (prec + rec))
    return best


def score_all(text: str, golds: Sequence[str], mode: str = "boxed") -> dict[str, float]:
    """Every metric for one model response; ``boxed`` is 1 when a ``\\boxed{}`` answer was found."""
    pred = extract_answer(text, mode)
    return {
        "boxed": float(extract_boxed(text) is not None),
        "accuracy": accuracy(pred, golds),
        "strict_em": strict_em(pred, golds),
        "em": em(pred, golds),
        "f1": f1(pred, golds),
        "sub_em": sub_em(pred, golds),
    }


# ------------------------------------------------------------------------------------------ search QA
# Multi-objective answers (MEM1 setting, DESIGN §10): the agent's answer is the content of the **last**
# ``<answer>…</answer>`` of its final response, split on ";" by position; part i is scored against the
# aliases of objective i and the score is the **mean** over objectives (MEM1 sums; the mean keeps 1 the
# maximum whatever n). A wrong number of parts scores 0 for every objective (MEM1 would still score the
# first parts by position; the issue fixes the stricter rule). Metrics: ``em`` (SQuAD-normalised exact
# match against any alias: the paper's reward), and as documented CPU knobs ``sub_em`` (gold inside the
# part, word-bounded), ``accuracy`` (MemAgent's two-way sub-EM), ``f1`` and ``strict_em``.

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
OBJECTIVE_METRICS = ("em", "sub_em", "accuracy", "f1", "strict_em")


def extract_tagged_answer(text: str) -> str | None:
    """Content of the last closed ``<answer>…</answer>`` in ``text`` (stripped), or None."""
    found = _ANSWER_TAG.findall(text)
    return found[-1].rsplit("<answer>", 1)[-1].strip() if found else None  # "<answer>a<answer>b</answer>": b


def split_objectives(answer: str | None, n: int) -> list[str] | None:
    """The answer's ";"-separated parts (stripped) when there are exactly ``n``, else None."""
    if answer is None:
        return None
    parts = [p.strip() for p in answer.split(";")]
    return parts if len(parts) == n else None


def _metric(name: str):  # noqa: ANN202
    fns = {"em": em, "sub_em": sub_em, "accuracy": accuracy, "f1": f1, "strict_em": strict_em}
    if name not in fns:
        raise ValueError(f"unknown objective metric {name!r}; use one of {OBJECTIVE_METRICS}")
    return fns[name]


def objective_scores(answer: str | None, golds: Sequence[Sequence[str]], metric: str = "em") -> list[float]:
    """Per-objective scores of a multi-objective answer (all 0 when the part count is not ``len(golds)``)."""
    fn = _metric(metric)
    parts = split_objectives(answer, len(golds))
    if parts is None:
        return [0.0] * len(golds)
    return [fn(p, g) for p, g in zip(parts, golds, strict=True)]


def objective_sum(answer: str | None, golds: Sequence[Sequence[str]], metric: str = "em") -> float:
    """Sum of :func:`objective_scores`: MEM1's search-QA training reward."""
    return float(sum(objective_scores(answer, golds, metric)))


def multi_objective_score(answer: str | None, golds: Sequence[Sequence[str]], metric: str = "em") -> float:
    """Mean of :func:`objective_scores`: the paper's search-QA evaluation score."""
    scores = objective_scores(answer, golds, metric)
    return sum(scores) / len(scores) if scores else 0.0


def score_objectives(answer: str | None, golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Every objective metric's mean for one answer, plus ``answered`` and ``parts_ok`` (count right)."""
    out = {m: multi_objective_score(answer, golds, m) for m in OBJECTIVE_METRICS}
    out["answered"] = float(answer is not None)
    out["parts_ok"] = float(split_objectives(answer, len(golds)) is not None)
    return out
