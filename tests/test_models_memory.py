"""memtrain.models.bound_cpu_memory / release_cpu_memory: CPU kernel caches bounded, user settings kept."""

from __future__ import annotations

import os

import pytest

from memtrain import models


def test_bounds_the_cpu_kernel_caches_unless_the_user_set_them(monkeypatch):
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "7")
    assert models.bound_cpu_memory() == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": models.CPU_KERNEL_CACHE}
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(models.CPU_KERNEL_CACHE)
    assert os.environ["LRU_CACHE_CAPACITY"] == "7"  # the user's value is kept
    monkeypatch.delenv("LRU_CACHE_CAPACITY")
    assert models.bound_cpu_memory() == {"LRU_CACHE_CAPACITY": models.CPU_KERNEL_CACHE}
    assert models.bound_cpu_memory() == {}


def test_release_cpu_memory_is_false_without_malloc_trim(monkeypatch):
    monkeypatch.setattr(models, "_malloc_trim", lambda: None)  # not glibc (macOS, musl)
    assert models.release_cpu_memory() is False


def test_hf_engine_returns_the_heap_after_every_cpu_call(monkeypatch):
    import memtrain.agent.engine as engine_mod

    calls = []
    monkeypatch.setattr(engine_mod, "release_cpu_memory", lambda: calls.append(1) or True)
    model, tok = models.tiny_model()
    engine = engine_mod.HFEngine(model, tok, batch_size=1)
    conv = [{"role": "user", "content": "hello"}]
    engine.generate([conv, conv], engine_mod.Sampling(max_new_tokens=2))  # two micro-batches, one call
    engine.generate([conv], engine_mod.Sampling(max_new_tokens=2))
    assert len(calls) == 2


def test_load_model_on_cpu_bounds_the_caches_before_loading(monkeypatch):
    """The caches read their variables at the first matmul, so load_model sets them before loading."""
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    seen = []

    def no_tokenizer(name):
        seen.append(os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"))
        raise models.MemtrainError("stop here")

    monkeypatch.setattr(models, "load_tokenizer", no_tokenizer)
    with pytest.raises(models.MemtrainError, match="stop here"):
        models.load_model("some-model", device="cpu")
    assert seen == [str(models.CPU_KERNEL_CACHE)]
