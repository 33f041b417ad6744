"""``memtrain agent run``: read one document with the memory agent and show every memory it wrote.

    set-up   the document (UTF-8, non-empty) and question, the engine; the agent settings of the preset
             (``cpu``, ``micro``, ``paper``: those of the train/eval presets of the same name), or of the
             training run the model comes from (its ``config.json``) for every setting left at its default
    run      chunk by the engine's tokenizer, the memory loop, each memory printed as it is written
    report   the final response and the answer; optionally a JSONL trace of every conversation

The answer is read the way the model was trained to give it: ``lenient`` by default (the ``\\boxed{}``
answer when there is one, else the response's first line), as every preset of the embedded model does, since
SmolLM2-135M rarely writes ``\\boxed{}``; ``agent.answer_mode=boxed`` is the paper's strict reading.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from memtrain.agent.engines import EngineConfig, build_engine
from memtrain.agent.loop import AgentConfig
from memtrain.config import option
from memtrain.errors import MemtrainError

# what an unset (None) agent setting becomes when the model comes from no training run
RUN_DEFAULTS: dict[str, Any] = {"chunk_tokens": 512, "memory_tokens": 256, "answer_tokens": 128,
                                "prompt_version": "v1", "answer_mode": "lenient"}


@dataclass
class RunAgentConfig(AgentConfig):
    """:class:`AgentConfig` whose unset settings come from the training run the model comes from (its
    ``config.json``: ``runs/X/final`` -> ``runs/X/config.json``), else from :data:`RUN_DEFAULTS`."""

    chunk_tokens: int | None = option("tokens per document chunk (None: the model's training run's, else "
                                      "512)", None)
    memory_tokens: int | None = option("max tokens of memory (None: the run's, else 256)", None)
    answer_tokens: int | None = option("max tokens of the final answer (None: the run's, else 128)", None)
    prompt_version: str | None = option("prompt template version, prompts.py (None: the run's, else v1)",
                                        None)
    answer_mode: Literal["boxed", "lenient"] | None = option(
        "lenient: the \\boxed{} answer, else the first line (every preset of the embedded model); boxed: "
        "the paper's strict reading (None: the run's, else lenient)", None)

    def validate(self) -> None:
        AgentConfig.validate(dataclasses.replace(
            self, **{k: v for k, v in RUN_DEFAULTS.items() if getattr(self, k) is None}))


@dataclass
class AgentRunConfig:
    doc: str | None = option("UTF-8 text file to read", None)
    question: str | None = option("the problem the memory must serve", None)
    model: str = option("smollm2 (embedded), a hub id or local folder (a training run's final/ brings its "
                        "agent settings); 'tiny' = random-weight test model", "smollm2")
    engine: EngineConfig = option("generation engine", factory=EngineConfig)
    agent: RunAgentConfig = option("memory-agent budgets, prompts and answer reading", factory=RunAgentConfig)
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


def run_settings(model: str, agent: RunAgentConfig) -> tuple[AgentConfig, dict[str, Any], Path | None]:
    """The agent settings to read with: those given (preset or ``key=value``), then those of the training
    run ``model`` comes from, then :data:`RUN_DEFAULTS`; returns (settings, what came from the run, the
    run's config file)."""
    trained, run_cfg = {}, Path(model).expanduser().parent / "config.json"
    if Path(model).expanduser().is_dir() and run_cfg.is_file():
        try:
            saved = json.loads(run_cfg.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if isinstance(saved, dict) and "rollout" in saved and isinstance(saved.get("agent"), dict):
            trained = saved["agent"]  # a training run's config.json (an eval's has no rollout)
    unset = [k for k in RUN_DEFAULTS if getattr(agent, k) is None]
    adopted = {k: trained[k] for k in unset if trained.get(k) is not None}
    filled = {**{k: RUN_DEFAULTS[k] for k in unset}, **adopted}
    fields = {f.name: getattr(agent, f.name) for f in dataclasses.fields(AgentConfig)}
    return AgentConfig(**{**fields, **filled}), adopted, run_cfg if adopted else None


def run(cfg: AgentRunConfig) -> int:
    from memtrain.agent.engine import Sampling
    from memtrain.agent.loop import make_task, open_trace, run_memory_agent
    from memtrain.scoring import extract_boxed

    cfg.validate()
    text = read_document(cfg.doc)  # type: ignore[arg-type]
    agent, adopted, run_cfg = run_settings(cfg.model, cfg.agent)
    agent.validate()
    engine = build_engine(cfg.engine, cfg.model)
    tokenizer = engine.tokenizer
    if tokenizer is None:  # openai engine without a tokenizer: chunk with the embedded one
        from memtrain.models import load_tokenizer

        tokenizer = load_tokenizer("smollm2")
    if adopted:
        print(f"agent settings of the run the model comes from ({run_cfg}): "
              + ", ".join(f"{k}={v}" for k, v in adopted.items()))
    task = make_task(text, cfg.question, tokenizer, agent, task_id=Path(cfg.doc).name)  # type: ignore[arg-type]
    cut = agent.max_chunks is not None and agent.max_chunks < len(task.chunks)
    shown = f", reading the first {agent.max_chunks}" if cut else ""
    print(f"reading {cfg.doc}: {len(task.chunks)} chunk(s) of <= {agent.chunk_tokens} tokens{shown} "
          f"(prompts {agent.prompt_version}, answers {agent.answer_mode})", flush=True)

    def show(turn: Any, memory: str | None) -> None:  # each memory as soon as it is written
        if turn.kind != "update":
            return
        c = turn.completion
        print(f"\n=== memory after chunk {turn.step + 1} ({len(c.completion_ids)} tokens, {c.finish_reason}, "
              f"{turn.seconds:.1f} s) ===")
        print(memory, flush=True)

    trace = open_trace(cfg.trace)
    try:
        sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
        traj = run_memory_agent(engine, [task], agent, sampling, trace=trace, progress=False,
                                on_turn=show)[0]
    finally:
        if trace is not None:
            trace.close()
    print("\n=== final response ===")
    print(traj.response)
    if traj.answer is None:
        why = "has no \\boxed{} answer" if agent.answer_mode == "boxed" else "is empty"
        print(f"\nanswer: (none: the response {why}; agent.answer_mode={agent.answer_mode})")
    elif extract_boxed(traj.response) is None:
        print(f"\nanswer: {traj.answer}   (no \\boxed{{}}: the response's first line, "
              "agent.answer_mode=lenient)")
    else:
        print(f"\nanswer: {traj.answer}")
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
