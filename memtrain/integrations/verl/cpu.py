"""veRL on a CPU box: a ``cpu`` platform for veRL's platform registry (verl 0.9.1).

veRL ships no CPU platform; this module adds one through its public hook (``PlatformRegistry``), so the
whole v1 trainer — Ray, FSDP2 actor and reference, agent loops, TransferQueue — runs on a laptop with the
``hf`` rollout of :mod:`memtrain.integrations.verl.hf_rollout`. Enable it in **every** Ray process with::

    VERL_USE_EXTERNAL_MODULES=memtrain.integrations.verl.cpu,memtrain.integrations.verl.hf_rollout \\
    VERL_PLATFORM=cpu VERL_ENGINE_DEVICE=cuda python -m verl.trainer.main_ppo ...

(``memtrain verl-config PRESET device=cpu`` writes exactly that, with the CPU overrides, into ``run.sh``.)
``VERL_ENGINE_DEVICE=cuda`` is veRL's own switch that picks its FSDP engine; on this platform that engine
places every tensor on ``torch.device("cpu")``.

Besides the platform, three narrow patches run only when ``VERL_PLATFORM=cpu`` (each names what it fixes):

- the process-group backend: veRL builds ``"cpu:gloo,{device}:{backend}"``, which is ``cpu:gloo,cpu:gloo``
  (invalid) on CPU;
- the reference model's FSDP2 ``CPUOffloadPolicy(pin_memory=True)``: pinning needs an accelerator, and the
  weights already live in CPU memory, so the policy is built unpinned (``use_kl_loss=true`` then works);
- ``trl``: veRL's value-head monkey patch imports a class removed in trl 1.x (only critics need it).

What this depends on in veRL is listed in ``docs/verl.md`` ("What an upgrade can break").
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry


class _CPUDeviceModule:
    """``torch.cpu`` plus the accelerator memory API veRL's logging calls (all zeros: no device memory)."""

    _ZERO_DICT = {"memory_stats", "memory_snapshot"}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # no protocol attributes (ABCs probe __isabstractmethod__)
            raise AttributeError(name)
        if hasattr(torch.cpu, name):
            return getattr(torch.cpu, name)
        if name == "get_device_name":
            return lambda *args, **kwargs: "CPU"
        if name == "mem_get_info":
            return lambda *args, **kwargs: (0, 0)
        if name in self._ZERO_DICT:
            return lambda *args, **kwargs: {}
        return lambda *args, **kwargs: 0  # memory_allocated, max_memory_reserved, reset_peak_..., ...


@PlatformRegistry.register(platform="cpu")
class CPUPlatform(PlatformBase):
    """One logical "device" per worker process: the CPU. Ray counts it as a logical GPU resource
    (``ray_kwargs.ray_init.num_gpus``), which is how veRL's resource pools place actor workers."""

    _device_module = _CPUDeviceModule()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> Any:
        return self._device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return True

    def current_device(self) -> torch.device:  # veRL passes it to .to()/device=; an int means an accelerator
        return torch.device("cpu")

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        pass

    def synchronize(self, device_index: int | None = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> None:
        return None


def _patch_for_cpu() -> None:
    # Order matters: veRL modules bind these names at import, and this runs inside ``import verl`` before
    # any of them (the FSDP engine, the model monkey patches) is imported.
    import verl.utils.distributed as distributed
    import verl.utils.fsdp_utils as fsdp_utils
    import verl.utils.import_utils as import_utils

    import_utils.is_trl_available = lambda: False

    init_group = distributed.initialize_global_process_group_ray

    def init_group_on_cpu(timeout_second: int | None = None, backend: str | None = None) -> Any:
        return init_group(timeout_second=timeout_second, backend=backend or "cpu:gloo")

    distributed.initialize_global_process_group_ray = init_group_on_cpu

    offload = fsdp_utils.CPUOffloadPolicy
    if offload is not None:
        def unpinned(pin_memory: bool = True, **kwargs: Any) -> Any:
            return offload(pin_memory=False, **kwargs)

        fsdp_utils.CPUOffloadPolicy = unpinned


if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
    _patch_for_cpu()
