"""Say which torch is installed and where it came from: the line ``scripts/install.sh`` ends with.

    python scripts/which_torch.py [PIP_REPORT.json]

PIP_REPORT is what ``pip install --report`` wrote when torch was installed: it names the file or index URL
pip took the wheel from. Without one (or when pip kept a torch already installed), the line says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import unquote


def origin(report: Path | None) -> str:
    """Where pip took torch from, per its install report; '' when the report installed no torch."""
    if report is None or not report.is_file():
        return ""
    try:
        items = json.loads(report.read_text(encoding="utf-8")).get("install", [])
    except (OSError, ValueError):
        return ""
    for item in items:
        if item.get("metadata", {}).get("name", "").lower() == "torch":
            return unquote(item.get("download_info", {}).get("url", "")) or "an unnamed source"
    return ""


def describe(report: Path | None = None) -> str:
    import torch

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    src = origin(report)
    where = f"installed from {src}" if src else "already installed (pip kept it)"
    line = f"torch {torch.__version__} ({build}) at {Path(torch.__file__).parent}, {where}"
    if torch.version.cuda:
        line += ("\n  (not the CPU build: pip found no torch==2.13.0+cpu; for it, re-run with "
                 "TORCH_INDEX_URL set to PyTorch's CPU wheel index)")
    return line


if __name__ == "__main__":
    print(describe(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
