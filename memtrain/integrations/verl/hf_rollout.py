"""An HF transformers rollout for veRL (``actor_rollout_ref.rollout.name=hf``): veRL without vLLM or SGLang.

veRL's agent loops talk to their rollout through a token-in/token-out server (``generate(prompt_ids,
sampling_params, request_id) -> TokenOutput``); veRL's rollouts are all GPU engines. This module registers
a fourth through veRL's public hooks (``RolloutReplicaRegistry`` and the rollout-class registry), so the
v1 trainer runs on a CPU box — and on a GPU with plain transformers when vLLM is not installed:

- :class:`HFRolloutServer` — a Ray actor holding an HF causal LM; batches concurrent requests through
  memtrain's :class:`~memtrain.agent.engine.HFEngine` and returns each token's log-probability under the
  **sampling distribution** (logits divided by the temperature, what veRL's actor computes), so rollout
  and actor log-probs agree and TIS is exact;
- :class:`HFReplica` — the :class:`RolloutReplica` that starts one server per replica;
- :class:`HFServerAdapter` — the rollout object living in veRL's actor worker: after every update veRL calls
  its ``update_weights`` with the full (FSDP-gathered) tensors, which it pushes to the server, together
  with the step, which the server stamps on every output (``extra_fields["global_steps"]``).

Top-k / top-p filter the sampling; the reported log-probs are the tempered ones before filtering, as
memtrain's trainer scores them.
Load it with ``VERL_USE_EXTERNAL_MODULES=memtrain.integrations.verl.hf_rollout`` (see :mod:`.cpu`).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import ray
import torch
from verl.workers.rollout.base import _ROLLOUT_REGISTRY, BaseRollout
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry, TokenOutput

from memtrain.agent.engine import Sampling

NAME = "hf"
BATCH_WAIT_S = 0.005  # how long a batch waits for the other requests of the same turn to arrive


def server_name(replica_rank: int) -> str:
    """The Ray actor name of one replica's server (the adapter finds it by name to push weights)."""
    return f"memtrain_hf_rollout_{replica_rank}"


