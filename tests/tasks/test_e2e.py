"""E2E task construction on hand-made passages: answer choice, masking, windows, drops, IMR rule."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest

from memtrain.config import load_config
from memtrain.errors import MemtrainError
from memtrain.prompts import E2E_PROBLEM, MASK, TARGET
from memtrain.recipes.build_tasks import BuildConfig
from memtrain.records import Entity, MemTask, Passage
from memtrain.tasks.e2e import DropReason, E2EConfig, PassagePool, build_e2e_task
from memtrain.tasks.masking import leaks, mask_entity

FILLER = "This sentence adds some neutral filler words about nothing in particular for the reader."


def passage(title: str, text: str, links: dict[str, str], pid: str, label: str = "LINK") -> Passage:
    """A passage whose entities are every occurrence of each surface form in ``links`` (form -> key)."""
    ents = [
        Entity(m.start(), m.end(), m.group(0), label, key)
        for form, key in links.items()
        for m in re.finditer(re.escape(form), text)
    ]
    return Passage(title, text, ents, pid)


def small_pool() -> list[Passage]:
    return [
        passage("Eiffel Tower", "The Eiffel Tower stands in Paris, built by Gustave Eiffel for the 1889 "
                "World's Fair. " + FILLER, {"Paris": "Paris", "Gustave Eiffel": "Gustave Eiffel"}, "t:0"),
        passage("Paris", "The French capital hosts the Louvre museum and the Seine river. " + FILLER,
                {"French capital": "Paris", "Louvre": "Louvre"}, "t:1"),
        passage("Seine", "The Seine flows through paris towards Le Havre on the English Channel. " + FILLER,
                {"Le Havre": "Le Havre", "English Channel": "English Channel"}, "t:2"),
        passage("Quarks", "Quarks combine into hadrons such as protons and neutrons. " + FILLER,
                {"hadrons": "Hadron"}, "t:3"),
        passage("Bach", "Johann Sebastian Bach composed the Mass in B minor in Leipzig. " + FILLER,
                {"Johann Sebastian Bach": "Johann Sebastian Bach", "Leipzig": "Leipzig"}, "t:4"),
    ]


def preset(name: str, *overrides: str) -> E2EConfig:
    return load_config(BuildConfig, "data", name, list(overrides)).e2e


def test_presets_and_validation():
    paper = preset("paper")
    assert (paper.n_related, paper.n_random) == (29, 120)
    assert (paper.chunk_tokens, paper.max_chunks, paper.min_chunks) == (5120, 8, 1)
    assert paper.mask_scope == "document"
    assert preset("cpu").chunk_tokens < preset("paper").chunk_tokens
    with pytest.raises(MemtrainError, match="min_chunks"):
        preset("cpu", "e2e.min_chunks=9")
    with pytest.raises(MemtrainError, match="neither a YAML file nor a data preset"):
        preset("gpu")


def test_pool_forms_include_every_surface_form_and_the_link_target():
    pool = PassagePool(small_pool())
    assert set(pool.forms("Paris")) == {"Paris", "French capital"}
    assert pool.label("Paris") == "LINK"


def test_task_masks_answer_everywhere_including_titles(tokenizer):
    pool = PassagePool(small_pool())
    cfg = E2EConfig(n_related=2, n_random=2, chunk_tokens=64, max_chunks=8, entity_labels=["LINK"])
    # force the answer to be Paris: the pivot's only other entity is filtered out by max_answer_words
    cfg = replace(cfg, max_answer_words=1)
    task = build_e2e_task(0, pool, [1, 2], random.Random(0), tokenizer, cfg)
    assert isinstance(task, MemTask), task
    assert task.problem == E2E_PROBLEM and task.kind == "e2e"
    assert task.answers[0] == "Paris" and "French capital" in task.answers
    doc = "\n\n".join(task.chunks)
    assert not leaks(doc, ["Paris", "French capital"])  # lower-case "paris" and the title "Paris" too
    assert doc.count(MASK) >= 4
    assert task.meta["pivot_pid"] == "t:0" and task.meta["answer_key"] == "Paris"
    assert len(task.imr) == len(task.chunks)
    assert all(n <= 64 for n in task.meta["chunk_tokens"])
    assert sorted(task.meta["passage_pids"]) == ["t:0", "t:1", "t:2", "t:3", "t:4"]


def test_same_rng_same_task(tokenizer):
    pool = PassagePool(small_pool())
    cfg = preset("cpu", "e2e.min_mentions=1", "e2e.min_chunks=1")  # the hand-made pool mentions entities once
    a = build_e2e_task(4, pool, [0], random.Random(7), tokenizer, cfg)
    b = build_e2e_task(4, pool, [0], random.Random(7), tokenizer, cfg)
    assert isinstance(a, MemTask) and a.to_dict() == b.to_dict()


def test_window_keeps_the_pivot_and_respects_max_chunks(tokenizer):
    pool = PassagePool(small_pool())
    cfg = E2EConfig(n_related=4, n_random=0, chunk_tokens=24, max_chunks=2, entity_labels=["LINK"])
    seen_starts = set()
    for seed in range(12):
        task = build_e2e_task(4, pool, [0, 1, 2, 3], random.Random(seed), tokenizer, cfg)
        if isinstance(task, DropReason):
            assert task.reason in {"pivot_too_long", "leak"}
            continue
        assert len(task.chunks) <= 2
        assert task.meta["n_chunks_before_window"] > 2
        a, b = task.meta["pivot_chunks"]
        assert 0 <= a <= b < len(task.chunks)
        assert any(MASK in task.chunks[i] for i in range(a, b + 1))
        seen_starts.add(task.meta["window_start"])
        for c in task.chunks:
            assert len(tokenizer.encode(c, add_special_tokens=False)) <= 24
            assert not leaks(c, task.answers)
    assert seen_starts, "no task built at all"


def test_drop_reasons(tokenizer):
    pool = PassagePool(small_pool())
    cfg = preset("cpu", "e2e.min_mentions=1", "e2e.min_chunks=1")
    assert build_e2e_task(3, pool, [], random.Random(0), tokenizer,
                          replace(cfg, entity_labels=["PERSON"])) == DropReason("no_entity")
    few = build_e2e_task(4, pool, [], random.Random(0), tokenizer, replace(cfg, min_mentions=5))
    assert isinstance(few, DropReason) and few.reason == "few_mentions"
    short = build_e2e_task(4, pool, [], random.Random(0), tokenizer, replace(cfg, min_chunks=4))
    assert isinstance(short, DropReason) and short.reason == "too_short"
    tiny_cfg = replace(cfg, chunk_tokens=3, max_chunks=2)
    tiny = build_e2e_task(4, pool, [], random.Random(0), tokenizer, tiny_cfg)
    assert isinstance(tiny, DropReason) and tiny.reason == "pivot_too_long"


def test_common_word_entities_are_not_answers(tokenizer):
    p = passage("X", "In the state of things the Ohio river runs. " + FILLER, {"state": "U.S. state"}, "x:0")
    pool = PassagePool([p])
    assert build_e2e_task(0, pool, [], random.Random(0), tokenizer, preset("cpu")) == DropReason("no_entity")


def test_pivot_scope_masks_only_the_pivot(tokenizer):
    pool = PassagePool(small_pool())
    cfg = E2EConfig(n_related=2, n_random=0, chunk_tokens=512, max_chunks=4, mask_scope="pivot",
                    max_answer_words=1)
    task = build_e2e_task(0, pool, [1, 2], random.Random(0), tokenizer, cfg)
    assert isinstance(task, MemTask)
    doc = task.chunks[0]
    pivot_text = next(x for x in doc.split("\n\n") if x.startswith("Eiffel Tower"))
    assert MASK in pivot_text and not leaks(pivot_text, task.answers)
    assert leaks(doc, task.answers)  # the other passages still name Paris in this variant


def test_imr_candidates_follow_the_rule(tokenizer):
    pool = PassagePool(small_pool())
    cfg = E2EConfig(n_related=4, n_random=0, chunk_tokens=40, max_chunks=8)
    n_cands = 0
    for seed in range(6):
        task = build_e2e_task(4, pool, [0, 1, 2, 3], random.Random(seed), tokenizer, cfg)
        assert isinstance(task, MemTask)
        for i, cands in enumerate(task.imr):
            assert len(cands) <= cfg.imr_per_chunk
            for c in cands:
                n_cands += 1
                assert not leaks(task.answer, c.forms)  # never the E2E answer
                masked, n = mask_entity(task.chunks[i], c.forms, TARGET)
                assert n >= 1 and not leaks(masked, c.forms)  # (a)
                assert not any(leaks(o, c.forms) for j, o in enumerate(task.chunks) if j != i)  # (c)
                assert c.answer not in {"the", "river"} and len(c.answer) >= 2  # (b)
    assert n_cands > 0


def test_arrange_keeps_pivot_inside_budget_at_a_random_position():
    from memtrain.tasks.e2e import _arrange

    others = list(range(1, 13))
    counts = {j: 100 for j in range(13)}
    positions = set()
    for seed in range(40):
        order, n_kept = _arrange(0, others, counts, 450, random.Random(seed))
        assert sorted(order) == list(range(13))
        p = order.index(0)
        assert p < n_kept
        assert sum(counts[j] for j in order[:n_kept]) >= 450
        assert sum(counts[j] for j in order[: p + 1]) <= 450  # the pivot ends inside the budget
        positions.add(p)
    assert positions == {0, 1, 2, 3}
    order, n_kept = _arrange(0, others[:2], counts, 450, random.Random(0))  # short document: keep all
    assert n_kept == 3 and sorted(order) == [0, 1, 2]
