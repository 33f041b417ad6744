"""Tiny hand-made E2E tasks and TrainConfig dicts for the rl tests (imported by tests and conftest)."""

from __future__ import annotations

from pathlib import Path

import yaml

from memtrain.io import write_jsonl
from memtrain.prompts import E2E_PROBLEM
from memtrain.records import ImrCandidate, MemTask

CHUNKS = [
    "Lyon is a city in France. Lyon hosts a famous festival of lights every December.",
    "The river Rhone flows through the city. Its old town is a world heritage site.",
    "The [MASK] is the capital. Many visitors come from Lyon to see the [MASK] each year.",
]


def make_tasks(n: int = 4) -> list[MemTask]:
    return [
        MemTask(id=f"t{i}", kind="e2e", problem=E2E_PROBLEM, chunks=list(CHUNKS), answers=["Paris"],
                imr=[[ImrCandidate("Lyon", ["Lyon"])], [ImrCandidate("Rhone", ["Rhone"])], []])
        for i in range(n)
    ]




def tiny_config(tmp_path: Path, **over) -> dict:
    """A complete TrainConfig dict for the tiny model and 4 tasks written as a build folder."""
    tasks_dir = tmp_path / "tasks"
    if not tasks_dir.exists():
        write_jsonl(tasks_dir / "shard-00000.jsonl", [t.to_dict() for t in make_tasks(6)])
    cfg = {
        "model": {"name": "tiny", "dtype": "fp32"},
        "data": {"kind": "e2e", "tasks_dir": str(tasks_dir), "eval_size": 2},
        "agent": {"chunk_tokens": 64, "memory_tokens": 6, "answer_tokens": 4, "max_chunks": 3},
        "rollout": {"g1": 2, "g2": 2, "temperature": 1.0, "engine_batch_size": 16},
        "loss": {"kl_coef": 0.01, "dapo_filter": False},
        "optim": {"lr": 1e-3, "warmup_steps": 1},
        "log": {"tensorboard": True, "progress": False},
        "steps": 3, "batch_size": 2, "micro_batch_size": 4, "bf16": False, "gradient_checkpointing": False,
        "seed": 7, "out_dir": str(tmp_path / "run"), "save_every": 1, "keep_checkpoints": 0, "eval_docs": 2,
    }
    for k, v in over.items():
        node = cfg
        *head, last = k.split(".")
        for h in head:
            node = node[h]
        node[last] = v
    return cfg


def write_config(tmp_path: Path, **over) -> Path:
    p = tmp_path / "train.yaml"
    p.write_text(yaml.safe_dump(tiny_config(tmp_path, **over)))
    return p
