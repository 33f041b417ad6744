"""``build_engine``: one factory so every command (agent run, eval, serve, train) picks engines the same way.

Kinds: ``hf`` (default; HF transformers on CPU or one GPU, via :func:`memtrain.models.load_model`),
``openai`` (any OpenAI-compatible server; needs ``base_url``) and ``vllm`` (offline vLLM on CUDA).
Heavy imports happen inside, so importing this module is cheap.
"""

from __future__ import annotations

from typing import Any

from memtrain.errors import MemtrainError

ENGINE_KINDS = ("hf", "openai", "vllm")


def _tokenizer(tok: Any) -> Any:
    """A tokenizer object from a name (``smollm2``, hub id, path), an object, or None."""
    if tok is None or not isinstance(tok, str):
        return tok
    from memtrain.models import load_tokenizer

    return load_tokenizer(tok)


def build_engine(kind: str, model: str, **opts: Any) -> Any:
    """An :class:`~memtrain.agent.engine.Engine` of ``kind`` serving ``model``.

    - ``hf``: ``dtype`` ("auto"), ``device`` ("auto"), ``batch_size`` (32).
    - ``openai``: ``base_url`` (required), ``tokenizer`` (name or object; gives token ids), ``api_key_env``,
      ``concurrency``, ``timeout``, ``retries``, ``request_token_ids``, ``extra_body``.
    - ``vllm``: ``tokenizer``, ``dtype``, ``gpu_memory_utilization`` and any ``vllm.LLM`` keyword.
    """
    kind = (kind or "hf").lower()
    if kind == "hf":
        from memtrain.agent.engine import HFEngine
        from memtrain.models import load_model

        batch_size = int(opts.pop("batch_size", 32))
        m, tok = load_model(model, dtype=opts.pop("dtype", "auto"), device=opts.pop("device", "auto"))
        _no_extra(kind, opts)
        return HFEngine(m, tok, batch_size=batch_size)
    if kind == "openai":
        from memtrain.agent.openai_engine import OpenAIEngine

        base_url = opts.pop("base_url", None)
        if not base_url:
            raise MemtrainError("the openai engine needs a server URL: pass --base-url http://HOST:PORT/v1")
        return OpenAIEngine(base_url, model, tokenizer=_tokenizer(opts.pop("tokenizer", None)), **opts)
    if kind == "vllm":
        from memtrain.agent.vllm_engine import VLLMEngine
        from memtrain.models import resolve_path

        return VLLMEngine(resolve_path(model), tokenizer=_tokenizer(opts.pop("tokenizer", None)), **opts)
    raise MemtrainError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINE_KINDS)}")


def _no_extra(kind: str, opts: dict[str, Any]) -> None:
    if opts:
        raise MemtrainError(f"engine {kind!r} does not take option(s) {sorted(opts)}")
