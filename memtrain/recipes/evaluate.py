"""``memtrain eval``: a model as a memory agent on a task set, resumably, with tables and plots.

    set-up   the task set (manifest checked against the model's tokenizer and the agent budgets), engine
    run      long QA: every task through the memory loop (+ the full-context baseline if asked), per-length
             accuracy / EM / F1; E2E: the proxy evaluation (E2E answer + one IMR probe per task, the rule and
             probes training uses); search QA (``task=search``, or a ``kind=searchqa`` task set): the
             searching agent (``search.*``, ``retriever.*``) on every task, per-benchmark EM averaged over
             objectives, with each episode's queries, retrieved titles and memories in ``results.jsonl``
    report   ``results.jsonl`` + ``metrics.json`` (+ ``full_context/``), ``results.md``, a PNG for long QA

Re-running the same command with the same ``out`` resumes where it stopped; a different configuration in
the same ``out`` is refused unless ``resume=false``. ``memtrain report`` redraws tables from several runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from memtrain.agent.engines import EngineConfig, build_engine
from memtrain.agent.loop import AgentConfig
from memtrain.agent.search import SearchAgentConfig
from memtrain.config import option, to_dict
from memtrain.errors import MemtrainError
from memtrain.io import atomic_open, write_json
from memtrain.search.backends import SearchConfig


@dataclass
class EvalConfig:
    model: str = option("smollm2 (embedded), tiny, a hub id, a local folder or a run's final/", "smollm2")
    tasks_dir: str | None = option("task set from `memtrain data build`: long QA (e.g. split=eval) or E2E "
                                   "(the proxy tasks)", None)
    out: str = option("output folder", "out/eval")
    engine: EngineConfig = option("generation engine", factory=EngineConfig)
    task: Literal["auto", "memory", "search"] = option(
        "auto: from the task set's kind; memory: the memory agent over chunks (long QA, E2E); search: the "
        "searching agent (needs a kind=searchqa task set)", "auto")
    agent: AgentConfig = option("memory-agent budgets; chunk_tokens comes from the task set",
                                factory=AgentConfig)
    search: SearchAgentConfig = option("searching agent (task=search): turns, token budgets, prompts",
                                       factory=SearchAgentConfig)
    retriever: SearchConfig = option("search backend (task=search): bm25/dense over a local corpus, or http",
                                     factory=SearchConfig)
    num_questions: int | None = option("evaluate only the first N questions (per length) / E2E tasks / "
                                       "search-QA tasks per benchmark", None)
    batch_size: int = option("documents read together (turn-synchronous batching)", 16)
    temperature: float = option("0 = greedy (MemAgent's evaluation samples at 0.7, top-p 0.95: preset "
                                "eval/memagent_sampling)", 0.0)
    top_p: float = option("nucleus sampling mass (temperature > 0)", 1.0)
    samples: int = option("answers per question (temperature > 0): accuracy is their mean, with the "
                          "spread over samples beside it", 1)
    seed: int = option("seed for sampling and the IMR probes", 0)
    reward: Literal["strict_em", "sub_em", "f1"] = option(
        "E2E task sets: the training reward reported beside strict EM", "strict_em")
    baseline: Literal["none", "full-context"] = option("also answer from the whole document in one prompt",
                                                       "none")
    max_context_tokens: int = option("full-context baseline: longer prompts are skipped, not scored", 8192)
    label: str | None = option("row label in the table (default: the model name)", None)
    trace: bool = option("write every agent conversation to trace.jsonl", False)
    resume: bool = option("continue the results in `out` (false: start over)", True)
    progress: bool = option("show progress bars", True)

    def validate(self) -> None:
        for name in ("batch_size", "max_context_tokens"):
            if getattr(self, name) < 1:
                raise MemtrainError(f"EvalConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.samples < 1 or (self.samples > 1 and self.temperature <= 0):
            raise MemtrainError(f"EvalConfig.samples={self.samples} needs temperature > 0 (greedy answers "
                                "are identical)" if self.samples > 1 else "EvalConfig.samples must be >= 1")
        if self.num_questions is not None and self.num_questions < 1:
            raise MemtrainError(f"EvalConfig.num_questions must be >= 1, got {self.num_questions}")
        if not self.tasks_dir:
            raise MemtrainError("EvalConfig.tasks_dir is required: a task set from `memtrain data build`, "
                                "e.g. tasks_dir=data/hotpotqa_cpu_eval")


def first_questions(tasks: list[Any], n: int | None) -> list[Any]:
    """The tasks of the first ``n`` distinct questions (every length of each), in task-set order."""
    if n is None:
        return tasks
    order = dict.fromkeys(t.meta.get("question_id", t.id) for t in tasks)  # first appearance order
    chosen = set(list(order)[:n])
    return [t for t in tasks if t.meta.get("question_id", t.id) in chosen]


def with_samples(tasks: list[Any], n: int) -> list[Any]:
    """``n`` copies of every task, ids ``<id>#s<k>``: each samples on its own seed (derived from its id)."""
    if n == 1:
        return tasks
    return [dataclasses.replace(t, id=f"{t.id}#s{k}", meta={**t.meta, "sample": k}) for k in range(n)
            for t in tasks]


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run the evaluation of ``cfg``; returns the memory agent's metrics."""
    from memtrain.agent.engine import Sampling
    from memtrain.eval.baselines import evaluate_full_context
    from memtrain.eval.proxy import evaluate_proxy
    from memtrain.eval.report import write_report
    from memtrain.eval.runner import evaluate as evaluate_agent
    from memtrain.tasks.taskset import agent_for, check_tokenizer, open_taskset

    cfg.validate()
    out = Path(cfg.out)
    ts = open_taskset(cfg.tasks_dir)  # type: ignore[arg-type]  # before loading a model: fails in a second
    search = ts.manifest.kind == "searchqa"
    if cfg.task != "auto" and (cfg.task == "search") != search:
        raise MemtrainError(f"EvalConfig.task={cfg.task} but {ts.path} is a {ts.manifest.kind} task set; "
                            "build a search-QA set with `memtrain data build kind=searchqa` (or use "
                            "task=auto)")
    if search:
        return evaluate_search_tasks(cfg, ts)
    agent = agent_for(cfg.agent, ts, "EvalConfig")
    engine = build_engine(cfg.engine, cfg.model)
    check_tokenizer(engine.tokenizer, ts, cfg.model, "EvalConfig")
    cfg = dataclasses.replace(cfg, agent=agent)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", to_dict(cfg))
    tasks = with_samples(first_questions(ts.tasks, cfg.num_questions), cfg.samples)
    label = cfg.label or cfg.model
    run_info = {"model": cfg.model, "engine": cfg.engine.kind, "tasks_dir": str(ts.path),
                "task_set": ts.manifest.config_hash, "seed": cfg.seed, "temperature": cfg.temperature,
                "top_p": cfg.top_p, "samples": cfg.samples}

    if ts.manifest.kind == "e2e":
        m = evaluate_proxy(engine, tasks, agent, out, reward=cfg.reward, temperature=cfg.temperature,
                           seed=cfg.seed, batch_size=cfg.batch_size, resume=cfg.resume, label=label,
                           run_info=run_info, progress=cfg.progress)
        table = proxy_table(m, label, cfg.reward)
        with atomic_open(out / "results.md") as f:
            f.write(table)
        print(table)
        return m

    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    m = evaluate_agent(engine, tasks, agent, sampling, out, batch_size=cfg.batch_size, resume=cfg.resume,
                       label=f"{label} memory agent", run_info=run_info, trace=cfg.trace,
                       progress=cfg.progress)
    paths = [out / "metrics.json"]
    if cfg.baseline == "full-context":
        evaluate_full_context(engine, tasks, sampling, out / "full_context",
                              answer_tokens=agent.answer_tokens,
                              max_context_tokens=cfg.max_context_tokens, batch_size=cfg.batch_size,
                              resume=cfg.resume, label=f"{label} full context", answer_mode=agent.answer_mode,
                              run_info={**run_info, "max_context_tokens": cfg.max_context_tokens},
                              progress=cfg.progress)
        paths.append(out / "full_context" / "metrics.json")
    source = ts.manifest.config.get("longqa", {}).get("source", "long QA")
    table = write_report(paths, out, title=f"{source}: accuracy vs context length ({cfg.model})")
    print(table)
    print(f"wrote {out / 'results.md'}, {out / 'accuracy_vs_length.png'}, {out / 'metrics.json'}")
    return m


