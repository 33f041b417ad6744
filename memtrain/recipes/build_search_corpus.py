"""``memtrain data build kind=search_corpus``: the local search corpus for search QA at CPU scale.

1. Find the source files in ``search_corpus.data`` (``../shared/data``): Wikipedia leads, HotpotQA,
   MuSiQue and SQuAD paragraphs (:mod:`memtrain.search.corpus`); their sizes and sha256 identify the build.
2. If ``out`` already holds a complete corpus built from the same files and settings, stop: nothing to do.
3. Read every paragraph, deduplicate on normalised text (first source wins), write ``passages.jsonl``
   (``{"id", "contents": '"Title"\\ntext'}``, wiki-18's format).
4. NQ-open: index the pool with BM25 and record, per question, whether an answer occurs in the pool and the
   rank of the first BM25 hit holding one (``answerable_nq.json``).
5. Write ``manifest.json`` last (sources with sizes and sha256, counts per source, duplicates dropped, the
   passages file's sha256, builder version): every file is written atomically and a build killed before
   step 5 leaves an incomplete manifest, so a re-run rebuilds.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memtrain.errors import MemtrainError
from memtrain.io import atomic_open, write_json, write_jsonl
from memtrain.search.corpus import (
    ANSWERABLE_NQ,
    NQ_FILE,
    PASSAGES,
    collect_passages,
    load_nq,
    nq_answerability,
)
from memtrain.tasks.taskset import MANIFEST, config_hash, source_file

if TYPE_CHECKING:
    from memtrain.recipes.build_tasks import BuildConfig

BUILDER_VERSION = 1  # bump when a change alters the passages produced from the same files
FORMAT = ('wiki-18 JSONL: {"id": "<source>:<sha1 of the normalised text, 12 hex>", '
          '"contents": "\\"Title\\"\\ntext"}')


@dataclass
class CorpusManifest:
    """What a search corpus was built from (``manifest.json``)."""

    config_hash: str
    config: dict[str, Any]
    builder_version: int
    sources: list[dict[str, Any]] = field(default_factory=list)  # name, files (path, bytes, sha256), counts
    n_passages: int = 0
    duplicates_dropped: int = 0
    passages_sha256: str = ""
    answerable_nq: dict[str, Any] | None = None  # file, counts (None: not built)
    format: str = FORMAT
    kind: str = "search_corpus"
    complete: bool = False


def read_corpus_manifest(out: Path) -> CorpusManifest | None:
    """The manifest in ``out``, or None when there is none or it is not a search corpus's."""
    try:
        d = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return CorpusManifest(**d) if d.get("kind") == "search_corpus" else None
    except (OSError, json.JSONDecodeError, TypeError):
        return None


