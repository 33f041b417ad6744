"""Seeds derived from named parts, stable across processes and Python versions (unlike ``hash``)."""

from __future__ import annotations

import hashlib
from typing import Any


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any values: the same parts give the same seed everywhere, other parts another."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1
