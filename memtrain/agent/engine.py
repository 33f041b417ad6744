"""The generation interface every engine implements, and the default HF transformers engine.

A batch engine does one thing: complete a batch of single-turn chat conversations. The per-trajectory
memory loop reaches it through :class:`memtrain.agent.loop.TurnBatcher`, which coalesces concurrent
trajectories into such batches, so one loop drives HF transformers (CPU default), vLLM (GPU) and any
OpenAI-compatible server; veRL's server manager plugs in at the loop's level instead
(:mod:`memtrain.integrations.verl`). Engines return token ids of the rendered prompt and the completion so
the RL trainer can score exactly what was sampled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from memtrain.models import release_cpu_memory
from memtrain.records import Completion

Conversation = list[dict[str, str]]


@dataclass
class Sampling:
    """Decoding parameters for one ``generate`` call."""

    max_new_tokens: int = field(default=256, metadata={"help": "max tokens generated per response"})
    temperature: float = field(default=0.0, metadata={"help": "0 means greedy decoding"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    top_k: int = field(default=0, metadata={"help": "0 disables top-k"})
    seed: int | None = field(default=None, metadata={"help": "seed for sampling; None = not reseeded"})
    seeds: list[int] | None = field(default=None, metadata={
        "help": "one seed per conversation of the call (overrides seed), so identical prompts of one group "
                "sample independently on engines that seed each request"})

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def per(self, i: int) -> Sampling:
        """The sampling of conversation ``i`` alone (its own seed)."""
        return dataclasses.replace(self, seed=self.seeds[i], seeds=None) if self.seeds else self


class Engine(Protocol):
    """Anything that completes a batch of chat conversations."""

    tokenizer: Any

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[Completion]: ...

    def sync_weights(self, model: Any) -> None:
        """Make the engine sample from ``model``'s current weights (after an update, before a rollout)."""
        ...


def render(tokenizer: Any, conversation: Conversation) -> list[int]:
    """Token ids of a conversation through the model's chat template, ready for the assistant turn."""
    text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class HFEngine:
    """HF transformers ``generate``, batched with left padding.

    Rows are sorted by prompt length and generated in micro-batches of ``batch_size`` so padding waste
    stays small; results come back in input order. ``generate`` runs under ``inference_mode``.
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32, logprobs: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.logprobs = logprobs  # record each sampled token's log-prob (Completion.logprobs)
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = eos if isinstance(eos, list) else [eos]
        self._stop_ids = {i for i in (*eos, tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None}

    def sync_weights(self, model: Any) -> None:
        """A no-op when the engine runs on the trained model itself (the training path); else a copy."""
        if model is not self.model:
            self.model.load_state_dict(model.state_dict())

    @torch.inference_mode()
    def generate(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[Completion]:
        prompts = [render(self.tokenizer, c) for c in conversations]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Completion | None] = [None] * len(prompts)
        # one generator for the batch: its rows sample independently, the call is reproducible
        seed = sampling.seeds[0] if sampling.seeds else sampling.seed
        if seed is not None:
            torch.manual_seed(seed)
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            for i, comp in zip(idx, self._generate_batch([prompts[i] for i in idx], sampling), strict=True):
                out[i] = comp
        if self.model.device.type == "cpu":
            release_cpu_memory()  # the freed activations of this call go back to the system, not the heap
        return out  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[list[int]], sampling: Sampling) -> list[Completion]:
        device = self.model.device
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        kwargs: dict[str, Any] = {"do_sample": not sampling.greedy, "max_new_tokens": sampling.max_new_tokens}
        if not sampling.greedy:  # top_k=0 disables top-k (None would fall back to the model's default, 50)
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        recorder = _SampledLogprobs(sampling.temperature) if self.logprobs else None
        gen = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            pad_token_id=pad,
            eos_token_id=sorted(self._stop_ids),
            logits_processor=[recorder] if recorder else None,
            **kwargs,
        )
        new = gen[:, width:]
        lps = recorder.finish(new) if recorder else None
        results = []
        for r, (p, row) in enumerate(zip(prompts, new.tolist(), strict=True)):
            ids, reason = [], "length"
            for t in row:
                ids.append(t)
                if t in self._stop_ids:  # the stop token stays in the ids: RL must learn to stop
                    reason = "stop"
                    break
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            results.append(Completion(text=text, prompt_ids=p, completion_ids=ids, finish_reason=reason,
                                      logprobs=lps[r, : len(ids)].tolist() if lps is not None else None))
        return results


class _SampledLogprobs:
    """A logits processor that keeps the log-prob of each token generate picks, under the logits divided
    by the sampling temperature — the distribution the trainer scores (top-p / top-k truncation is not
    applied, as in :func:`memtrain.rl.rows.completion_logprobs`). Custom processors run before HF's
    temperature and top-p warpers, so the division is ours. One ``[B, V]`` row is kept at a time."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature if temperature > 0 else 1.0
        self.prev: torch.Tensor | None = None
        self.out: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prev is not None:  # the token chosen from the previous scores is now the last input id
            self.out.append(self.prev.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.prev = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` log-probs of ``new_tokens`` (the last step's token is read from the output)."""
        if self.prev is not None and len(self.out) < new_tokens.shape[1]:
            last = new_tokens[:, len(self.out) : len(self.out) + 1]
            self.out.append(self.prev.gather(-1, last).squeeze(-1))
        return torch.stack(self.out, dim=1)
