"""The GRPO policy loss as pure functions of per-token tensors (DESIGN §3).

All inputs are ``[n_conversations, n_tokens]`` tensors over *completion* tokens with a 0/1 ``mask`` for
padding; ``advantages`` is ``[n_conversations]`` (one value per conversation, broadcast from its trajectory
or IMR group).

- Ratio ``r = exp(logp − logp_old)``; clipped surrogate ``−min(r·A, clip(r, 1−ε_low, 1+ε_high)·A)``.
  The bounds are asymmetric (DAPO "clip-higher", defaults ε_low = 0.2, ε_high = 0.28): a larger upper bound
  lets low-probability tokens with positive advantage grow faster, which keeps exploration (entropy) alive,
  while the lower bound still stops a bad sample from collapsing a token's probability in one step.
- KL to a frozen reference with the k3 estimator ``exp(ref − logp) − (ref − logp) − 1`` (unbiased for
  KL(π‖π_ref) under samples of π, always ≥ 0), added per token with ``kl_coef`` (1e-3 in the paper).
- Aggregation ``seq-mean-token-mean`` (default): mean over each conversation's tokens, then sum over
  conversations divided by the number of conversations. Every conversation — a 300-token memory update or a
  5-token boxed answer — carries the same weight, which is what broadcasting one advantage to every
  conversation of a trajectory intends; a token mean would let long memory updates drown the final answer
  and the IMR answers. ``token-mean`` (sum over all tokens / number of tokens) is the alternative.

``n_norm`` lets a caller normalise by the *whole batch's* conversation or token count while feeding one
micro-batch at a time, so accumulated micro-batch gradients equal the full-batch gradient exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from memtrain.errors import MemtrainError

AGGREGATIONS = ("seq-mean-token-mean", "token-mean")


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, eps_low: float = 0.2,
    eps_high: float = 0.28,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token ``−min(r·A, clip(r)·A)`` and a 0/1 tensor marking tokens where the clip was active."""
    adv = advantages.unsqueeze(-1) if advantages.dim() == logp.dim() - 1 else advantages
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    loss = -torch.minimum(unclipped, clipped)
    was_clipped = (clipped < unclipped).float()  # the min picked the clipped branch (strictly)
    return loss, was_clipped


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π‖π_ref): ``exp(ref − logp) − (ref − logp) − 1``."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str = "seq-mean-token-mean",
              n_norm: float | None = None) -> torch.Tensor:
    """Reduce per-token ``values`` to a scalar (see module docstring for the two modes).

    ``n_norm`` defaults to this batch's conversation count (``seq-mean-token-mean``) or token count
    (``token-mean``); pass the full batch's count when feeding micro-batches.
    """
    mask = mask.to(values.dtype)
    if mode == "seq-mean-token-mean":
        per_conv = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_conv.sum() / (n_norm if n_norm is not None else values.shape[0])
    if mode == "token-mean":
        return (values * mask).sum() / (n_norm if n_norm is not None else mask.sum().clamp(min=1.0))
    raise MemtrainError(f"unknown loss aggregation {mode!r}; use one of {AGGREGATIONS}")


@dataclass
class LossOutput:
    loss: torch.Tensor  # what to backpropagate
    pg_loss: torch.Tensor  # policy-gradient part (detached)
    kl: torch.Tensor  # aggregated k3 KL (detached; 0 when no reference)
    clip_frac: torch.Tensor  # fraction of tokens where the clip was active (token mean, detached)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    kl_coef: float = 1e-3,
    agg: str = "seq-mean-token-mean",
    n_norm: float | None = None,
    is_weights: torch.Tensor | None = None,
) -> LossOutput:
    """The full per-batch objective: clipped surrogate + ``kl_coef``·k3 KL, aggregated by ``agg``.

    ``is_weights`` (detached, per token) multiply the surrogate: the truncated importance-sampling
    correction between the engine that sampled and the trainer (:func:`tis_weights`).
    """
    pg, clipped = clipped_surrogate(logp, old_logp, advantages, eps_low, eps_high)
    if is_weights is not None:
        pg = pg * is_weights
    per_token = pg
    kl = torch.zeros((), dtype=logp.dtype, device=logp.device)
    if ref_logp is not None and kl_coef != 0.0:
        kl_tok = kl_k3(logp, ref_logp)
        per_token = pg + kl_coef * kl_tok
        kl = aggregate(kl_tok.detach(), mask, agg, n_norm)
    m = mask.to(logp.dtype)
    return LossOutput(
        loss=aggregate(per_token, mask, agg, n_norm),
        pg_loss=aggregate(pg.detach(), mask, agg, n_norm),
        kl=kl,
        clip_frac=(clipped * m).sum() / m.sum().clamp(min=1.0),
    )


def tis_weights(old_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance sampling: ``min(π_trainer / π_sampler, cap)`` per token (detached).

    An engine (vLLM, a server) and the trainer never compute exactly the same probabilities (kernels,
    precision); the ratio reweights each token's gradient to the trainer's policy, capped so that a token
    the engine found unlikely cannot dominate the batch.
    """
    return torch.exp(old_logp - sampler_logp).clamp(max=cap).detach()
