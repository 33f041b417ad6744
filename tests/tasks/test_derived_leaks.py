"""No derived form of the E2E answer survives on real data (issue 24, item 5).

Leaks are found by the independent checker of ``derived_oracle.py`` (a tokenised stem comparison that
never calls the masker). Before derived forms were masked (builder v3), it found a derived form of the
answer in 40 of the 500 tasks of the ``cpu`` and ``micro`` presets built from the embedded dump ("the
Algerian President" for Algeria, "Arab Christians" for Christian, "Azerbaijani" for Azerbaijanis, ...).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from derived_oracle import derived_leaks

from memtrain.config import load_config
from memtrain.prompts import MASK
from memtrain.recipes.build_tasks import BuildConfig, build
from memtrain.tasks.masking import leaks, mask_entity
from memtrain.tasks.taskset import load_tasks

pytest.importorskip("gensim")

# (page, a phrase on it, the entity key (as the rules extractor or a link names it), the phrase masked):
# the issue's examples
EXAMPLES = [
    ("Algeria", "Algerian President", "algeria", "[MASK] President"),
    ("Angola", "the first Angolan", "angola", "the first [MASK]"),
    ("Allah", "Arab Christians", "christian", "Arab [MASK]"),
    ("Anthropology", "the cognitive sciences", "Cognitive science", "the [MASK]"),
    ("Azerbaijan", "Azerbaijani", "azerbaijanis", "[MASK]"),
]


@pytest.fixture(scope="module")
def embedded_pool():
    from memtrain.corpus import iter_passages
    from memtrain.tasks.e2e import PassagePool

    return PassagePool(list(iter_passages("embedded", entities="auto")))


@pytest.mark.parametrize(("page", "phrase", "key", "want"), EXAMPLES)
def test_issue_examples_are_masked_on_their_real_pages(embedded_pool, page, phrase, key, want):
    """Masking the entity over its page, as the builder does, hides the derived word of the phrase."""
    pool = embedded_pool
    passages = [p for p in pool.passages if p.title == page and phrase in p.text]
    assert passages, f"{phrase!r} no longer on page {page!r} of the embedded dump"
    forms = pool.forms(key)
    assert forms and not leaks(phrase, forms)  # only a derived form of the entity is there
    for p in passages:
        assert derived_leaks(p.text, forms)  # the checker sees the leak in the unmasked text
        masked, _ = mask_entity(p.text, pool.mask_forms(key))
        assert want in masked and MASK in want
        assert derived_leaks(masked, forms) == []


def test_masking_every_entity_of_real_pages_leaves_no_derived_form(embedded_pool):
    """Every entity of 12 real pages that may be an answer, masked over its own passage: the checker finds
    nothing left."""
    pool = embedded_pool
    titles = sorted({p.title for p in pool.passages})[:12]
    checked = hidden = 0
    for p in pool.passages:
        if p.title not in titles:
            continue
        for key in {e.key for e in p.entities if pool.forms_ok(e.key)}:  # could be answers (no common word)
            forms = pool.forms(key)
            before = derived_leaks(p.text, forms)
            masked, _ = mask_entity(p.text, pool.mask_forms(key))
            assert derived_leaks(masked, forms) == [], (p.title, key)
            checked += 1
            hidden += bool(before)
    assert checked > 1000 and hidden > 20  # derived forms are common on real pages


def preset_build(tmp_path: Path, preset: str, corpus: str, *overrides: str) -> Path:
    out = tmp_path / f"{preset}"
    cfg = load_config(BuildConfig, "data", preset, [f"corpus={corpus}", f"out={out}", "progress=false",
                                                    "workers=1", *overrides])
    build(cfg)
    return out


def leaking(out: Path) -> Counter:
    found: Counter = Counter()
    for t in load_tasks(out):
        for c in t.chunks:
            found.update(derived_leaks(c, t.answers))
    return found


# cpu and micro whole (200 and 300 tasks) on the embedded dump; bounded elsewhere to keep the suite short
# (the paper preset's 150-passage documents take ~0.5 s per task here; its tokenizer is swapped for the
# embedded one, which is what is available offline: masking does not depend on it)
PRESETS = [
    ("cpu", "embedded", ()), ("micro", "embedded", ()),
    ("paper", "embedded", ("num_tasks=8", "tokenizer=smollm2")),
    ("cpu", "leads", ("num_tasks=100",)), ("micro", "leads", ("num_tasks=150",)),
    ("paper", "leads", ("num_tasks=8", "tokenizer=smollm2")),
]  # fmt: skip


@pytest.mark.parametrize(("preset", "source", "overrides"), PRESETS)
def test_presets_leave_no_derived_form_of_the_answer(tmp_path, request, preset, source, overrides):
    corpus = "embedded" if source == "embedded" else str(request.getfixturevalue("shared_data") / "wikipedia")
    out = preset_build(tmp_path, preset, corpus, *overrides)
    tasks = load_tasks(out)
    assert len(tasks) >= 8
    assert leaking(out) == Counter()
