"""The memory agent: one loop (``loop.py``) over a small generation interface (``engine.py``)."""
