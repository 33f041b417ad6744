"""``memtrain data build``: the command-line face of :mod:`memtrain.tasks.build`."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="build self-supervised training data")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda _args: (data.print_help(), 2)[1])

    b = data_sub.add_parser(
        "build",
        help="build sharded E2E/IMR tasks from a corpus",
        description="Corpus -> passages with entities -> BM25 -> masked documents -> token chunks -> shards. "
        "Re-running with the same options resumes (finished shards are kept).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    b.add_argument("--corpus", required=True,
                   help="'embedded' (gensim's enwiki excerpt), a .xml/.xml.bz2 dump, .jsonl/.parquet, "
                   "a folder or hf:NAME")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--preset", choices=["cpu", "paper"], default="cpu",
                   help="task sizes: paper (150 passages, 8x5120-token chunks) or cpu (12 passages, 4x384)")
    b.add_argument("--config", help="YAML file of E2EConfig fields applied over the preset")
    b.add_argument("--tokenizer", default="smollm2", help="tokenizer name, HF id or local path")
    b.add_argument("--num-tasks", type=int, default=None,
                   help="tasks to build (default: one try per passage)")
    b.add_argument("--shard-size", type=int, default=1000, help="tasks per shard")
    b.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl", help="shard format")
    b.add_argument("--workers", type=int, default=1, help="parallel processes")
    b.add_argument("--seed", type=int, default=0, help="seed for pivots and every random choice")
    b.add_argument("--entities", default="auto",
                   help="entity extractor spec: auto (wiki links where present + rules), links, rules, "
                   "spacy, or a combination such as links+rules")
    b.add_argument("--limit-pages", type=int, default=None, help="read at most this many corpus pages")
    b.add_argument("--max-passage-words", type=int, default=200, help="split longer paragraphs")
    b.add_argument("--min-passage-words", type=int, default=20, help="drop shorter passages")
    b.add_argument("--wikitext-parser", choices=["fast", "mwparserfromhell"], default="fast",
                   help="how MediaWiki dumps are rendered: the fast scanner or a full mwparserfromhell parse "
                   "(same output rules, ~10x slower)")
    b.add_argument("--overwrite", action="store_true", help="replace a build made with another configuration")
    b.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    b.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from memtrain.config import from_dict, load_yaml
    from memtrain.tasks.build import BuildConfig, build_dataset
    from memtrain.tasks.e2e import PRESETS, E2EConfig

    task_dict: dict[str, Any] = asdict(PRESETS[args.preset])
    if args.config:
        task_dict.update(load_yaml(args.config))
    task_dict["seed"] = args.seed
    task = from_dict(E2EConfig, task_dict)
    cfg = BuildConfig(
        corpus=args.corpus, out=args.out, task=task, tokenizer=args.tokenizer, num_tasks=args.num_tasks,
        shard_size=args.shard_size, format=args.format, workers=args.workers, entities=args.entities,
        limit_pages=args.limit_pages, max_passage_words=args.max_passage_words,
        min_passage_words=args.min_passage_words, wikitext_parser=args.wikitext_parser,
    )
    stats = build_dataset(cfg, overwrite=args.overwrite, progress=not args.no_progress)
    t = stats["timings"]
    print(
        f"built {stats['documents']} tasks in {stats['shards']} shard(s) -> {args.out} "
        f"({stats['pivots_tried']} pivots tried, drops {stats['drops'] or 'none'}; {t['total_s']} s)"
    )
    return 0
