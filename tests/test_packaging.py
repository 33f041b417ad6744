"""The wheel users install works on its own: it carries every preset (non-editable installs found none:
package-data listed only ``configs/*.yaml``, and every preset lives in ``configs/<recipe>/``), and installed
into a fresh virtual environment, it builds a task set from outside the checkout.

The wheel is built from a copy of the source (so the checkout's ``build/`` and ``*.egg-info`` are never
written by tests running side by side), once per module. The fresh environment takes memtrain from the
wheel alone; its dependencies (torch, transformers, gensim, ...) come from the project's environment
through a path file, which adds that folder to ``sys.path`` without running its own path files, so the
checkout's editable install of memtrain stays invisible there (the test checks it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.packaging


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools (the build backend) is not installed: cannot build the wheel offline")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "memtrain", src / "memtrain", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(dist), str(src)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return next(dist.glob("memtrain-*.whl"))


def test_the_wheel_carries_every_preset(wheel):
    packed = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".yaml")}
    package = REPO / "memtrain"
    presets = {f"memtrain/{p.relative_to(package)}" for p in (package / "configs").rglob("*.yaml")}
    assert presets and presets <= packed, sorted(presets - packed)


def fresh_venv(folder: Path, wheel: Path) -> Path:
    """A new virtual environment with ``wheel`` installed and the project's dependencies visible; returns
    its python."""
    import venv

    venv.EnvBuilder(with_pip=False).create(folder)
    python = folder / "bin" / "python"
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                          "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    if res.returncode != 0 and "no such option: --python" in res.stderr:
        pytest.skip("this pip cannot install into another environment (pip >= 22.3 has --python)")
    assert res.returncode == 0, res.stderr[-2000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))  # the project's, in order
    (Path(site) / "project_deps.pth").write_text("".join(f"{d}\n" for d in deps), encoding="utf-8")
    return python


def test_the_installed_wheel_builds_a_task_set_outside_the_checkout(wheel, tmp_path):
    python = fresh_venv(tmp_path / "venv", wheel)
    work = tmp_path / "elsewhere"  # not the checkout: nothing there to import memtrain from by accident
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    where = subprocess.run([str(python), "-c", "import memtrain; print(memtrain.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where.stdout  # the wheel's copy

    out = work / "tasks"
    script = tmp_path / "venv" / "bin" / "memtrain"  # the wheel's console script, run by the fresh python
    res = subprocess.run([str(python), str(script), "data", "build", "cpu", f"out={out}", "num_tasks=12",
                          "progress=false"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["complete"] and manifest["n_tasks"] > 0
    assert manifest["config"]["e2e"]["chunk_tokens"] == 384  # the cpu preset, read from the wheel
    assert "built " in res.stdout and "e2e tasks" in res.stdout