def evaluate_search_tasks(cfg: EvalConfig, ts: Any) -> dict[str, Any]:
    """``task=search``: the searching agent on a search-QA task set (:mod:`memtrain.eval.search`)."""
    from memtrain.agent.engine import Sampling
    from memtrain.eval.search import evaluate_search
    from memtrain.search import make_search

    if cfg.baseline != "none":
        raise MemtrainError(f"EvalConfig.baseline={cfg.baseline} needs documents; a search-QA task set has "
                            "none (the agent retrieves its own): use baseline=none")
    out = Path(cfg.out)
    engine = build_engine(cfg.engine, cfg.model)  # no tokenizer check: search tasks hold no chunks
    searcher = make_search(cfg.retriever)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", to_dict(cfg))
    seen: dict[str, int] = {}
    chosen = []
    for t in ts.tasks:  # the first num_questions tasks of every benchmark
        src = t.meta.get("source", "")
        if cfg.num_questions is None or seen.get(src, 0) < cfg.num_questions:
            chosen.append(t)
            seen[src] = seen.get(src, 0) + 1
    tasks = with_samples(chosen, cfg.samples)
    label = cfg.label or cfg.model
    run_info = {"model": cfg.model, "engine": cfg.engine.kind, "tasks_dir": str(ts.path),
                "task_set": ts.manifest.config_hash, "seed": cfg.seed, "temperature": cfg.temperature,
                "top_p": cfg.top_p, "samples": cfg.samples, "retriever": to_dict(cfg.retriever),
                "search": to_dict(cfg.search)}
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    m = evaluate_search(engine, searcher, tasks, cfg.search, sampling, out, batch_size=cfg.batch_size,
                        resume=cfg.resume, label=f"{label} search agent", run_info=run_info, trace=cfg.trace,
                        progress=cfg.progress)
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"wrote {out / 'results.md'}, {out / 'metrics.json'}, {out / 'results.jsonl'}")
    return m


