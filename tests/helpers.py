"""Tiny hand-made E2E tasks, task sets and TrainConfig dicts shared by the tests."""

from __future__ import annotations

from pathlib import Path

import yaml

from memtrain.prompts import E2E_PROBLEM
from memtrain.records import ImrCandidate, MemTask
from memtrain.tasks.taskset import Manifest, write_manifest, write_tasks

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




def write_taskset(folder: Path, tasks: list[MemTask], chunk_tokens: int = 64, max_chunks: int = 3,
                  tokenizer: str = "smollm2") -> Path:
    """``tasks`` as a complete task set (shards + manifest), as `memtrain data build` leaves one."""
    from memtrain.tasks.chunking import resolve_tokenizer, tokenizer_fingerprint

    write_tasks(folder, tasks)
    fp = tokenizer_fingerprint(resolve_tokenizer(tokenizer))
    write_manifest(folder, Manifest(kind=tasks[0].kind if tasks[0].kind == "e2e" else "longqa",
                                    tokenizer=tokenizer, tokenizer_fingerprint=fp, chunk_tokens=chunk_tokens,
                                    max_chunks=max_chunks, seed=0, config_hash="test", config={},
                                    builder_version=0, complete=True, n_tasks=len(tasks),
                                    longest_task_chunks=max(len(t.chunks) for t in tasks)))
    return folder


def tiny_config(tmp_path: Path, **over) -> dict:
    """A complete TrainConfig dict for the tiny model and 6 tasks written as a task set."""
    tasks_dir = tmp_path / "tasks"
    if not tasks_dir.exists():
        write_taskset(tasks_dir, make_tasks(6))
    cfg = {
        "model": {"name": "tiny", "dtype": "fp32"},
        "data": {"tasks_dir": str(tasks_dir), "eval_size": 2},
        "agent": {"memory_tokens": 6, "answer_tokens": 4},
        "engine": {"batch_size": 16},
        "rollout": {"g1": 2, "g2": 2, "temperature": 1.0},
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
