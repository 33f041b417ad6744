"""The one engine factory: every recipe (agent run, eval, serve, train) builds its engine here.

Kinds: ``hf`` (default; HF transformers on CPU or one GPU), ``openai`` (any OpenAI-compatible server; needs
``base_url``) and ``vllm`` (offline vLLM on CUDA). Heavy imports happen inside, so importing this module is
cheap. Every engine has ``sync_weights(model)``: a no-op where the engine *is* the trained model (``hf`` in
training), a weight push where it holds a copy (``vllm``), an error where it cannot (a remote server).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from memtrain.config import option
from memtrain.errors import MemtrainError


@dataclass
class EngineConfig:
    """How responses are generated. The model itself is named by the recipe (``model`` / ``model.name``)."""

    kind: Literal["hf", "openai", "vllm"] = option(
        "hf: transformers generate (CPU default; in training it runs on the policy itself); openai: any "
        "OpenAI-compatible server; vllm: offline vLLM on CUDA", "hf")
    batch_size: int = option("hf: conversations per generate call", 32)
    dtype: str = option("hf/vllm weight dtype: auto, bf16, fp16, fp32 (ignored in training: the policy "
                        "keeps fp32 master weights)", "auto")
    device: str = option("hf: auto, cpu or cuda", "auto")
    base_url: str | None = option("openai: server URL, e.g. http://127.0.0.1:8000/v1", None)
    api_key_env: str = option("openai: environment variable holding the API key (never logged)",
                              "OPENAI_API_KEY")
    tokenizer: str | None = option("openai/vllm: tokenizer name or path for token ids (default: the model's;"
                                   " openai without one reports no ids)", None)
    concurrency: int = option("openai: requests in flight", 8)
    timeout_s: float = option("openai: seconds per request before a retry", 60.0)
    retries: int = option("openai: retries per request on connection errors and 5xx", 3)
    gpu_memory_utilization: float = option("vllm: fraction of GPU memory for weights and KV cache", 0.5)
    sleep_mode: bool = option("vllm: free the engine's GPU memory during each policy update (sleep/wake_up)",
                              False)
    logprobs: bool = option("record the sampler's log-prob of every generated token (used by "
                            "loss.tis_cap; hf/vllm/openai)", False)

    def validate(self) -> None:
        for name in ("batch_size", "concurrency"):
            if getattr(self, name) < 1:
                raise MemtrainError(f"EngineConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.kind == "openai" and not self.base_url:
            raise MemtrainError("engine.kind=openai needs a server URL: engine.base_url=http://HOST:PORT/v1")


def _tokenizer(name: str | None) -> Any:
    if name is None:
        return None
    from memtrain.models import load_tokenizer

    return load_tokenizer(name)


def build_engine(cfg: EngineConfig, model: str, policy: Any = None, tokenizer: Any = None) -> Any:
    """An :class:`~memtrain.agent.engine.Engine` serving ``model``.

    ``policy``/``tokenizer``: an already loaded model (the trainer's policy) for the ``hf`` engine to run on
    directly, so training needs no weight sync on that path.
    """
    cfg.validate()
    if cfg.kind == "hf":
        from memtrain.agent.engine import HFEngine

        if policy is None:
            from memtrain.models import load_model

            policy, tokenizer = load_model(model, dtype=cfg.dtype, device=cfg.device)
        return HFEngine(policy, tokenizer, batch_size=cfg.batch_size, logprobs=cfg.logprobs)
    if cfg.kind == "openai":
        from memtrain.agent.openai_engine import OpenAIEngine

        return OpenAIEngine(cfg.base_url, model, tokenizer=tokenizer or _tokenizer(cfg.tokenizer),  # type: ignore[arg-type]
                            api_key_env=cfg.api_key_env, concurrency=cfg.concurrency, timeout=cfg.timeout_s,
                            retries=cfg.retries, logprobs=cfg.logprobs)
    from memtrain.agent.vllm_engine import VLLMEngine
    from memtrain.models import resolve_path

    return VLLMEngine(resolve_path(model), tokenizer=tokenizer or _tokenizer(cfg.tokenizer), dtype=cfg.dtype,
                      gpu_memory_utilization=cfg.gpu_memory_utilization, logprobs=cfg.logprobs,
                      sleep_mode=cfg.sleep_mode)
