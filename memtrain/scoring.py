"""Answer extraction and scoring, in one place.

- :func:`extract_boxed` takes the content of the **last** ``\\boxed{...}`` (nested braces allowed).
- Training rewards use :func:`strict_em`: exact match after :func:`normalize_strict` (lower-case, collapse
  whitespace, strip surrounding punctuation/quotes). Strict so the policy is paid only for the entity.
- Evaluation reports SQuAD-style :func:`em`, :func:`f1` and :func:`sub_em` after :func:`normalize_answer`
  (lower-case, drop punctuation and articles a/an/the, collapse whitespace), max over gold aliases.
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

_BOXED = "\\boxed{"


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text``, or None when there is none or it is unclosed."""
    start = text.rfind(_BOXED)
    while start != -1:
        depth, i = 1, start + len(_BOXED)
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start + len(_BOXED) : i - 1].strip()
        start = text.rfind(_BOXED, 0, start)  # unclosed: fall back to an earlier, closed one
    return None


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


def _strip_latex(s: str) -> str:
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    return s.replace("\\,", " ").replace("\\ ", " ")


def normalize_strict(s: str) -> str:
    s = _strip_latex(s).lower()
    s = " ".join(s.split())
    return s.strip(" \t\n.,;:!?\"'`()[]")


def normalize_answer(s: str) -> str:
    """SQuAD's normalisation: lower-case, no punctuation, no articles, single spaces."""
    s = _strip_latex(s).lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def strict_em(pred: str | None, golds: Sequence[str]) -> float:
    if pred is None:
        return 0.0
    p = normalize_strict(pred)
    return float(any(p == normalize_strict(g) for g in golds))


def em(pred: str | None, golds: Sequence[str]) -> float:
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(g) for g in golds))


def sub_em(pred: str | None, golds: Sequence[str]) -> float:
    """1 when a normalised gold answer occurs inside the normalised prediction (word-bounded)."""
    if pred is None:
        return 0.0
    p = f" {normalize_answer(pred)} "
    return float(any(normalize_answer(g) and f" {normalize_answer(g)} " in p for g in golds))


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
        "strict_em": strict_em(pred, golds),
        "em": em(pred, golds),
        "f1": f1(pred, golds),
        "sub_em": sub_em(pred, golds),
    }
