"""Where training tasks come from, and the order documents are drawn in.

- ``data.kind: e2e``: MemTasks built by ``memtrain data build`` (:func:`memtrain.tasks.build.load_tasks`).
- ``data.kind: hotpotqa``: long-document HotpotQA tasks built on the fly (:mod:`memtrain.tasks.longqa`)
  for MemAgent-style downstream post-training; questions are split so held-out questions share no
  paragraph with training questions.

:class:`DocSampler` is stateless: the documents of step s are a pure function of (seed, s), so a resumed
run draws exactly the documents an uninterrupted run would.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memtrain.config import from_dict
from memtrain.errors import MemtrainError
from memtrain.records import MemTask
from memtrain.rl.config import TrainConfig


def load_data(cfg: TrainConfig, tokenizer: Any) -> tuple[list[MemTask], list[MemTask]]:
    """(train tasks, held-out tasks) for a config."""
    d = cfg.data
    if d.kind == "e2e":
        from memtrain.tasks.build import load_tasks

        tasks = load_tasks(d.tasks_dir)  # type: ignore[arg-type]
        if d.eval_tasks_dir:
            train, held = tasks, load_tasks(d.eval_tasks_dir)
        else:
            if len(tasks) <= d.eval_size:
                raise MemtrainError(f"data.tasks_dir {d.tasks_dir} has {len(tasks)} tasks, not more than "
                                    f"data.eval_size={d.eval_size}; build more tasks or lower eval_size")
            train, held = tasks[: len(tasks) - d.eval_size], tasks[len(tasks) - d.eval_size :]
    else:
        from memtrain.tasks import longqa

        lq = from_dict(longqa.LongQAConfig, {"source": "hotpotqa", "path": d.data_file,
                                             "chunk_tokens": cfg.agent.chunk_tokens, "seed": cfg.seed,
                                             **d.longqa}, "TrainConfig.data.longqa")
        items, pool = longqa.load_source(lq.source, lq.data_path())
        split = longqa.split_questions(items, eval_fraction=lq.eval_fraction or 0.2, seed=d.split_seed)
        train_q = longqa.select_questions(split.train, lq.num_questions, lq.seed)
        held_q = longqa.select_questions(split.eval, d.eval_size, lq.seed)
        train = longqa.build_longqa_tasks(train_q, pool, lq.n_docs, tokenizer, lq.chunk_tokens, lq.seed,
                                          exclude=split.eval_keys)
        held = longqa.build_longqa_tasks(held_q, pool, lq.n_docs, tokenizer, lq.chunk_tokens, lq.seed)
    if d.max_tasks:
        train = train[: d.max_tasks]
    if not train:
        raise MemtrainError(f"no training tasks from data ({d.kind}); check data.tasks_dir / data.data_file")
    return train, held


class DocSampler:
    """Documents of step s (1-based): positions (s−1)·B .. s·B−1 of an endless sequence of seeded epochs."""

    def __init__(self, n_tasks: int, batch_size: int, seed: int):
        self.n, self.b, self.seed = n_tasks, batch_size, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def position(self, step: int) -> int:
        """How many documents steps 1..step consumed (saved in checkpoints)."""
        return step * self.b

    def indices(self, step: int) -> list[int]:
        start = (step - 1) * self.b
        return [int(self._perm(p // self.n)[p % self.n]) for p in range(start, start + self.b)]
