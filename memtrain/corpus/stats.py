"""Counters filled while a corpus is read, so a data build can report what it skipped and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from memtrain.errors import MemtrainError

# Skip reasons that lose input (damage), as opposed to filtering it (redirects, short passages, ...): a
# build that counted any of these did not read its source whole, so its manifest is not ``complete``.
LOSSES = {
    "truncated_stream": "the compressed stream is truncated or corrupt; the rest of the file is unread",
    "malformed_xml": "the XML is malformed; the rest of the file is unread",
    "non_utf8": "a line (or file) is not valid UTF-8",
    "bad_record": "a line is not a JSON object",
    "missing_field": "a record lacks a string field named by title_field or text_field",
}


@dataclass
class CorpusStats:
    """What a read produced and skipped; ``as_dict()`` goes into the build's stats.json.

    ``skipped`` maps a reason to a count. Page-level reasons: ``redirect``, ``disambiguation``,
    ``namespace`` (not an article), ``no_text``, ``empty`` (nothing left after cleaning). Record-level:
    ``non_utf8``, ``bad_record`` (not a JSON object), ``missing_field``. File-level: ``truncated_stream``
    (corrupt or cut compressed file), ``malformed_xml``. ``short_passage`` counts passages dropped for
    being under ``min_passage_words``. ``entity_labels`` counts the kept entities by label.

    The record- and file-level reasons are *losses* (:data:`LOSSES`, :meth:`losses`). With ``strict``
    the first loss raises :class:`MemtrainError` instead of being counted; ``where`` (the file being
    read, set by the reader) names it.
    """

    pages: int = 0
    passages: int = 0
    files: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    entity_labels: dict[str, int] = field(default_factory=dict)
    strict: bool = field(default=False, repr=False)
    where: str = field(default="", repr=False)

    def skip(self, reason: str, n: int = 1) -> None:
        if self.strict and reason in LOSSES:
            raise MemtrainError(
                f"{self.where or 'corpus'}: {LOSSES[reason]} ({reason}); strict=true stops at the first loss "
                "of input: repair the input, or set strict=false to build from what can be read (losses are "
                "then counted in manifest.json and the set is not marked complete)"
            )
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def losses(self) -> dict[str, int]:
        """Input lost to damage, by reason (empty: the source was read to its end without loss)."""
        return {k: v for k, v in sorted(self.skipped.items()) if k in LOSSES}

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["strict"], d["where"]
        d["skipped"] = dict(sorted(self.skipped.items()))
        d["entity_labels"] = dict(sorted(self.entity_labels.items()))
        return d
