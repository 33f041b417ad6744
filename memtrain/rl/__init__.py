"""GRPO training of memory agents with the MemTrain objective (DESIGN §3).

Data flows one way: tasks -> :mod:`rollout` (trajectories + IMR answers) -> :mod:`rewards` ->
:mod:`advantages` (Dr. GRPO, broadcast, DAPO filter) -> rows -> :mod:`loss` -> :mod:`trainer` (the recipe).
"""
