"""Process memory probes shared by the benchmarks (Linux ``/proc``; other systems report None)."""

from __future__ import annotations

from pathlib import Path


def reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) so that loading the model does not dominate it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def status_mib(field: str = "VmHWM") -> float | None:
    """A memory field of ``/proc/self/status`` in MiB: VmHWM (peak RSS) or VmRSS (current)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
