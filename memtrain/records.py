"""Every record that flows between stages, in data-flow order: corpus -> tasks -> rollouts -> rows.

Records are small dataclasses. Those that go to disk (passages, tasks) have ``to_dict``/``from_dict`` so
they round-trip through JSONL and Parquet and can be read by HF ``datasets`` and veRL without memtrain.
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
        objectives = self.meta.get("objectives")
        truth: Any = {"target": [o["answers"] for o in objectives]} if objectives else self.answer  # MEM1's
        d["reward_model"] = {"style": "rule", "ground_truth": truth}
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


# ------------------------------------------------------------------------------------------ long-document QA


@dataclass(frozen=True)
class Doc:
    """One document of a long QA context; ``key`` identifies it for deduplication and leakage checks."""

    key: str
    title: str
    text: str


@dataclass
class QAItem:
    """A question with its gold documents and every document its source record ships with.

    ``context_keys`` are the keys of all documents of the source record (gold and the record's own
    distractors): none of them may be used as a distractor for this question.
    """

    qid: str
    question: str
    answers: list[str]
    gold: list[Doc]
    context_keys: set[str] = field(default_factory=set)
    source: str = ""
    context: list[Doc] = field(default_factory=list)  # the record's documents, in record order


# ------------------------------------------------------------------------------------------ search QA


@dataclass(frozen=True)
class Hit:
    """One passage returned by a search backend (:mod:`memtrain.search`), best hits first.

    ``contents`` is the passage in wiki-18's format, ``"Title"\ntext``, exactly as a MEM1/Search-R1
    retrieval server sends it; ``title`` is parsed from its first line (quotes removed) and :attr:`text` is
    the rest. ``score`` is the retriever's (BM25 or cosine; higher is better), None when the server was
    asked not to return scores.
    """

    id: str
    title: str
    contents: str
    score: float | None = None

    @property
    def text(self) -> str:
        return self.contents.split("\n", 1)[1] if "\n" in self.contents else self.contents

    @staticmethod
    def format_contents(title: str, text: str) -> str:
        """wiki-18's ``contents``: the quoted title on the first line, the text after it."""
        return f'"{title}"\n{text}'

    @classmethod
    def from_contents(cls, id: str, contents: str, score: float | None = None) -> Hit:  # noqa: A002
        """A hit from a wiki-18 ``contents`` string (no newline: no title, the whole string is text)."""
        if "\n" not in contents:
            return cls(id, "", contents, score)
        first = contents.split("\n", 1)[0].strip()
        title = first[1:-1] if len(first) >= 2 and first[0] == first[-1] == '"' else first
        return cls(id, title, contents, score)


# ------------------------------------------------------------------------------------------ rollouts


@dataclass
class Completion:
    """One response: text, the exact token ids, and why generation stopped (``stop`` or ``length``).

    ``completion_ids`` include the stop token when there is one, so a trainer also learns when to stop;
    ``text`` never includes it.
    """

    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    finish_reason: str
    logprobs: list[float] | None = None  # the sampler's log-prob of each completion token, if reported


@dataclass
class Turn:
    """One conversation of a trajectory.

    Kinds: the memory loop's ``update`` (a memory update) and ``final`` (the answer from memory); the
    searching agent's ``search`` (memory + a query it ran), ``answer`` (memory + the final answers) and
    ``invalid`` (a malformed action: :mod:`memtrain.agent.search`). Every kind is trained alike, with the
    trajectory's broadcast advantage; the kind only names what the turn did (logging, traces).
    """

    kind: str
    step: int
    messages: list[dict[str, str]]
    completion: Completion
    seconds: float  # wall time of the engine call this turn was part of


@dataclass
class SearchStep:
    """What one turn of the searching agent did (:mod:`memtrain.agent.search`), for traces and metrics.

    ``action`` is ``search``, ``answer`` or ``invalid``; ``reason`` says why a turn is invalid
    (``no_action``: no closed ``<search>``/``<answer>`` tag; ``empty_query``; ``turn_limit``: a search on the
    last turn) and is None otherwise. ``memory`` is the ``<think>`` block kept (cut to the budget);
    ``hits`` are the passages the query retrieved (empty unless ``action == "search"``).
    """

    turn: int
    action: str
    memory: str
    query: str | None = None
    answer: str | None = None
    hits: list[Hit] = field(default_factory=list)
    reason: str | None = None
    truncated: bool = False  # the response hit the token budget before any action tag
    cut: bool = False  # text after the action's closing tag was dropped (the emulated stop sequence)


@dataclass
class Trajectory:
    """All conversations of one read of one document (or one search episode), and the memories they
    produced."""

    task_id: str
    problem: str
    turns: list[Turn]
    memories: list[str]  # m_0 .. m_T
    response: str  # the final turn's full text
    answer: str | None  # content of its last \boxed{} (search: of its <answer>), None when absent
    steps: list[SearchStep] = field(default_factory=list)  # the searching agent's turns (else empty)


@dataclass
class ImrProbe:
    """One IMR question of a trajectory: recall ỹ of chunk c_l from memory m_k (1-based k, l).

    Chosen by :func:`memtrain.tasks.imr.pick_probe`; ``completions``/``rewards`` are filled by the rollout.
    """

    k: int
    l: int  # noqa: E741 - the paper's name
    candidate: ImrCandidate
    messages: list[dict[str, str]]
    completions: list[Completion] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)


@dataclass
class ScoredTrajectory:
    """One rollout session: a trajectory, its IMR probe (answers and ``R^I`` filled) and its rewards."""

    trajectory: Trajectory
    imr: ImrProbe | None
    answer_reward: float  # E2E / QA answer reward (the configured metric)
    answer_strict: float  # strict EM of the final answer
    reward: float  # R^E, the coupled reward the trajectory's conversations are trained on


@dataclass
class Rollouts:
    """Everything sampled for one batch, aligned by trajectory index (B·G1 trajectories)."""

    tasks: list[MemTask]  # the B documents
    g1: int
    trajectories: list[Trajectory]
    doc_of: list[int]  # document index of each trajectory
    answer_rewards: list[float]  # E2E / QA answer reward of each trajectory (the configured reward)
    imr: list[ImrProbe | None]
    rewards: list[float]  # R^E (coupled) per trajectory
    metrics: dict[str, float]
    answer_strict: list[float] = field(default_factory=list)  # strict EM of each final answer


@dataclass
class Row:
    """One training conversation: prompt ids, completion ids and the advantage broadcast to it."""

    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    kind: str  # update | final | imr (memory loop); search | answer | invalid (searching agent)
    truncated: bool = False  # finish_reason == "length"
    doc: int = 0  # the batch document it belongs to (PPO mini-batches are cut by document)
    sampler_logprobs: list[float] | None = None  # the engine's log-probs of completion_ids, if reported
