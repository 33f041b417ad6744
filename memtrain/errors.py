"""One exception type for user-facing failures.

The CLI catches :class:`MemtrainError` and prints its message without a traceback, so every error a
user can cause (bad path, bad config, corrupt dump, unreachable server) should be raised as one, with a
message that names the input, what was wrong and what to do.
"""


class MemtrainError(Exception):
    """A failure caused by user input or environment, reported without a traceback."""
