"""An engine over vLLM's offline ``LLM`` class: the fast rollout path on a CUDA machine.

vLLM is an optional dependency (``pip install 'memtrain[vllm]'``) imported only when the engine is built,
so the rest of memtrain works without it. Prompts are rendered with *our* tokenizer and passed as token ids,
so the ids the trainer scores are exactly the ids vLLM conditioned on, whatever chat template vLLM would
pick on its own. One ``generate`` call hands the whole step to vLLM, whose scheduler does the batching.

:meth:`VLLMEngine.load_weights` pushes trained weights into the running engine (on-policy RL without a
reload). vLLM's internals move between releases; we use the public ``LLM.apply_model`` when present and
fall back to the in-process model runner; both paths are best-effort and tested only on a GPU machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from memtrain.agent.engine import Conversation, Sampling, render
from memtrain.errors import MemtrainError
from memtrain.records import Completion

INSTALL_HINT = "pip install 'memtrain[vllm]' on a CUDA machine"


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise MemtrainError(
            f"the vllm engine needs the vllm package, which is not importable ({e}); {INSTALL_HINT}, "
            "or use --engine hf (CPU) / --engine openai (a running server)"
        ) from None
    return vllm


class VLLMEngine:
    """vLLM offline generation behind the :class:`~memtrain.agent.engine.Engine` interface."""

    def __init__(
        self,
        model_name_or_path: str,
        tokenizer: Any = None,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        logprobs: bool = False,
        **kwargs: Any,
    ):
        vllm = _import_vllm()
        self.logprobs = logprobs  # record each sampled token's log-prob (SamplingParams.logprobs=0)
        self._vllm = vllm
        self.model_name = model_name_or_path
        self.llm = vllm.LLM(
            model=model_name_or_path, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, **kwargs
        )
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()
        self._stop_ids = {
            i for i in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id) if i is not None
        }

    def _params(self, sampling: Sampling) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=sampling.max_new_tokens,
            temperature=max(0.0, sampling.temperature),
            top_p=sampling.top_p if not sampling.greedy else 1.0,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,  # vLLM: -1 disables top-k
            seed=sampling.seed,
            logprobs=0 if self.logprobs else None,  # 0: the sampled token's log-prob only
        )

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[Completion]:
        if not conversations:
            return []
        prompts = [render(self.tokenizer, c) for c in conversations]
        try:
            from vllm.inputs import TokensPrompt

            inputs: list[Any] = [TokensPrompt(prompt_token_ids=p) for p in prompts]
        except ImportError:  # very old vLLM
            inputs = [{"prompt_token_ids": p} for p in prompts]
        params = [self._params(sampling.per(i)) for i in range(len(inputs))]  # a seed per request
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        results = []
        for p, out in zip(prompts, outputs, strict=True):
            o = out.outputs[0]
            ids = list(o.token_ids)
            reason = "length" if o.finish_reason == "length" else "stop"
            text = self.tokenizer.decode(
                [t for t in ids if t not in self._stop_ids], skip_special_tokens=True
            )
            lps = None
            if self.logprobs and o.logprobs:
                lps = [float(step[t].logprob) for step, t in zip(o.logprobs, ids, strict=False)]
            results.append(
                Completion(text=text.strip(), prompt_ids=p, completion_ids=ids, finish_reason=reason,
                           logprobs=lps)
            )
        return results

    def sync_weights(self, model: Any) -> None:
        """Push the trained policy's weights into the served model."""
        self.load_weights((n, p.detach()) for n, p in model.state_dict().items())

    def load_weights(self, state_dict_items: Iterable[tuple[str, Any]]) -> None:
        """Load ``(name, tensor)`` pairs (HF parameter names) into the served model, then drop stale KV cache.

        Best-effort across vLLM versions: ``LLM.apply_model`` (vLLM ≥ 0.8; with multiprocessing it pickles the
        weights to the worker, so set ``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` or disable multiprocessing),
        else the in-process runner at ``llm.llm_engine.model_executor.driver_worker``.
        """
        weights = [(name, t.detach().cpu() if hasattr(t, "detach") else t) for name, t in state_dict_items]
        if hasattr(self.llm, "apply_model"):
            self.llm.apply_model(_WeightLoader(weights))
        else:
            try:
                worker = self.llm.llm_engine.model_executor.driver_worker
                runner = getattr(worker, "worker", worker).model_runner
                runner.model.load_weights(weights)
            except AttributeError as e:
                raise MemtrainError(
                    f"this vLLM version exposes no known way to load weights in place ({e}); "
                    "reload the engine from a saved checkpoint instead"
                ) from None
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()  # cached KV was computed with the old weights


class _WeightLoader:
    """A picklable callable for ``LLM.apply_model`` (lambdas do not cross process boundaries)."""

    def __init__(self, weights: list[tuple[str, Any]]):
        self.weights = weights

    def __call__(self, model: Any) -> None:
        model.load_weights(self.weights)
