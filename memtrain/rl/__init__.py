"""GRPO training of memory agents with the MemTrain objective (DESIGN §3).

Data flows one way: tasks -> :mod:`rollout` (trajectories + IMR answers) -> :mod:`rewards` ->
:mod:`advantages` (Dr. GRPO, broadcast, DAPO filter) -> :mod:`rows` -> :mod:`loss` (with the frozen
:mod:`reference`) -> :mod:`trainer` (the PPO update, logs). The recipe that composes them is
:mod:`memtrain.recipes.train`.
"""
