"""Where training tasks come from, and the order documents are drawn in.

Training reads task sets built by ``memtrain data build`` and nothing else (:mod:`memtrain.tasks.taskset`):
E2E tasks for MemTrain, long-document QA (``split=train``) for downstream task RL. Their manifests are
checked against the run's tokenizer and agent budgets before any model time is spent.

:class:`DocSampler` is stateless: the documents of step s are a pure function of (seed, s), so a resumed
run draws exactly the documents an uninterrupted run would.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memtrain.agent.loop import AgentConfig
from memtrain.errors import MemtrainError
from memtrain.records import MemTask
from memtrain.rl.config import TrainConfig
from memtrain.tasks.taskset import agent_for, check_tokenizer, open_taskset

SEARCH_KIND = "searchqa"  # search-QA task sets: no chunks, so no tokenizer or chunk budget to check


def is_search(tasks: list[MemTask]) -> bool:
    """Whether these are search-QA tasks (for the searching agent) rather than memory-agent documents."""
    return bool(tasks) and tasks[0].kind == "search"


def load_data(cfg: TrainConfig, tokenizer: Any) -> tuple[list[MemTask], list[MemTask], AgentConfig]:
    """(train tasks, held-out tasks, the agent budgets made consistent with the task sets).

    Search-QA task sets (``kind: searchqa``) have no chunks: any tokenizer reads them and ``agent.*`` is not
    checked; the training and held-out sets must both be search QA.
    """
    d = cfg.data
    model = cfg.model.init_from or cfg.model.name
    ts = open_taskset(d.tasks_dir)  # type: ignore[arg-type]
    search = ts.manifest.kind == SEARCH_KIND
    agent = cfg.agent
    if not search:
        check_tokenizer(tokenizer, ts, model, "TrainConfig")
        agent = agent_for(agent, ts, "TrainConfig")
    if d.eval_tasks_dir:
        held_ts = open_taskset(d.eval_tasks_dir)
        if (held_ts.manifest.kind == SEARCH_KIND) != search:
            raise MemtrainError(f"data.tasks_dir {d.tasks_dir} is a {ts.manifest.kind} task set but "
                                f"data.eval_tasks_dir {d.eval_tasks_dir} is {held_ts.manifest.kind}; "
                                "train and hold out tasks of one kind")
        if not search:
            check_tokenizer(tokenizer, held_ts, model, "TrainConfig")
            agent = agent_for(agent, held_ts, "TrainConfig")
        train, held = ts.tasks, held_ts.tasks
    else:
        if len(ts.tasks) <= d.eval_size:
            raise MemtrainError(f"data.tasks_dir {d.tasks_dir} has {len(ts.tasks)} tasks, not more than "
                                f"data.eval_size={d.eval_size}; build more tasks or lower eval_size")
        cut = len(ts.tasks) - d.eval_size
        train, held = ts.tasks[:cut], ts.tasks[cut:]
    if d.max_tasks:
        train = train[: d.max_tasks]
    if not train:
        raise MemtrainError(f"no training tasks in {d.tasks_dir}")
    return train, held, agent


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
