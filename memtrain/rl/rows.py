"""Training rows: one per conversation (prompt ids + completion ids + advantage), and their log-probs.

A trajectory of T chunks is T+1 independent conversations, an IMR answer is one more; the trainer never
needs to know which is which beyond ``kind`` (for logging). Rows are padded on the **right**, so positions
stay 0..L−1 for every row and no ``position_ids`` bookkeeping is needed; the loss mask covers completion
tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from memtrain.records import Completion, Rollouts, Row
from memtrain.rl.advantages import broadcast, group_advantages, informative_groups


@dataclass
class Batch:
    """Right-padded tensors for a list of rows.

    ``input_ids``/``attention_mask``: ``[B, L]``; ``targets``/``mask``: ``[B, K]`` over the predicted window
    ``start .. start+K−1`` of target positions (a window shared by the rows, so logits are only computed for
    positions that can hold a completion token); ``advantages``: ``[B]``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    start: int
    targets: torch.Tensor
    mask: torch.Tensor
    advantages: torch.Tensor
    sampler_logp: torch.Tensor | None = None  # ``[B, K]`` the engine's log-probs, when every row has them

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())


def collate(rows: Sequence[Row], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    """Pad rows on the right and build the completion-token window and mask."""
    seqs = [r.prompt_ids + r.completion_ids for r in rows]
    width = max(len(s) for s in seqs)
    # target position p (token p) is predicted by logits at p-1; completion tokens start at len(prompt)
    start = min(len(r.prompt_ids) for r in rows)
    k = width - start
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.full((len(rows), k), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), k), dtype=torch.float32)
    for i, (r, s) in enumerate(zip(rows, seqs, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        attn[i, : len(s)] = 1
        a, b = len(r.prompt_ids) - start, len(s) - start
        targets[i, a:b] = torch.tensor(r.completion_ids)
        mask[i, a:b] = 1.0
    adv = torch.tensor([r.advantage for r in rows], dtype=torch.float32)
    sampler = None
    if all(r.sampler_logprobs is not None for r in rows):
        sampler = torch.zeros((len(rows), k), dtype=torch.float32)
        for i, r in enumerate(rows):
            a = len(r.prompt_ids) - start
            sampler[i, a : a + len(r.completion_ids)] = torch.tensor(r.sampler_logprobs)
        sampler = sampler.to(device)
    return Batch(ids.to(device), attn.to(device), start, targets.to(device), mask.to(device), adv.to(device),
                 sampler)


def completion_logprobs(model: torch.nn.Module, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    """``[B, K]`` log-probabilities of the target tokens (0 where masked), in fp32, under the policy that
    sampled them: logits divided by the sampling ``temperature`` (as veRL and TRL do; top-p / top-k
    truncation is not applied, so with top-p < 1 these are the untruncated tempered probabilities).

    Only the hidden states of positions ``start−1 .. L−2`` go through the LM head (``logits_to_keep``), so
    prompt tokens cost a forward pass but no vocabulary projection.
    """
    width = batch.input_ids.shape[1]
    keep = torch.arange(batch.start - 1, width - 1, device=batch.input_ids.device)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=keep,
                use_cache=False)
    logits = out.logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    # gather − logsumexp avoids materialising a second [B, K, V] tensor (log_softmax would)
    logp = logits.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return logp * batch.mask


def micro_batches(rows: Sequence[Row], size: int) -> list[list[Row]]:
    """Rows sorted by length, cut into micro-batches of ``size`` (sorting keeps padding small)."""
    order = sorted(rows, key=lambda r: (len(r.prompt_ids) + len(r.completion_ids), len(r.prompt_ids)))
    return [order[i : i + size] for i in range(0, len(order), size)]


def build_rows(rollouts: Rollouts, scale: str = "none", dapo_filter: bool = True,
               mask_truncated: bool = False) -> tuple[list[Row], dict[str, float]]:
    """Rewards -> advantages -> one :class:`Row` per conversation, with group statistics.

    - E2E groups (the G1 trajectories of a document) get Dr. GRPO advantages of the coupled reward; each
      trajectory's advantage is broadcast to all its conversations (every update and the final answer).
    - IMR groups (the G2 answers to one IMR prompt) get advantages of ``R^I``, one row per answer.
    - With ``dapo_filter`` a group whose rewards are all equal contributes no rows; E2E and IMR groups are
      filtered independently (an IMR group can teach recall even when its document's E2E group is flat).
    - Truncated responses (``finish_reason == "length"``) are **kept** by default with their trajectory's
      advantage: a memory update cut at the budget is still the memory the agent carried forward, so it is
      exactly what the outcome judged, and training on it teaches the policy to fit the budget. A truncated
      final/IMR answer rarely has a ``\\boxed{}`` and already scores 0. ``mask_truncated`` drops them instead.
    """
    g1 = rollouts.g1
    n_docs = len(rollouts.tasks)
    stats: dict[str, float] = {}
    rows: list[Row] = []

    def add(comp: Completion, adv: float, kind: str, doc: int) -> None:
        truncated = comp.finish_reason == "length"
        if truncated and mask_truncated:
            return
        rows.append(Row(list(comp.prompt_ids), list(comp.completion_ids), adv, kind, truncated, doc,
                        comp.logprobs))

    r_e2e = torch.tensor(rollouts.rewards, dtype=torch.float32).view(n_docs, g1)
    a_e2e = group_advantages(r_e2e, scale)
    keep_e2e = informative_groups(r_e2e) if dapo_filter else torch.ones(n_docs, dtype=torch.bool)
    for i, tr in enumerate(rollouts.trajectories):
        d = rollouts.doc_of[i]
        if not keep_e2e[d]:
            continue
        advs = broadcast([float(a_e2e[d, i % g1])], [len(tr.turns)])
        for turn, adv in zip(tr.turns, advs, strict=True):
            add(turn.completion, adv, turn.kind, d)

    owner = [rollouts.doc_of[i] for i, q in enumerate(rollouts.imr) if q is not None and q.completions]
    asked = [q for q in rollouts.imr if q is not None and q.completions]
    n_imr_kept = 0
    if asked:
        r_imr = torch.tensor([q.rewards for q in asked], dtype=torch.float32)
        a_imr = group_advantages(r_imr, scale)
        keep_imr = informative_groups(r_imr) if dapo_filter else torch.ones(len(asked), dtype=torch.bool)
        n_imr_kept = int(keep_imr.sum())
        for j, q in enumerate(asked):
            if keep_imr[j]:
                for c, adv in zip(q.completions, a_imr[j].tolist(), strict=True):
                    add(c, adv, "imr", owner[j])

    advs = [r.advantage for r in rows]
    stats.update({
        "groups/e2e": float(n_docs),
        "groups/e2e_dropped": float(n_docs - int(keep_e2e.sum())),
        "groups/imr": float(len(asked)),
        "groups/imr_dropped": float(len(asked) - n_imr_kept),
        "rows/total": float(len(rows)),
        "rows/update": float(sum(r.kind == "update" for r in rows)),
        "rows/final": float(sum(r.kind == "final" for r in rows)),
        "rows/imr": float(sum(r.kind == "imr" for r in rows)),
        "rows/truncated": float(sum(r.truncated for r in rows)),
        "adv/mean": float(sum(advs) / len(advs)) if advs else 0.0,
        "adv/abs_mean": float(sum(abs(a) for a in advs) / len(advs)) if advs else 0.0,
        "adv/max": max(advs, default=0.0),
        "adv/min": min(advs, default=0.0),
    })
    return rows, stats
