"""The step-0 check behind the micro setting: can SmolLM2-135M answer IMR probes at all, and with which words?

    python experiments/micro_probe.py [--tasks data/e2e_micro] [--answer-tokens 16]

For 32 IMR probes of the task set (the first probeable chunk of each task, the candidate hidden as
[TARGET]), the memory is the *unmasked chunk itself* (an oracle: the best a memory can do) and each IMR
wording is asked greedily and with 4 samples (T 0.7, top-p 0.9). A GRPO group has signal when some but not
all of its 4 samples are right (sub-EM, lenient answers). Prints one line per wording.
"""

from __future__ import annotations

import argparse
import random

WORDINGS = {
    "notes": "Notes: {memory}\n\nText: {chunk}\n\nWhich word or name does [TARGET] stand for? "
             "Answer with just the name.",
    "hides (micro)": "{memory}\n\nIn the sentence below, [TARGET] hides a name from the text above.\n"
                     "{chunk}\n\nWhat is [TARGET]? Answer with just the name.",
    "fill-in": "Read: {memory}\n\nFill in the blank [TARGET]: {chunk}\n\nThe missing word is:",
    "bare": "{memory}\n\n{chunk}\n\n[TARGET] = ?",
    "memory": "Memory: {memory}\n\n{chunk}\n\nWhich word or name does [TARGET] stand for? "
              "Answer with just the name.",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="data/e2e_micro")
    ap.add_argument("--answer-tokens", type=int, default=16)
    args = ap.parse_args()

    from memtrain import prompts
    from memtrain.agent.engine import Sampling
    from memtrain.agent.engines import EngineConfig, build_engine
    from memtrain.rl.rewards import imr_reward
    from memtrain.tasks.imr import maskable_chunks
    from memtrain.tasks.taskset import load_tasks

    engine = build_engine(EngineConfig(), "smollm2")
    rng = random.Random(0)
    probes = []
    for t in load_tasks(args.tasks):
        mc = maskable_chunks(t, len(t.chunks))
        if mc:
            cand, masked = rng.choice(mc[min(mc)])
            probes.append((t.chunks[min(mc) - 1], cand, masked))
        if len(probes) == 32:
            break
    print(f"| wording | greedy right | sampled right | groups with signal (of {len(probes)}) |")
    print("|---|---|---|---|")
    for name, template in WORDINGS.items():
        convs = [prompts.user(template.format(memory=chunk, chunk=masked)) for chunk, _, masked in probes]
        greedy = engine.generate(convs, Sampling(max_new_tokens=args.answer_tokens))
        four = Sampling(max_new_tokens=args.answer_tokens, temperature=0.7, top_p=0.9, seed=1)
        sampled = engine.generate([c for c in convs for _ in range(4)], four)

        def right(text: str, i: int) -> float:
            return imr_reward(text, probes[i][1].answer, probes[i][1].forms, "lenient", "sub_em")

        g = sum(right(c.text, i) for i, c in enumerate(greedy))
        s = [right(c.text, i // 4) for i, c in enumerate(sampled)]
        signal = sum(0 < sum(s[i : i + 4]) < 4 for i in range(0, len(s), 4))
        print(f"| {name} | {g:.0f}/{len(probes)} | {sum(s):.0f}/{len(s)} | {signal} |")


if __name__ == "__main__":
    main()
