"""Split text into chunks of at most ``chunk_tokens`` tokens of a real tokenizer.

Chunks are cut at token boundaries and decoded back to text; we prefer to end a chunk at a paragraph or
sentence break inside its last 20% so that the memory agent sees whole sentences where possible. The
budget is a hard guarantee: re-encoding any returned chunk yields at most ``chunk_tokens`` tokens.
"""

from __future__ import annotations

from typing import Any

_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def chunk_text(tokenizer: Any, text: str, chunk_tokens: int) -> list[str]:
    """Token-bounded chunks covering all of ``text`` in order (only whitespace at cut points is dropped)."""
    if chunk_tokens <= 0:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    ends = [e for _, e in offsets]
    chunks: list[str] = []
    pos, tok_i = 0, 0
    while tok_i < len(offsets):
        last = min(tok_i + chunk_tokens, len(offsets)) - 1
        cut = len(text) if last == len(offsets) - 1 else ends[last]
        if cut < len(text):
            window = text[pos:cut]
            for brk in _BREAKS:
                at = window.rfind(brk, int(len(window) * 0.8))
                if at > 0:
                    cut = pos + at + len(brk)
                    break
        piece = text[pos:cut].strip()
        # re-tokenising a substring can merge differently; move the cut back until the budget holds
        while piece and count_tokens(tokenizer, piece) > chunk_tokens:
            cut = pos + max(1, int((cut - pos) * 0.95))
            piece = text[pos:cut].strip()
        if piece:
            chunks.append(piece)
        pos = cut
        while tok_i < len(offsets) and ends[tok_i] <= pos:
            tok_i += 1
    return chunks
