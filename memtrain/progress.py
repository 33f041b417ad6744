"""Progress bars: tqdm on a terminal; clean, rare log lines when stderr is a file (nohup, CI, SLURM).

tqdm redraws with carriage returns ten times a second, which turns a log file into one huge line. When the
bar's stream is not a terminal, :func:`progress_bar` refreshes at most once every ``LOG_INTERVAL_S`` and
writes each refresh as its own line.

Every bar ends at what was actually done. A total announced up front can be an upper bound (a search
episode ends before its last allowed turn, a data build drops pivots, a trajectory may get no IMR probe);
a bar that finishes normally below its total closes at its real count (``15/15``, not ``15/18``), while a
bar closed by an exception keeps the short count, which then says where the work stopped. In a log file a
bar always writes its closing line, even a transient (``leave=False``) one, whose last refresh would
otherwise be the last word (``24/40`` of work that finished).
"""

from __future__ import annotations

import re
import sys
from typing import IO, Any

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0
_CURSOR_MOVES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # how nested bars (position > 0) redraw on a terminal
_NOTEBOOK = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)  # tqdm.auto chose a widget


class _LogLines:
    """A stream that turns tqdm's in-place redraws into one line each, dropping the blank clears and the
    cursor moves of nested bars."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, s: str) -> None:
        line = _CURSOR_MOVES.sub("", s.replace("\r", "")).rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def quiet_library_bars() -> None:
    """Silence transformers' own bars (loading weights, writing shards) in log files; terminals keep them."""
    if not getattr(sys.stderr, "isatty", lambda: False)():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


class _Bar(tqdm):
    """A tqdm bar that closes at its real count when the work ended normally below the announced total."""

    def close(self) -> None:
        ended_normally = sys.exc_info()[0] is None  # set while an exception unwinds through finally/with
        if not self.disable and ended_normally and self.total is not None and self.n < self.total:
            self.total = self.n
        super().close()


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, with log-friendly output when the stream is not a terminal, closing
    at its real count (module docstring)."""
    stream = kwargs.get("file") or sys.stderr
    is_tty = getattr(stream, "isatty", lambda: False)()
    if not is_tty and not _NOTEBOOK and not kwargs.get("disable"):
        kwargs["file"] = _LogLines(stream)
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("ascii", True)
        kwargs["leave"] = True  # a log line is never erased: the closing count is always written
    return _Bar(iterable, **kwargs)
