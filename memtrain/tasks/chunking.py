"""Split text into chunks of at most ``chunk_tokens`` tokens of a real tokenizer.

Chunks are cut at token boundaries and decoded back to text; we prefer to end a chunk at a paragraph or
sentence break inside its last 20% so that the memory agent sees whole sentences where possible. The
budget is a hard guarantee: re-encoding any returned chunk yields at most ``chunk_tokens`` tokens.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from memtrain.errors import MemtrainError

_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of the vocabulary (token -> id, added tokens included): equal for the same tokenizer
    loaded any way (HF or the Rust :class:`FastTokenizer`), different for another model family's."""
    vocab = tokenizer.get_vocab()
    text = "\n".join(f"{tok}\t{i}" for tok, i in sorted(vocab.items(), key=lambda kv: kv[1]))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def chunk_text(tokenizer: Any, text: str, chunk_tokens: int) -> list[str]:
    """Token-bounded chunks covering all of ``text`` in order (only whitespace at cut points is dropped)."""
    return chunk_text_counted(tokenizer, text, chunk_tokens)[0]


def chunk_text_counted(tokenizer: Any, text: str, chunk_tokens: int) -> tuple[list[str], list[int]]:
    """:func:`chunk_text` and the token count of every chunk (each chunk is re-encoded to check the budget
    anyway, so the counts come free; a caller that needs them need not tokenize the chunks again)."""
    if chunk_tokens <= 0:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    ends = [e for _, e in offsets]
    chunks: list[str] = []
    counts: list[int] = []
    pos, tok_i = 0, 0
    end = len(text.rstrip())
    # until the text is used up, not the tokens: offsets need not cover every character (SmolLM2's give the
    # "\x08" of "\U00040000\x08" no span at all), and a loop over tokens silently dropped such a tail
    while pos < end:
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
        while piece and (n := count_tokens(tokenizer, piece)) > chunk_tokens:
            if len(piece) == 1:  # cannot shrink further (cutting back again would loop forever)
                raise MemtrainError(
                    f"chunk_tokens={chunk_tokens} is less than the {n} tokens of the single character "
                    f"{piece!r}; use a larger chunk_tokens"
                )
            cut = pos + max(1, int((cut - pos) * 0.95))
            piece = text[pos:cut].strip()
        if piece:
            chunks.append(piece)
            counts.append(n)
        pos = cut
        while tok_i < len(offsets) and ends[tok_i] <= pos:
            tok_i += 1
    return chunks, counts


class FastTokenizer:
    """The slice of the HF tokenizer interface that chunking uses, called on the Rust tokenizer directly.

    Loading it skips importing transformers and torch (which ``AutoTokenizer`` needs), which matters when
    every build worker loads its own. Ids and offsets are the Rust tokenizer's,
    i.e. exactly what the HF fast tokenizer returns with ``add_special_tokens=False``.
    """

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        self.path = str(path)
        self._tok = Tokenizer.from_file(self.path)

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def __call__(
        self, text: str | list[str], add_special_tokens: bool = False, return_offsets_mapping: bool = False
    ) -> dict[str, Any]:
        if isinstance(text, list):
            encs = self._tok.encode_batch(text, add_special_tokens=add_special_tokens)
            out: dict[str, Any] = {"input_ids": [e.ids for e in encs]}
            if return_offsets_mapping:
                out["offset_mapping"] = [e.offsets for e in encs]
            return out
        enc = self._tok.encode(text, add_special_tokens=add_special_tokens)
        out = {"input_ids": enc.ids}
        if return_offsets_mapping:
            out["offset_mapping"] = enc.offsets
        return out


def resolve_tokenizer(name: str) -> Any:
    """The chunking tokenizer; fails clearly (and fast) on a local path that does not exist.

    A folder with a ``tokenizer.json`` (including the embedded default's cache) is read with
    :class:`FastTokenizer`; anything else goes through :func:`memtrain.models.load_tokenizer`.
    """
    from memtrain.models import EMBEDDED_ALIASES, embedded_model_cache, embedded_model_dir

    path = Path(name).expanduser()
    if name.lower() in EMBEDDED_ALIASES or name == "tiny":  # the tiny test model uses SmolLM2's tokenizer
        path = embedded_model_cache()
        if not (path / "tokenizer.json").is_file():  # first use: convert the embedded model into the cache
            path = embedded_model_dir()
    elif not path.exists():
        looks_like_path = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name
        if looks_like_path:
            raise MemtrainError(
                f"tokenizer path {name!r} does not exist; pass a folder with tokenizer files, a Hugging Face "
                "model id, or 'smollm2' (the embedded default)"
            )
    tok_json = path / "tokenizer.json" if path.is_dir() else None
    if tok_json is not None and tok_json.is_file():
        try:
            return FastTokenizer(tok_json)
        except Exception as e:  # a corrupt file is a user-input problem; report it without a traceback
            raise MemtrainError(f"cannot read tokenizer {tok_json}: {e}") from None
    from memtrain.models import load_tokenizer

    return load_tokenizer(name)
