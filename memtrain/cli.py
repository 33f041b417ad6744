"""The one CLI entry point: ``memtrain <verb> [PRESET] [key.sub=value ...]``, a thin wrapper over a recipe.

Every verb has one config dataclass (the single source of defaults and help), YAML presets in
``memtrain/configs/<recipe>/`` and one override syntax, ``key.sub=value`` (values read as YAML, as in veRL
and Hydra). ``memtrain <verb> --help`` prints every field with its default and help, generated from the
dataclass. Config classes and recipes are imported only for the verb that runs, so ``memtrain --help`` is
instant. User mistakes surface as :class:`~memtrain.errors.MemtrainError`, printed without a traceback.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import sys
from dataclasses import dataclass

from memtrain import __version__
from memtrain.errors import MemtrainError


@dataclass(frozen=True)
class Verb:
    help: str
    config: str  # "module:Class"
    recipe: str  # "module:function"
    presets: str  # folder of memtrain/configs
    example: str


VERBS: dict[str, Verb] = {
    "data build": Verb("build a task set (E2E from a corpus, or long-document QA)",
                       "memtrain.recipes.build_tasks:BuildConfig", "memtrain.recipes.build_tasks:build",
                       "data",
                       "memtrain data build cpu          # 200 E2E tasks from the embedded Wikipedia dump"),
    "train": Verb("GRPO training with the MemTrain objective, or task RL (resumes on re-run)",
                  "memtrain.rl.config:TrainConfig", "memtrain.recipes.train:train", "train",
                  "memtrain train cpu_memtrain steps=2"),
    "eval": Verb("evaluate a memory agent on a task set (long QA or the proxy tasks)",
                 "memtrain.recipes.evaluate:EvalConfig", "memtrain.recipes.evaluate:evaluate", "eval",
                 "memtrain eval cpu model=runs/cpu_memtrain/final"),
    "report": Verb("table and plot from one or several eval metrics.json files",
                   "memtrain.recipes.evaluate:ReportConfig", "memtrain.recipes.evaluate:report", "report",
                   "memtrain report metrics=[out/a,out/b] out=out/report"),
    "agent run": Verb("read a document chunk by chunk, print each memory and the final answer",
                      "memtrain.recipes.agent_run:AgentRunConfig", "memtrain.recipes.agent_run:run", "agent",
                      'memtrain agent run doc=README.md question="What does memtrain train?"'),
    "serve": Verb("serve a model over an OpenAI-compatible HTTP API (batched)",
                  "memtrain.serve:ServeConfig", "memtrain.serve:serve", "serve", "memtrain serve port=8000"),
    "retriever serve": Verb("serve a local search index with the MEM1/Search-R1 API (POST /retrieve)",
                            "memtrain.search.server:RetrieverServeConfig", "memtrain.search.server:serve",
                            "retriever", "memtrain retriever serve cpu port=8000  # BM25, local corpus"),
    "verl-config": Verb("write a veRL run (parquet data, agent loops, launch script) for a train preset",
                        "memtrain.integrations.verl.export:VerlConfig",
                        "memtrain.integrations.verl.export:verl_config", "train",
                        "memtrain verl-config paper_memtrain_qwen3_4b out=verl/memtrain_4b"),
    "model fetch": Verb("prepare the model cache (the embedded model needs PyPI once)",
                        "memtrain.recipes.agent_run:FetchConfig", "memtrain.recipes.agent_run:fetch", "model",
                        "memtrain model fetch"),
}


def _load(ref: str):  # noqa: ANN202
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def usage() -> str:
    width = max(map(len, VERBS))
    rows = "\n".join(f"  {name:<{width}}  {v.help}" for name, v in VERBS.items())
    return ("usage: memtrain [-v] <verb> [PRESET] [key.sub=value ...]   (<verb> --help: its settings)\n\n"
            f"Self-supervised context-memory training for LLM memory agents.\n\nverbs:\n{rows}\n")


def verb_help(name: str, verb: Verb, preset: str | None = None) -> str:
    from memtrain.config import help_text

    recipe = _load(verb.recipe)
    module = verb.recipe.partition(":")[0]
    # a module holding several verbs' recipes describes the first of them; the others say their own docstring
    first = next(n for n, v in VERBS.items() if v.recipe.partition(":")[0] == module)
    about = (sys.modules[module].__doc__ if name == first else inspect.getdoc(recipe)) or ""
    about = about.strip()
    return (f"usage: memtrain {name} [PRESET] [key.sub=value ...]\n\n{verb.help}. Example:\n  {verb.example}"
            f"\n\n{about}\n\n{help_text(_load(verb.config), verb.presets, preset)}\n")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--version" in args:
        print(f"memtrain {__version__}")
        return 0
    verbose = any(a in ("-v", "--verbose") for a in args)
    args = [a for a in args if a not in ("-v", "--verbose")]
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    name = next((n for n in VERBS if args[: len(n.split())] == n.split()), None)
    if name is None:
        if not args or args[0] in ("-h", "--help"):
            print(usage())
            return 0
        words = " ".join(a for a in args[:2] if "=" not in a and not a.startswith("-"))
        close = difflib.get_close_matches(words, list(VERBS), n=1) or difflib.get_close_matches(
            args[0], list(VERBS), n=1)
        hint = f" (did you mean `memtrain {close[0]}`?)" if close else ""
        print(f"memtrain: unknown verb {words or args[0]!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    verb, rest = VERBS[name], args[len(name.split()):]
    if any(a in ("-h", "--help") for a in rest):
        presets = [a for a in rest if "=" not in a and not a.startswith("-")]
        try:
            print(verb_help(name, verb, presets[0] if presets else None))
        except MemtrainError as e:
            print(f"memtrain {name}: error: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        from memtrain.config import load_config

        positional = [a for a in rest if "=" not in a]
        if len(positional) > 1 or any(a.startswith("--") for a in rest):
            raise MemtrainError(f"expected at most one PRESET and key=value settings, got {rest}; "
                                f"see `memtrain {name} --help`")
        cfg = load_config(_load(verb.config), verb.presets, positional[0] if positional else None,
                          [a for a in rest if "=" in a])
        result = _load(verb.recipe)(cfg)
        return result if isinstance(result, int) else 0
    except MemtrainError as e:
        print(f"memtrain {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        msg = "interrupted; finished work was kept, re-run the same command to resume"
        print(f"memtrain {name}: {msg}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
