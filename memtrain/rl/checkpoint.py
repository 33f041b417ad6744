"""Atomic, resumable checkpoints: ``out_dir/checkpoint-<step>/``.

A checkpoint holds the model (``save_pretrained`` safetensors; adapter only for LoRA), and in
``trainer_state.pt`` the optimizer and scheduler states, the RNG states (python, numpy, torch, cuda), the
data-sampler position and the step — tensors and plain containers only, loaded with
``torch.load(weights_only=True)``: a checkpoint cannot run code on resume (a pickled object is refused).
It is written into a hidden temp folder and renamed into place, so a folder named ``checkpoint-<step>`` is
always complete; a run killed mid-save leaves only a temp folder, which the next save or resume ignores.
Resuming loads exactly these states, so the continuation is identical to an uninterrupted run.

Disk: :func:`checkpoint_bytes` and :func:`weights_bytes` say what a checkpoint and the final model will
take (the weights ``save_pretrained`` writes, and AdamW's two moments per trainable weight even before the
first step has made them); :func:`ensure_space` refuses a write the file system has no room for, before
anything is written, so a full disk never leaves a half-written checkpoint behind.
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


def tensor_bytes(tensors: Any) -> int:
    """Bytes of ``tensors``, each storage once (tied weights are saved once)."""
    seen, total = set(), 0
    for t in tensors:
        key = (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def weights_bytes(model: Any, adapter_only: bool = False) -> int:
    """What ``save_pretrained`` writes for ``model``: every weight, or the trainable (LoRA) ones alone."""
    if adapter_only:
        return tensor_bytes(p for p in model.parameters() if p.requires_grad)
    return tensor_bytes(model.state_dict().values())


def checkpoint_bytes(model: Any, optimizer: torch.optim.Optimizer) -> tuple[int, int]:
    """(weights, optimizer state) bytes of one checkpoint of ``model``: the adapter alone for LoRA; AdamW
    keeps two moments per trainable weight, counted before the first step has made them."""
    states = [v for st in optimizer.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    trainable = tensor_bytes(p for g in optimizer.param_groups for p in g["params"] if p.requires_grad)
    opt = tensor_bytes(states) if states else 2 * trainable
    return weights_bytes(model, adapter_only=is_peft(model)), opt


def free_bytes(folder: str | Path) -> int:
    """Free bytes on the file system that holds ``folder`` (or its nearest existing parent)."""
    p = Path(folder).resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def human(n: float) -> str:
    """Bytes as a short decimal size: 1.62 GB, 37.8 MB."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} GB" if unit == "GB" else f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def ensure_space(folder: str | Path, need: int, what: str, advice: str = "") -> int:
    """Raise a :class:`MemtrainError` naming ``what`` when ``folder``'s file system has less than ``need``
    bytes (+5% and 100 MB for logs and metadata) free; returns the free bytes."""
    free = free_bytes(folder)
    if free < need * 1.05 + 100e6:
        raise MemtrainError(f"{what} needs about {human(need)} on disk, but {folder} has only {human(free)} "
                            f"free; free some space or set out_dir on a larger disk{advice}")
    return free


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
    """Write ``checkpoint-<step>`` atomically; keep only the ``keep`` newest (0 = keep all). A file system
    without room for it is refused before anything is written (:func:`ensure_space`)."""
    out = Path(out_dir)
    last = latest_checkpoint(out)
    kept = f"; the last good checkpoint {last} is intact" if last else ""
    ensure_space(out, sum(checkpoint_bytes(model, optimizer)), f"checkpoint-{step}", kept)
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
