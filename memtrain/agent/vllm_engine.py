"""An engine over vLLM's offline ``LLM`` class: the fast rollout path on a CUDA machine, fit for training.

vLLM is an optional dependency (``pip install 'memtrain[vllm]'``: 0.31, the release that resolves with
torch 2.13.0) imported only when the engine is built. Prompts are rendered with *our* tokenizer and passed as
token ids, so the ids the trainer scores are exactly the ids vLLM conditioned on. One ``generate`` call hands
the whole step to vLLM's scheduler; every request carries its own seed (``Sampling.seeds``), so the G copies
of one prompt sample independently and reruns repeat.

Training needs the engine to sample from the policy being trained (DESIGN §9):

- **in process**: the engine is built with vLLM's V1 multiprocessing off
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the model lives in this process and weights move as tensors, not
  pickles (``LLM.apply_model`` under multiprocessing pickles the whole state dict per sync: ~15 GB at 7B,
  behind an insecure-serialisation flag);
- **per-parameter loading**: :meth:`VLLMEngine.sync_weights` streams the policy's parameters one at a time
  into the model runner's ``load_weights`` (vLLM fuses q/k/v and gate/up itself), so the extra memory is one
  tensor, then **resets the prefix cache** (cached KV was computed with the old weights). The trainer calls it
  after every update and after a resume;
- **sleep mode** (``sleep_mode=True``): :meth:`sleep` before the update frees the weights' and KV cache's GPU
  memory for the optimizer, :meth:`wake_up` brings them back before the weights are synced.
"""

from __future__ import annotations

import os
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
        sleep_mode: bool = False,
        **kwargs: Any,
    ):
        # in-process engine: weight syncs are tensor copies (must be set before vLLM builds the engine)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        vllm = _import_vllm()
        self.logprobs = logprobs  # record each sampled token's log-prob (SamplingParams.logprobs=0)
        self.sleep_mode = sleep_mode
        self.asleep = False
        self._vllm = vllm
        self.model_name = model_name_or_path
        # log-probs of the distribution tokens are sampled from (after temperature), which is what the
        # trainer recomputes; vLLM's default reports the raw model's, and TIS weights would then be wrong
        # whenever the temperature is not 1
        kwargs.setdefault("logprobs_mode", "processed_logprobs")
        self.llm = vllm.LLM(model=model_name_or_path, dtype=dtype, enable_sleep_mode=sleep_mode,
                            gpu_memory_utilization=gpu_memory_utilization, **kwargs)
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
        if self.asleep:
            raise MemtrainError("the vLLM engine is asleep: call wake_up() (and sync the weights) first")
        prompts = [render(self.tokenizer, c) for c in conversations]
        from vllm.inputs import TokensPrompt

        inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
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

    def sleep(self) -> None:
        """Free the engine's GPU memory (weights offloaded, KV cache dropped) while the policy updates."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def sync_weights(self, model: Any) -> None:
        """Push the trained policy's weights into the served model (after an update, after a resume)."""
        if any("lora_" in name for name, _ in model.named_parameters()):
            raise MemtrainError("engine.kind=vllm cannot load LoRA adapter weights in place; train without "
                                "model.lora.enabled, or use engine.kind=hf")
        self.load_weights(model.named_parameters())

    def _runner_model(self) -> Any:
        """The ``nn.Module`` vLLM samples from, in this process (V1 in-process engine)."""
        try:
            worker = self.llm.llm_engine.model_executor.driver_worker
            return getattr(worker, "worker", worker).model_runner.model
        except AttributeError as e:
            raise MemtrainError(
                f"cannot reach vLLM's model in this process ({e}): the engine must run without V1 "
                "multiprocessing (VLLM_ENABLE_V1_MULTIPROCESSING=0, set by memtrain before vLLM starts; "
                "another value in the environment wins) — or reload the engine from a saved checkpoint"
            ) from None

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Load ``(name, tensor)`` pairs (HF parameter names) one parameter at a time, then reset the prefix
        cache. Tensors are moved to the model's device one by one, so the peak extra memory is one tensor."""
        if self.asleep:
            raise MemtrainError("the vLLM engine is asleep: call wake_up() before loading weights")
        target = self._runner_model()
        device = next(target.parameters()).device
        n = 0
        for name, tensor in named_tensors:
            target.load_weights([(name, tensor.detach().to(device))])
            n += 1
        if n == 0:
            raise MemtrainError("no weights to load into the vLLM engine")
        self.llm.reset_prefix_cache()  # cached KV was computed with the old weights
