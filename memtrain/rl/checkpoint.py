"""Atomic, resumable checkpoints: ``out_dir/checkpoint-<step>/``.

A checkpoint holds the model (``save_pretrained`` safetensors; adapter only for LoRA), and in
``trainer_state.pt`` the optimizer and scheduler states, the RNG states (python, numpy, torch, cuda), the
data-sampler position and the step — tensors and plain containers only, loaded with
``torch.load(weights_only=True)``: a checkpoint cannot run code on resume (a pickled object is refused).
It is written into a hidden temp folder and renamed into place, so a folder named ``checkpoint-<step>`` is
always complete; a run killed mid-save leaves only a temp folder, which the next save or resume ignores.
Resuming loads exactly these states, so the continuation is identical to an uninterrupted run.
"""

from __future__ import annotations

import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memtrain.errors import MemtrainError

STATE_FILE = "trainer_state.pt"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors, lists and numbers (what ``weights_only`` loading accepts)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(mt), gauss],
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                       float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``out_dir``, oldest first."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1][1] if ckpts else None


def save_checkpoint(out_dir: str | Path, step: int, model: Any, optimizer: torch.optim.Optimizer,
                    scheduler: Any, extra: dict[str, Any], keep: int = 0) -> Path:
    """Write ``checkpoint-<step>`` atomically; keep only the ``keep`` newest (0 = keep all)."""
    out = Path(out_dir)
    final = out / f"checkpoint-{step}"
    tmp = out / f".tmp-checkpoint-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": rng_state(), **extra}
    torch.save(state, tmp / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if keep > 0:
        for _, old in list_checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_weights(model: Any, folder: Path) -> None:
    """Load ``save_pretrained`` weights from ``folder`` into ``model`` in place (full or LoRA adapter)."""
    from safetensors.torch import load_file

    if is_peft(model):
        from peft import set_peft_model_state_dict

        f = folder / "adapter_model.safetensors"
        if not f.is_file():
            raise MemtrainError(f"{folder}: no adapter_model.safetensors; was this run trained without LoRA?")
        set_peft_model_state_dict(model, load_file(f))
        return
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise MemtrainError(f"{folder}: no model*.safetensors; the checkpoint is incomplete")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(f))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise MemtrainError(f"{folder}: weights do not match the model (missing {sorted(missing)[:5]}, "
                            f"unexpected {sorted(unexpected)[:5]}); is model.name the same as in that run?")


def load_checkpoint(folder: Path, model: Any, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states; returns the saved state dict (step, sampler...)."""
    load_weights(model, folder)
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise MemtrainError(
            f"{folder / STATE_FILE} holds objects other than tensors and plain containers; refusing to load "
            "it (unpickling could run code). Checkpoints written by memtrain never do; was this file "
            f"replaced, or written by a memtrain older than safe checkpoints? ({str(e).splitlines()[0]})"
        ) from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state
