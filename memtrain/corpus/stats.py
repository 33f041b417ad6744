"""Counters filled while a corpus is read, so a data build can report what it skipped and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class CorpusStats:
    """What a read produced and skipped; ``as_dict()`` goes into the build's stats.json.

    ``skipped`` maps a reason to a count. Page-level reasons: ``redirect``, ``disambiguation``,
    ``namespace`` (not an article), ``no_text``, ``empty`` (nothing left after cleaning). Record-level:
    ``non_utf8``, ``bad_record`` (not a JSON object), ``missing_field``. File-level: ``truncated_stream``
    (corrupt or cut compressed file), ``malformed_xml``. ``short_passage`` counts passages dropped for
    being under ``min_passage_words``. ``entity_labels`` counts the kept entities by label.
    """

    pages: int = 0
    passages: int = 0
    files: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    entity_labels: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skipped"] = dict(sorted(self.skipped.items()))
        d["entity_labels"] = dict(sorted(self.entity_labels.items()))
        return d
