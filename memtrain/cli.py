"""The one CLI entry point: ``memtrain <command> ...``.

Each command lives beside the code it drives and registers itself through a ``register(subparsers)``
function; heavy imports (torch, transformers) happen inside the command, so ``memtrain --help`` is instant.
User mistakes surface as :class:`~memtrain.errors.MemtrainError` and are printed without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from memtrain import __version__
from memtrain.errors import MemtrainError

COMMAND_MODULES = [
    "memtrain.tasks.cli",  # data build
    "memtrain.agent.cli",  # agent run, model fetch
    "memtrain.eval.cli",  # eval
    "memtrain.serve",  # serve
    "memtrain.rl.cli",  # train
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memtrain", description="Self-supervised context-memory training for LLM memory agents."
    )
    parser.add_argument("--version", action="version", version=f"memtrain {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MemtrainError as e:
        print(f"memtrain {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        msg = "interrupted; finished work was kept, re-run the same command to resume"
        print(f"memtrain {args.command}: {msg}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
