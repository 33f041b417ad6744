"""The GPU check script runs its checks end to end (here on CPU at tiny sizes), so it is ready for a GPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def test_gpu_check_smoke_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    info = json.loads((tmp_path / "gpu_check_smoke.json").read_text())
    p = info["precision"]
    assert p["params_on_device"] and p["optimizer_state_on_device"] and p["param_dtypes"] == ["torch.float32"]
    from memtrain.models import cpu_has_bf16

    assert p["autocast_logits_dtype"] == ("torch.bfloat16" if cpu_has_bf16() else "torch.float32")
    assert p["lr_1e-6_changed_fraction_of_touched"] >= 0.99
    assert info["learnable"]["last3"] > info["learnable"]["first3"] + 0.2
    t = info["throughput"]
    assert t["update"]["update/optimizer_steps"] == 1 and t["rollout_new_tokens_per_s"] > 0
    import torch

    if not torch.cuda.is_available():  # without a GPU the real check says so and exits 2
        assert mod.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
