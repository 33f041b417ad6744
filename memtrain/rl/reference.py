"""The frozen reference policy of the KL term: log-probs of the initial policy for the same tokens.

Two ways to hold it, behind one object: a frozen copy of the initial model (full fine-tuning) or, with
LoRA, the policy itself with its adapters disabled (no second copy of the weights). ``kl_coef == 0`` needs
no reference at all (:func:`make_reference` returns None).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from memtrain.rl.rows import Batch, completion_logprobs


class ReferencePolicy:
    """``logprobs(batch)`` under the initial policy; never trained."""

    def __init__(self, model: Any, disable_adapter_of: Any = None) -> None:
        self.model = model  # the frozen copy, or None when the reference is the adapter-free policy
        self.policy = disable_adapter_of

    @torch.no_grad()
    def logprobs(self, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
        if self.policy is not None:
            with self.policy.disable_adapter():
                return completion_logprobs(self.policy, batch, temperature)
        return completion_logprobs(self.model, batch, temperature)


def make_reference(policy: Any, kl_coef: float, lora: bool) -> ReferencePolicy | None:
    """None when ``kl_coef == 0``; the LoRA base via adapter disabling; else a frozen copy of ``policy``."""
    if kl_coef == 0:
        return None
    if lora:
        return ReferencePolicy(None, disable_adapter_of=policy)
    ref = copy.deepcopy(policy).eval()
    off = getattr(ref, "activation_checkpointing_disable", None) or ref.gradient_checkpointing_disable
    off()  # nothing is backpropagated through the reference
    for p in ref.parameters():
        p.requires_grad_(False)
    return ReferencePolicy(ref)