def build(cfg: BuildConfig) -> dict[str, Any]:
    """Steps 1-5 of the module docstring; returns the manifest as a dict."""
    sc = cfg.search_corpus
    sc.validate()
    t0 = time.perf_counter()
    out = Path(cfg.out)
    paths = sc.source_paths()
    files = {s: [source_file(f) for f in fs] for s, fs in paths.items()}
    nq_path = sc.data_dir() / NQ_FILE
    nq = source_file(nq_path) if sc.nq_answerable and nq_path.is_file() else None
    identity = {**{k: v for k, v in asdict(sc).items() if k != "data"}, "builder_version": BUILDER_VERSION}
    h = config_hash({**identity, "sources": {s: [f.sha256 for f in fs] for s, fs in files.items()},
                     "nq": nq.sha256 if nq else None})

    old = read_corpus_manifest(out)
    if old and old.complete and old.config_hash == h and (out / PASSAGES).is_file() \
            and source_file(out / PASSAGES).sha256 == old.passages_sha256:
        print(f"search corpus {out} is up to date ({old.n_passages} passages); nothing to do")
        return asdict(old)
    if (out / MANIFEST).exists() or (out / PASSAGES).exists():
        if not (old and old.config_hash == h) and not cfg.overwrite:
            what = (f"a search corpus built with another configuration (hash {old.config_hash} != {h})"
                    if old else "files of another build")
            raise MemtrainError(f"{out} holds {what}; choose another out=DIR, or set overwrite=true to "
                                "replace it")
    manifest = CorpusManifest(config_hash=h, config=identity, builder_version=BUILDER_VERSION)
    write_json(out / MANIFEST, asdict(manifest))  # incomplete until the end
    write_json(out / "config.json", asdict(cfg))

    pool, counts = collect_passages(paths)
    write_jsonl(out / PASSAGES, ({"id": p.id, "contents": p.contents} for p in pool))
    manifest.sources = [{**asdict(c), "files": [asdict(f) for f in files[c.name]]} for c in counts]
    manifest.n_passages = len(pool)
    manifest.duplicates_dropped = sum(c.duplicates for c in counts)
    manifest.passages_sha256 = source_file(out / PASSAGES).sha256

    if nq is not None:
        from memtrain.search.backends import LocalIndex
        from memtrain.tasks.retrieval import BM25Retriever

        answerable = nq_answerability(pool, load_nq(nq_path), LocalIndex(pool, BM25Retriever(), kind="bm25"),
                                      sc.nq_topk)
        write_json(out / ANSWERABLE_NQ, answerable)
        manifest.answerable_nq = {"file": ANSWERABLE_NQ, "source": asdict(nq),
                                  **{k: v for k, v in answerable.items() if k != "questions"}}
    elif (out / ANSWERABLE_NQ).exists():
        (out / ANSWERABLE_NQ).unlink()  # from an earlier build with other settings

    manifest.complete = True
    with atomic_open(out / "README.md") as f:
        f.write(data_card(manifest))
    write_json(out / MANIFEST, dataclasses.asdict(manifest))
    per_source = ", ".join(f"{c.name} {c.kept}/{c.read}" for c in counts)
    nq_note = (f"; NQ answerable in the pool: {manifest.answerable_nq['in_pool']}/"
               f"{manifest.answerable_nq['questions_unique']}") if manifest.answerable_nq else ""
    print(f"built search corpus: {len(pool)} passages ({per_source} kept/read, "
          f"{manifest.duplicates_dropped} duplicates dropped){nq_note} -> {out} "
          f"({time.perf_counter() - t0:.1f} s)")
    return asdict(manifest)


def data_card(m: CorpusManifest) -> str:
    rows = "\n".join(f"| {s['name']} | {s['read']} | {s['kept']} | {s['duplicates']} | {s['empty']} |"
                     for s in m.sources)
    nq = m.answerable_nq
    nq_line = (f"- **`{ANSWERABLE_NQ}`**: {nq['in_pool']} of {nq['questions_unique']} NQ-open dev questions "
               f"have an answer string in the pool; {nq['bm25_in_topk']} in the BM25 top-{nq['topk']}. "
               f"Definition: {nq['definition']}.\n") if nq else ""
    return f"""# memtrain local search corpus

Passages for search QA at CPU scale (DESIGN §10), built by `memtrain data build kind=search_corpus`
(builder v{BUILDER_VERSION}, config hash `{m.config_hash}`): {m.n_passages} passages after dropping
{m.duplicates_dropped} duplicates (normalised text; the first source listed keeps its copy).

| source | paragraphs read | kept | duplicates | empty |
|---|---|---|---|---|
{rows}

- **`{PASSAGES}`**: {m.format}. Serve it with `memtrain retriever serve corpus=<this folder>`, or search it
  in process with `memtrain.search.LocalIndex.from_corpus(<this folder>)`.
{nq_line}
## Licence

Wikipedia text (CC BY-SA), HotpotQA (CC BY-SA 4.0), MuSiQue (CC BY 4.0), SQuAD (CC BY-SA 4.0): a derivative
work, shared under CC BY-SA with attribution to Wikipedia's contributors and the datasets' authors.
"""
