"""Step-0 probe of the micro-scale downstream task (and of E2E at the floor): where does SmolLM2-135M earn
any reward before training?

    memtrain data build squad_micro_train && memtrain data build micro
    python experiments/micro_qa_probe.py [--tasks data/squad_micro_train data/e2e_micro] [--n 32]

For the first ``--n`` tasks of each task set, three ways to answer, each greedy and with 4 samples (T 0.7,
top-p 0.9, the rollout settings of the micro presets), scored by lenient sub-EM like the training reward:

- ``agent``: the memory agent as trained (``micro`` prompts, 32-token memory, 24-token chunks);
- ``oracle memory``: the final prompt with the best a memory can hold as the memory: the gold sentence (QA),
  or the first chunk that shows the masked entity's placeholder (E2E);
- ``full context``: the whole document in one prompt (no memory at all).

A GRPO group has signal when some but not all of its 4 samples are right; task RL needs signal in a good
share of groups at step 0 to learn at all (issue 22 asks for >= 20 %). Writes
experiments/results/micro_qa_probe.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def signal(rewards: list[float], g: int) -> int:
    """Groups of ``g`` consecutive rewards that are neither all equal."""
    return sum(0 < sum(rewards[i:i + g]) < g for i in range(0, len(rewards), g))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["data/squad_micro_train", "data/e2e_micro"])
    ap.add_argument("--n", type=int, default=32, help="tasks per task set")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-agent", action="store_true", help="only the one-prompt ways (no agent)")
    ap.add_argument("--out", default=str(RESULTS / "micro_qa_probe"))
    args = ap.parse_args()

    import torch

    from memtrain import prompts
    from memtrain.agent.engine import Sampling
    from memtrain.agent.engines import EngineConfig, build_engine
    from memtrain.agent.loop import AgentConfig
    from memtrain.rl.config import RolloutConfig
    from memtrain.rl.rewards import answer_reward
    from memtrain.rl.rollout import collect
    from memtrain.tasks.taskset import load_tasks

    torch.set_num_threads(args.threads)
    engine = build_engine(EngineConfig(), "smollm2")
    p = prompts.get_prompts("micro")
    agent = AgentConfig(chunk_tokens=24, memory_tokens=32, answer_tokens=16, prompt_version="micro",
                        answer_mode="lenient")
    greedy = Sampling(max_new_tokens=16)
    four = Sampling(max_new_tokens=16, temperature=0.7, top_p=0.9, seed=1)
    rows = []
    for path in args.tasks:
        tasks = load_tasks(path)[: args.n]
        kind = tasks[0].kind

        def score(texts: list[str], per: int, tasks=tasks) -> list[float]:
            return [answer_reward(t, tasks[i // per].answers, "sub_em", "lenient")
                    for i, t in enumerate(texts)]

        ways: dict[str, list[list[dict[str, str]]]] = {
            "full context": [prompts.user(p.full_context.format(document=" ".join(t.chunks),
                                                                 problem=t.problem)) for t in tasks]}
        if kind == "qa":
            docs = [t.meta["doc_keys"] for t in tasks]
            gold = []
            for t, keys in zip(tasks, docs, strict=True):
                text = " ".join(t.chunks)
                # the gold sentence as rendered: between its "Document k:" header and the next one
                k = t.meta["gold_positions"][0]
                part = text.split(f"Document {k}:", 1)[1].split(f"Document {k + 1}:", 1)[0]
                gold.append(part.strip())
                assert len(keys) == t.meta["n_docs_built"]
            ways["oracle memory"] = [prompts.user(p.final.format(memory=g, problem=t.problem))
                                     for g, t in zip(gold, tasks, strict=True)]
        else:  # E2E: the best a memory can hold is the masked text around the entity itself
            ways["oracle memory"] = [prompts.user(p.final.format(
                memory=next(c for c in t.chunks if prompts.MASK in c), problem=t.problem)) for t in tasks]
        for way, convs in ways.items():
            t0 = time.perf_counter()
            g = score([c.text for c in engine.generate(convs, greedy)], 1)
            s = score([c.text for c in engine.generate([c for c in convs for _ in range(4)], four)], 4)
            rows.append({"tasks": path, "kind": kind, "way": way, "n": len(tasks), "greedy": sum(g),
                         "sampled": sum(s), "samples": len(s), "groups_with_signal": signal(s, 4),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
        if args.skip_agent:
            continue
        t0 = time.perf_counter()
        for name, cfg in (("greedy", RolloutConfig(g1=1, g2=1, imr=False, reward="sub_em", temperature=1e-6)),
                          ("sampled", RolloutConfig(g1=4, g2=1, imr=False, reward="sub_em", temperature=0.7,
                                                    top_p=0.9))):
            r = collect(engine, tasks, agent, cfg, seed=1)
            if name == "greedy":
                agent_greedy = sum(r.answer_rewards)
            else:
                s = list(r.answer_rewards)
        rows.append({"tasks": path, "kind": kind, "way": "agent", "n": len(tasks), "greedy": agent_greedy,
                     "sampled": sum(s), "samples": len(s), "groups_with_signal": signal(s, 4),
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| task set | way | greedy right | sampled right | groups with signal | seconds |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['tasks']} | {r['way']} | {r['greedy']:.0f}/{r['n']} | {r['sampled']:.0f}/{r['samples']} "
              f"| {r['groups_with_signal']}/{r['n']} ({100 * r['groups_with_signal'] / r['n']:.0f} %) "
              f"| {r['seconds']} |" for r in rows]
    out.with_suffix(".md").write_text(
        "# Step-0 probe of the micro tasks (SmolLM2-135M, lenient sub-EM)\n\n"
        f"`python experiments/micro_qa_probe.py --tasks {' '.join(args.tasks)} --n {args.n}"
        f"{' --skip-agent' if args.skip_agent else ''}`\n\n"
        + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
