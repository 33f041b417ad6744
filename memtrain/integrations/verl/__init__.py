"""memtrain on veRL (0.9.x, the v1 trainer): the same per-trajectory loop, prompts, IMR rule and rewards.

Modules (each imports verl, so import them only where verl is installed):

- :mod:`~memtrain.integrations.verl.agent_loop` — ``memtrain_memtrain`` and ``memtrain_memagent`` agent
  loops: one :func:`memtrain.rl.rollout.rollout_trajectory` per veRL session, over veRL's server manager;
- :mod:`~memtrain.integrations.verl.worker` — the worker/manager pair that gives each IMR prompt its own
  GRPO group (stock v1 gives IMR answers the E2E advantage);
- :mod:`~memtrain.integrations.verl.reward` — ``compute_score`` for rows scored outside the loop;
- :mod:`~memtrain.integrations.verl.export` — task sets to veRL parquet, and ``memtrain verl-config``, which
  writes the data, the agent-loop registry and the launch command for a memtrain train preset.

See ``docs/verl.md`` for a cluster run, and what was run here.
"""
