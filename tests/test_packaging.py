"""The wheel users install carries every preset (non-editable installs found none: package-data listed
only ``configs/*.yaml``, and every preset lives in ``configs/<recipe>/``)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_every_preset(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("memtrain-*.whl"))
    packed = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".yaml")}
    package = REPO / "memtrain"
    presets = {f"memtrain/{p.relative_to(package)}" for p in (package / "configs").rglob("*.yaml")}
    assert presets and presets <= packed, sorted(presets - packed)
