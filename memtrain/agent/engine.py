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
import inspect
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

    On CPU two things make a batch cheaper than its rows run one by one, with the same tokens up to float
    rounding: each distinct prompt is prefilled alone (:func:`_prefill_rows`; identical prompts, as in a
    GRPO group, once) and the single-token decode steps attend through plain matmuls
    (:func:`_decode_attention`) instead of SDPA's CPU flash kernel. ``cpu_kernels=False`` runs stock HF
    ``generate`` (the reference the tests and the rollout benchmark compare with).
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32, logprobs: bool = False,
                 cpu_kernels: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.logprobs = logprobs  # record each sampled token's log-prob (Completion.logprobs)
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = eos if isinstance(eos, list) else [eos]
        self._stop_ids = {i for i in (*eos, tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None}
        self.cpu_kernels = cpu_kernels
        self._prefill_alone = cpu_kernels and _plain_cache(model)  # on CPU batches, see _generate_batch
        attention = model.config._attn_implementation
        if cpu_kernels and model.device.type == "cpu" and attention == "sdpa":
            _register_decode_attention()
            model.set_attn_implementation(_DECODE_ATTENTION)
        elif not cpu_kernels and attention == _DECODE_ATTENTION:
            model.set_attn_implementation("sdpa")

    def sync_weights(self, model: Any) -> None:
        """A no-op when the engine runs on the trained model itself (the training path); else a copy."""
        if model is not self.model:
            self.model.load_state_dict(model.state_dict())

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[Completion]:
        return self.generate_ids([render(self.tokenizer, c) for c in conversations], sampling)

    @torch.inference_mode()
    def generate_ids(self, prompts: list[list[int]], sampling: Sampling) -> list[Completion]:
        """``generate`` from token ids (token-in/token-out servers: veRL's ``hf`` rollout)."""
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
        if self._prefill_alone and device.type == "cpu" and len(prompts) > 1 and min(map(len, prompts)) > 1:
            kwargs[_cache_kwarg(self.model)] = _prefill_rows(self.model, prompts, width)
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


def _plain_cache(model: Any) -> bool:
    """Whether the model's cache is a plain growing key/value cache on every layer (no sliding window,
    no recurrent state), which :func:`_prefill_rows` can fill row by row."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layers = DynamicCache(config=model.config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _cache_kwarg(model: Any) -> str:
    """How this transformers version names the cache argument (``past_key_values`` became ``cache``)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _prefill_rows(model: Any, prompts: list[list[int]], width: int) -> Any:
    """The batch's key/value cache for every prompt token but the last, each distinct prompt run alone.

    On CPU a prefill is compute-bound, so one ``[B, width]`` forward costs at least B single-row ones, and
    more: its padded rows need an explicit mask, which keeps SDPA from skipping the causal half, and its
    activations outgrow the caches. Rows are written left-padded into one cache that ``generate`` then
    extends from the last prompt token (positions come from the attention mask, as for a padded batch).
    """
    from transformers import DynamicCache

    device = model.device
    forward_kwargs: dict[str, Any] = {"use_cache": True}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:  # a prefill needs no logits
        forward_kwargs["logits_to_keep"] = 1
    cache_kwarg = _cache_kwarg(model)
    rows: dict[tuple[int, ...], list[int]] = {}
    for r, p in enumerate(prompts):
        rows.setdefault(tuple(p[:-1]), []).append(r)
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    for prefix, idx in rows.items():
        cache = DynamicCache(config=model.config)
        model(input_ids=torch.tensor([prefix], device=device), **forward_kwargs, **{cache_kwarg: cache})
        if not keys:
            for layer in cache.layers:
                _, h, _, d = layer.keys.shape
                keys.append(layer.keys.new_zeros(len(prompts), h, width - 1, d))
                values.append(layer.values.new_zeros(len(prompts), h, width - 1, d))
        start = width - 1 - len(prefix)
        for k, v, layer in zip(keys, values, cache.layers, strict=True):
            k[idx, :, start:] = layer.keys
            v[idx, :, start:] = layer.values
    merged = DynamicCache(config=model.config)
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        merged.update(k, v, i)
    return merged


def _decode_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None, **kwargs: Any):
    """Attention for single-token decode steps as two small matmuls; anything else goes to SDPA.

    SDPA's CPU flash kernel is built for many query tokens. On a decode step (one query token per row
    against the whole cache) it costs a multiple of two grouped matmuls with a float softmax, and far more
    on the grouped-query path HF takes when a batch needs no mask (one row, no padding), which is every
    step of a one-document read. Query heads are grouped onto their key/value head as ``repeat_kv`` orders
    them, so no key/value head is copied.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    mask_ok = attention_mask is None or attention_mask.dtype == torch.bool
    if query.shape[2] != 1 or not mask_ok or module.training or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    b, h, _, d = query.shape
    kv_heads = key.shape[1]
    q = query.reshape(b, kv_heads, h // kv_heads, d) * (scaling if scaling is not None else d**-0.5)
    scores = (q @ key.transpose(-1, -2)).float()  # [b, kv_heads, group, cache]
    if attention_mask is not None:  # [b, 1, 1, cache], True = attend
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    out = scores.softmax(-1).to(value.dtype) @ value
    return out.reshape(b, h, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


_DECODE_ATTENTION = "memtrain_cpu_decode"


def _register_decode_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(_DECODE_ATTENTION, _decode_attention)
    AttentionMaskInterface.register(_DECODE_ATTENTION, sdpa_mask)


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
