"""``memtrain agent run``: read one document with the memory agent and show every memory it wrote.

    set-up   the document (UTF-8, non-empty) and question, the engine
    run      chunk by the engine's tokenizer, the memory loop, the final answer
    report   each memory and the answer on stdout; optionally a JSONL trace of every conversation
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from memtrain.agent.engines import EngineConfig, build_engine
from memtrain.agent.loop import AgentConfig
from memtrain.config import option
from memtrain.errors import MemtrainError


@dataclass
class AgentRunConfig:
    doc: str | None = option("UTF-8 text file to read", None)
    question: str | None = option("the problem the memory must serve", None)
    model: str = option("smollm2 (embedded), a hub id or local folder; 'tiny' = random-weight test model",
                        "smollm2")
    engine: EngineConfig = option("generation engine", factory=EngineConfig)
    agent: AgentConfig = option("memory-agent budgets", factory=lambda: AgentConfig(chunk_tokens=512))
    temperature: float = option("0 = greedy", 0.0)
    top_p: float = option("nucleus sampling mass", 1.0)
    seed: int | None = option("sampling seed (step t uses seed + t)", None)
    trace: str | None = option("append one JSON line per conversation to this file", None)

    def validate(self) -> None:
        if not self.doc:
            raise MemtrainError("doc=FILE is required: the text file to read")
        if not self.question or not self.question.strip():
            raise MemtrainError("question=... is required (and not empty): what the memory should serve")


def read_document(path: str | Path) -> str:
    """The text of ``path``; missing, unreadable, non-UTF-8 or empty files are MemtrainErrors naming it."""
    p = Path(path)
    if not p.is_file():
        raise MemtrainError(f"document {str(p)!r} does not exist or is not a file; pass doc=PATH")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MemtrainError(
            f"document {str(p)!r} is not UTF-8 text (byte {e.start}); convert it, e.g. `iconv -t utf-8 {p}`"
        ) from None
    except OSError as e:
        raise MemtrainError(f"cannot read document {str(p)!r}: {e.strerror}") from None
    if not text.strip():
        raise MemtrainError(f"document {str(p)!r} is empty: nothing to read")
    return text


def run(cfg: AgentRunConfig) -> int:
    from memtrain.agent.engine import Sampling
    from memtrain.agent.loop import make_task, open_trace, run_memory_agent

    cfg.validate()
    text = read_document(cfg.doc)  # type: ignore[arg-type]
    engine = build_engine(cfg.engine, cfg.model)
    tokenizer = engine.tokenizer
    if tokenizer is None:  # openai engine without a tokenizer: chunk with the embedded one
        from memtrain.models import load_tokenizer

        tokenizer = load_tokenizer("smollm2")
    agent = cfg.agent
    task = make_task(text, cfg.question, tokenizer, agent, task_id=Path(cfg.doc).name)  # type: ignore[arg-type]
    cut = agent.max_chunks is not None and agent.max_chunks < len(task.chunks)
    shown = f", reading the first {agent.max_chunks}" if cut else ""
    print(f"reading {cfg.doc}: {len(task.chunks)} chunk(s) of <= {agent.chunk_tokens} tokens{shown}")
    trace = open_trace(cfg.trace)
    try:
        sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
        traj = run_memory_agent(engine, [task], agent, sampling, trace=trace)[0]
    finally:
        if trace is not None:
            trace.close()
    updates = [t for t in traj.turns if t.kind == "update"]
    for turn, memory in zip(updates, traj.memories[1:], strict=True):
        c = turn.completion
        size = f"{len(c.completion_ids)} tokens, {c.finish_reason}"
        print(f"\n=== memory after chunk {turn.step + 1} ({size}) ===")
        print(memory)
    print("\n=== final response ===")
    print(traj.response)
    print("\nanswer: (none: the response has no \\boxed{} answer)" if traj.answer is None
          else f"\nanswer: {traj.answer}")
    if cfg.trace:
        print(f"trace appended to {cfg.trace}")
    return 0


@dataclass
class FetchConfig:
    model: str = option("smollm2 (embedded) or a hub id", "smollm2")


def fetch(cfg: FetchConfig) -> int:
    """``memtrain model fetch``: prepare the model cache once (e.g. before going offline)."""
    from memtrain.models import EMBEDDED_ALIASES, embedded_model_dir, load_model

    if cfg.model == "tiny":
        print("model tiny is built in process from the embedded tokenizer; nothing to fetch")
    elif cfg.model.lower() in EMBEDDED_ALIASES:
        path = embedded_model_dir()
        load_model(cfg.model)  # proves the cached copy loads
        print(f"embedded model ready at {path}")
    else:
        load_model(cfg.model)
        print(f"model {cfg.model} loaded (cached by Hugging Face under $HF_HOME)")
    return 0