@ray.remote(num_cpus=0)
class HFRolloutServer:
    """One replica's model; ``generate`` is veRL's token-in/token-out call.

    Concurrent requests (veRL runs every session of a batch at once, and a memtrain loop sends one turn's
    conversations together) are queued and generated in batches of equal sampling settings through
    :meth:`memtrain.agent.engine.HFEngine.generate_ids`, the engine memtrain's own trainer samples with.
    """

    def __init__(self, model_path: str, dtype: str, max_model_len: int, batch_size: int = 32):
        from memtrain.agent.engine import HFEngine
        from memtrain.models import load_model

        # Ray gives a zero-CPU actor one thread; veRL's synchronous trainer is idle while this generates
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
        model, tok = load_model(model_path, dtype=str(dtype))  # veRL's "bfloat16"/"float32" names
        self.engine = HFEngine(model, tok, batch_size=batch_size, logprobs=True)
        self.max_model_len = max_model_len
        self.version = 0  # the global step whose weights are loaded (0: the initial model)
        self.queue: list[tuple[tuple, list[int], Sampling, asyncio.Future]] = []
        self.runner: asyncio.Task | None = None
        self.lock = asyncio.Lock()  # a weight load never overlaps a batch

    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str,
                       **kwargs: Any) -> TokenOutput:
        sp = dict(sampling_params)
        room = max(1, self.max_model_len - len(prompt_ids))
        max_tokens = min(int(sp.get("max_tokens") or sp.get("max_new_tokens") or room), room)
        sampling = Sampling(max_new_tokens=max_tokens, temperature=float(sp.get("temperature", 1.0)),
                            top_p=float(sp.get("top_p", 1.0)), top_k=max(int(sp.get("top_k", -1) or -1), 0),
                            seed=sp.get("seed"))
        key = (sampling.max_new_tokens, sampling.temperature, sampling.top_p, sampling.top_k, sampling.seed)
        done = asyncio.get_running_loop().create_future()
        self.queue.append((key, list(prompt_ids), sampling, done))
        if self.runner is None or self.runner.done():
            self.runner = asyncio.create_task(self._drain())
        comp = await done
        return TokenOutput(token_ids=comp.completion_ids,
                           log_probs=comp.logprobs if sp.get("logprobs", True) else None,
                           stop_reason="completed", extra_fields={"global_steps": self.version})

    async def _drain(self) -> None:
        while self.queue:
            await asyncio.sleep(BATCH_WAIT_S)
            key = self.queue[0][0]
            batch = [q for q in self.queue if q[0] == key][: self.engine.batch_size]
            self.queue = [q for q in self.queue if not any(q is b for b in batch)]
            try:
                async with self.lock:
                    prompts, sampling = [b[1] for b in batch], batch[0][2]
                    comps = await asyncio.to_thread(self.engine.generate_ids, prompts, sampling)
            except Exception as e:  # noqa: BLE001 - every waiting request must hear of it
                for *_, done in batch:
                    done.set_exception(e)
                continue
            for (*_, done), comp in zip(batch, comps, strict=True):
                done.set_result(comp)

    async def load_weights(self, named: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        """Copy the trainer's tensors in place; returns how many parameters were updated."""
        async with self.lock:
            state = self.engine.model.state_dict()
            unknown = [k for k in named if k not in state]
            if unknown:
                raise KeyError(f"hf rollout: the trainer sent weights this model lacks: {unknown[:5]}")
            for key, value in named.items():
                state[key].copy_(value.to(state[key].dtype))
            if global_steps is not None:
                self.version = int(global_steps)
        return len(named)

    # lifecycle calls veRL makes on every server; an HF model in process memory has nothing to free
    async def wake_up(self) -> None: ...
    async def sleep(self) -> None: ...
    async def clear_kv_cache(self) -> None: ...
    async def release_kv_cache(self) -> None: ...
    async def resume_kv_cache(self) -> None: ...
    async def abort_all_requests(self, reject_request: bool = False) -> None: ...
    async def resume_generation(self) -> None: ...
    async def start_profile(self, **kwargs: Any) -> None: ...
    async def stop_profile(self) -> None: ...


class HFReplica(RolloutReplica):
    """One :class:`HFRolloutServer` per replica, named so the actor's adapter can reach it."""

    async def launch_servers(self) -> None:
        model = self.model_config
        path = getattr(model, "local_path", None) or model.path
        max_len = self.config.max_model_len or (self.config.prompt_length + self.config.response_length)
        handle = HFRolloutServer.options(name=server_name(self.replica_rank),
                                         max_concurrency=self.max_concurrency).remote(
            path, self.config.dtype, int(max_len))
        self.servers = [handle]
        self._server_handle = handle
        self._server_address = server_name(self.replica_rank)

    def rollout_worker_use_gpu(self) -> bool:
        return False


class HFServerAdapter(BaseRollout):
    """Lives in veRL's actor worker; pushes the updated weights to this rank's replica server."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, *args: Any, **kwargs: Any):
        super().__init__(config, model_config, device_mesh)
        c = self.config
        size = c.tensor_model_parallel_size * c.data_parallel_size * c.pipeline_model_parallel_size
        rank = int(os.environ.get("RANK", 0))
        self.replica_rank, self.is_leader = rank // size, rank % size == 0

    async def resume(self, tags: list[str]) -> None: ...

    async def release(self) -> None: ...

    async def update_weights(self, weights: Any, wire_format: str = "named_tensors", **kwargs: Any) -> None:
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hf rollout: weight wire format {wire_format!r} (use named_tensors)")
        named = {name: t.detach().to("cpu", copy=True) for name, t in weights}  # every rank gathers
        if self.is_leader:
            server = ray.get_actor(server_name(self.replica_rank))
            await server.load_weights.remote(named, kwargs.get("global_steps"))


RolloutReplicaRegistry.register(NAME, lambda: HFReplica)
_ROLLOUT_REGISTRY[(NAME, "async")] = f"{__name__}.HFServerAdapter"
