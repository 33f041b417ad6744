"""Plain records that flow between stages: corpus -> tasks -> rollouts.

Records are small dataclasses with ``to_dict``/``from_dict`` so they round-trip through JSONL and Parquet
and can be read by HF ``datasets`` and veRL without memtrain installed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Entity:
    """An entity mention inside a passage's text.

    ``start``/``end`` are character offsets into ``Passage.text``. ``key`` is the canonical identity used to
    deduplicate and to find other surface forms of the same entity (the link target for wiki links, the
    normalised surface form otherwise). ``label`` is a coarse type: LINK, PERSON, ORG, GPE, DATE, NUMBER,
    NAME, ... (extractor-specific, recorded in build stats).
    """

    start: int
    end: int
    text: str
    label: str
    key: str


@dataclass
class Passage:
    """A paragraph-sized piece of an article, with its entity mentions."""

    title: str
    text: str
    entities: list[Entity] = field(default_factory=list)
    pid: str = ""  # stable id: "<source>:<title>:<index>"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Passage:
        return cls(
            title=d["title"],
            text=d["text"],
            entities=[Entity(**e) for e in d.get("entities", [])],
            pid=d.get("pid", ""),
        )


@dataclass
class ImrCandidate:
    """An entity of one chunk that an IMR prompt may hide as ``[TARGET]``.

    ``forms`` are all surface forms to mask in the chunk (so the answer cannot be copied from it);
    ``answer`` is the canonical answer string scored against the model's boxed output.
    """

    answer: str
    forms: list[str]


@dataclass
class MemTask:
    """One memory task: a problem, a document already split into chunks, and the answer.

    Used for the self-supervised E2E task (``kind="e2e"``) and for downstream long-document QA
    (``kind="qa"``). ``imr`` holds, per chunk, the IMR candidates (empty lists for QA tasks).
    """

    id: str
    kind: str
    problem: str
    chunks: list[str]
    answers: list[str]  # first is canonical; the rest are accepted aliases
    imr: list[list[ImrCandidate]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        return self.answers[0]

    def to_dict(self) -> dict[str, Any]:
        """Our fields plus the fields veRL's RL dataset expects (``data_source``, ``prompt``, ...)."""
        d = asdict(self)
        d["data_source"] = f"memtrain/{self.kind}"
        d["prompt"] = [{"role": "user", "content": self.problem}]
        d["ability"] = "memory"
        d["reward_model"] = {"style": "rule", "ground_truth": self.answer}
        d["extra_info"] = {"id": self.id, "num_chunks": len(self.chunks), "answers": list(self.answers)}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemTask:
        return cls(
            id=d["id"],
            kind=d["kind"],
            problem=d["problem"],
            chunks=list(d["chunks"]),
            answers=list(d["answers"]),
            imr=[[ImrCandidate(**c) for c in cands] for cands in d.get("imr", [])],
            meta=dict(d.get("meta", {})),
        )
