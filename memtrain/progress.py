"""Progress bars: tqdm on a terminal; clean, rare log lines when stderr is a file (nohup, CI, SLURM).

tqdm redraws with carriage returns ten times a second, which turns a log file into one huge line. When the
bar's stream is not a terminal, :func:`progress_bar` refreshes at most once every ``LOG_INTERVAL_S`` and
writes each refresh as its own line.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0
_NOTEBOOK = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)  # tqdm.auto chose a widget


class _LogLines:
    """A stream that turns tqdm's in-place redraws into one line each, dropping the blank clears."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, s: str) -> None:
        line = s.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def quiet_library_bars() -> None:
    """Silence transformers' own bars (loading weights, writing shards) in log files; terminals keep them."""
    if not getattr(sys.stderr, "isatty", lambda: False)():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, with log-friendly output when the stream is not a terminal."""
    stream = kwargs.get("file") or sys.stderr
    is_tty = getattr(stream, "isatty", lambda: False)()
    if not is_tty and not _NOTEBOOK and not kwargs.get("disable"):
        kwargs["file"] = _LogLines(stream)
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("ascii", True)
    return tqdm(iterable, **kwargs)