def proxy_table(m: dict[str, Any], label: str, reward: str) -> str:
    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    extra = reward != "strict_em"
    head = "| method | E2E strict EM |" + (f" E2E {reward} |" if extra else "") + " IMR strict EM |" + \
        (f" IMR {reward} |" if extra else "") + " tasks | IMR probes |"
    cells = [label, pct(m["e2e_accuracy"])] + ([pct(m[f"e2e_{reward}"])] if extra else []) + \
        [pct(m["imr_accuracy"])] + ([pct(m[f"imr_{reward}"])] if extra else []) + \
        [str(m["n"]), str(m["n_imr"])]
    return f"{head}\n|{'---|' * len(cells)}\n| {' | '.join(cells)} |\n"


@dataclass
class ReportConfig:
    metrics: list[str] = option("metrics.json files or eval output folders", [])
    out: str = option("folder for results.md and accuracy_vs_length.png", "out/report")
    metric: Literal["accuracy", "em", "f1", "strict_em", "sub_em"] = option("the score in the table",
                                                                             "accuracy")
    title: str | None = option("plot and table title", None)

    def validate(self) -> None:
        if not self.metrics:
            raise MemtrainError("ReportConfig.metrics is empty: pass metrics=[out/eval_a,out/eval_b]")


def report(cfg: ReportConfig) -> int:
    """``memtrain report``: one table and one plot over several evaluations."""
    from memtrain.eval.report import write_report

    cfg.validate()
    print(write_report(cfg.metrics, cfg.out, metric=cfg.metric, title=cfg.title))
    return 0
