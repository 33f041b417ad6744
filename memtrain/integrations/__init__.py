"""Bridges to external training engines. Optional: nothing in memtrain's core imports them.

- :mod:`memtrain.integrations.verl` — veRL agent loops, IMR-group worker, reward function, parquet export
  and the config writer (``pip install -e ".[verl]"``).
"""
