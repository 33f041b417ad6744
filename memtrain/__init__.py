"""memtrain: self-supervised context-memory training for LLM memory agents."""

__version__ = "0.1.0"
