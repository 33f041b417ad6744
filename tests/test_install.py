"""What a new user meets first: the install script says which torch it installed and from where, and a
missing corpus dependency (gensim, for the embedded corpus) is the first thing `memtrain data build` says,
before any model work."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import torch

from memtrain.cli import main

REPO = Path(__file__).resolve().parents[1]


def _which_torch():
    spec = importlib.util.spec_from_file_location("which_torch", REPO / "scripts" / "which_torch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_install_script_pins_the_cpu_torch_and_ends_saying_which_torch_it_got():
    script = (REPO / "scripts" / "install.sh").read_text(encoding="utf-8")
    pin = re.search(r'"torch==([0-9.]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8")).group(1)
    assert f"TORCH_VERSION={pin}" in script and '"torch==${TORCH_VERSION}+cpu"' in script
    lines = [x for x in script.splitlines() if x.strip() and not x.startswith("#")]
    torch_step = next(i for i, x in enumerate(lines) if "torch==${TORCH_VERSION}+cpu" in x)
    memtrain_step = next(i for i, x in enumerate(lines) if '-e ".[' in x)
    assert torch_step < memtrain_step  # the pinned CPU build is in place before memtrain's deps resolve
    assert "scripts/which_torch.py" in lines[-2]  # the torch line comes last, after every other install


def test_which_torch_names_the_build_the_folder_and_the_wheel_pip_took(tmp_path):
    report = tmp_path / "report.json"
    url = "file:///opt/wheels/torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    report.write_text(json.dumps({"install": [
        {"metadata": {"name": "filelock"}, "download_info": {"url": "file:///x/filelock.whl"}},
        {"metadata": {"name": "torch", "version": "2.13.0+cpu"}, "download_info": {"url": url}}]}))
    mod = _which_torch()
    line = mod.describe(report)
    assert line.startswith(f"torch {torch.__version__} (")
    assert str(Path(torch.__file__).parent) in line
    assert "installed from file:///opt/wheels/torch-2.13.0+cpu-cp311" in line
    assert ("CPU build" in line) == (torch.version.cuda is None)
    kept = tmp_path / "kept.json"
    kept.write_text(json.dumps({"install": []}))
    assert mod.describe(kept).endswith("already installed (pip kept it)")
    assert mod.describe(None).endswith("already installed (pip kept it)")


def test_missing_gensim_is_the_first_thing_data_build_reports(tmp_path, monkeypatch, capsys):
    from memtrain.recipes import build_tasks

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gensim" else real_find_spec(name, *a))
    model_work = []
    monkeypatch.setattr(build_tasks, "resolve_tokenizer", lambda name: model_work.append(name))
    monkeypatch.setitem(sys.modules, "gensim", None)
    assert main(["data", "build", "cpu", f"out={tmp_path / 'tasks'}"]) == 2
    err = capsys.readouterr().err
    assert "gensim" in err and "pip install 'gensim>=4.3'" in err and "Traceback" not in err
    assert model_work == []  # the error came before the tokenizer (the GGUF conversion on a first run)
    assert not (tmp_path / "tasks").exists()
