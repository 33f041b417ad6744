"""The IMR probe rule (DESIGN §2, Task IMR): which memory, which earlier chunk, which hidden entity.

One rule, used by training rollouts, by the held-out evaluation inside training and by
``memtrain eval`` on an E2E task set, so the three measure the same thing.

Indexing is 1-based like the paper: m_k is the memory written after reading chunks c_1..c_k (m_0 is "No
previous memory"). For a trajectory that read T chunks:

1. A chunk c_l (1 ≤ l ≤ T−1) is *probeable* when one of its IMR candidates (chosen at build time by
   :func:`memtrain.tasks.e2e.imr_candidates`: an entity only that chunk mentions) can be masked in it.
2. k is drawn uniformly in (first probeable l)+1 .. T, then l uniformly among the probeable chunks before
   k, then the candidate: c_l reached m_k only through earlier memories, never as the chunk just read.
3. All surface forms of the candidate ỹ, their identifying parts and their derived forms
   (:func:`memtrain.tasks.masking.with_parts`), are replaced by ``[TARGET]`` in c_l; the question is
   ``prompts.imr_messages(m_k, masked c_l)``.

Trajectories with T = 1, or with no probeable chunk among c_1..c_{T−1}, get no probe (None).

The draw comes from :func:`probe_rng`, a function of (seed, task id, trajectory index) only, so a probe does
not depend on which other tasks share the batch or the order they come in.
"""

from __future__ import annotations

import random

from memtrain import prompts
from memtrain.records import ImrCandidate, ImrProbe, MemTask
from memtrain.tasks.masking import mask_entity, with_parts


def probe_rng(seed: int, task_id: str, trajectory: int = 0) -> random.Random:
    return random.Random(f"{seed}|imr|{task_id}|{trajectory}")


def maskable_chunks(task: MemTask, n_read: int) -> dict[int, list[tuple[ImrCandidate, str]]]:
    """{l: [(candidate, c_l with it masked as [TARGET])]} for the chunks 1..n_read−1 that have one."""
    out: dict[int, list[tuple[ImrCandidate, str]]] = {}
    for l in range(1, n_read):  # noqa: E741 - c_l with l ≤ T−1 so that some k > l exists
        ok = []
        for c in task.imr[l - 1] if l - 1 < len(task.imr) else []:
            masked, n = mask_entity(task.chunks[l - 1], with_parts([c.answer, *c.forms]), prompts.TARGET)
            if n > 0:
                ok.append((c, masked))
        if ok:
            out[l] = ok
    return out


def pick_probe(task: MemTask, memories: list[str], rng: random.Random, version: str = "v1"
               ) -> ImrProbe | None:
    """The IMR probe of one trajectory (``memories`` = m_0..m_T), or None when it has none."""
    maskable = maskable_chunks(task, len(memories) - 1)
    if not maskable:
        return None
    k = rng.randint(min(maskable) + 1, len(memories) - 1)
    l = rng.choice([x for x in sorted(maskable) if x < k])  # noqa: E741
    cand, masked = rng.choice(maskable[l])
    return ImrProbe(k=k, l=l, candidate=cand, messages=prompts.imr_messages(memories[k], masked, version))
