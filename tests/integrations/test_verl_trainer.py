"""veRL's real trainer (``python -m verl.trainer.main_ppo``, v1, Ray local) on this CPU box, end to end.

Every run goes through ``memtrain verl-config ... device=cpu`` and the ``run.sh`` it writes: memtrain's CPU
platform and HF rollout, its agent loops and IMR-group worker, veRL's FSDP2 actor and reference, GRPO,
DAPO and checkpoints. The policy is a *coin model* (:func:`coin_model`): a 2-layer Llama whose answer to
any prompt is " Paris" or " Rome" with equal odds, so rewards vary within groups, DAPO keeps them and
the gradient has a direction (towards "Paris", the gold answer).

- MemTrain (``memtrain_memtrain``, IMR on, KL on): run A takes step 1 with DAPO off and SGD; its recorded
  rows replayed through ``memtrain train``'s update from the same weights give the same parameter change
  (parity), and the checkpoint is written; run B resumes it with DAPO on for steps 2-3, and the rollout
  server's log-probs at each step equal the actor's weights of that step (the sync after every update).
- MemAgent QA (``memtrain_memagent``) and search QA (``memtrain_search``): one step each.

These are slow by nature (Ray and several veRL processes per run): marked ``verl_trainer``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("verl")  # the install script installs it; skip only outside the project venv

from helpers import write_taskset  # noqa: E402

from memtrain.prompts import E2E_PROBLEM  # noqa: E402
from memtrain.records import ImrCandidate, MemTask  # noqa: E402

pytestmark = pytest.mark.verl_trainer

REPO = Path(__file__).resolve().parents[2]
LR = 0.5  # SGD: a step large enough to move the log-probs well past the sync tolerance


def coin_model(folder: Path, words: tuple[str, str] = (" Paris", " Rome")) -> Path:
    """Save a 2-layer Llama that answers any chat prompt with one of ``words`` (50/50), then stops.

    Attention and MLP outputs are zeroed, so the next token depends on the current one only (a bigram
    model); the LM head maps the assistant turn's opening newline to both words at one logit, and both
    words to the end-of-turn token. Training moves the odds; the architecture is a plain Llama.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from memtrain.models import load_tokenizer

    tok = load_tokenizer("smollm2")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()

        def normed(token: int) -> torch.Tensor:
            h = model.model.norm(model.model.embed_tokens.weight[token][None])[0]
            return h / h.dot(h)  # a head row r with r . h = 1 for this token's hidden state

        head = model.lm_head.weight
        head.zero_()
        ids = [tok.encode(w, add_special_tokens=False)[0] for w in words]
        newline = tok.encode("\n", add_special_tokens=False)[-1]
        for i in ids:
            head[i] = 16.0 * normed(newline)
        head[tok.eos_token_id] = sum(24.0 * normed(i) for i in ids)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def coin(tmp_path_factory) -> Path:
    return coin_model(tmp_path_factory.mktemp("coin") / "model")


def e2e_tasks(n: int) -> list[MemTask]:
    return [MemTask(id=f"e{i}", kind="e2e", problem=E2E_PROBLEM, answers=["Paris"],
                    chunks=["Lyon is a city in France.", "The [MASK] is the capital of France."],
                    imr=[[ImrCandidate("Lyon", ["Paris"])], []]) for i in range(n)]


def base_config(model: Path, tasks_dir: Path, out_dir: Path, **over) -> dict:
    cfg = {"model": {"name": str(model), "dtype": "fp32"},
           "data": {"tasks_dir": str(tasks_dir), "eval_size": 1},
           "agent": {"memory_tokens": 6, "answer_tokens": 4, "answer_mode": "lenient",
                     "prompt_version": "micro"},
           "rollout": {"g1": 4, "g2": 2, "temperature": 1.0, "reward": "sub_em"},
           "loss": {"kl_coef": 0.01, "dapo_filter": False},
           "optim": {"lr": LR, "warmup_steps": 0, "grad_clip": 1.0},
           "steps": 1, "batch_size": 1, "micro_batch_size": 8, "bf16": False, "gradient_checkpointing": False,
           "seed": 0, "out_dir": str(out_dir), "save_every": 1, "keep_checkpoints": 0, "eval_docs": 0}
    for key, value in over.items():
        node = cfg
        *path, leaf = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return cfg


def run_verl(tmp: Path, name: str, cfg: dict, *extra: str) -> tuple[list[dict], Path]:
    """``memtrain verl-config CFG device=cpu`` then its ``run.sh`` with ``extra`` overrides; returns the
    metrics veRL logged (one dict per step) and the folder of rows the workers stored."""
    preset = tmp / f"{name}.yaml"
    preset.write_text(yaml.safe_dump(cfg))
    out = tmp / f"verl_{name}"
    subprocess.run([sys.executable, "-m", "memtrain.cli", "verl-config", str(preset), f"out={out}",
                    "device=cpu"], check=True, cwd=tmp, capture_output=True)
    rows, metrics = tmp / f"rows_{name}", tmp / f"metrics_{name}.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "MEMTRAIN_VERL_ROWS": str(rows), "VERL_FILE_LOGGER_PATH": str(metrics),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    log = tmp / f"{name}.log"
    with open(log, "w") as f:
        res = subprocess.run(["bash", str(out / "run.sh"), "trainer.logger=[console,file]",
                              "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
                              *extra], cwd=tmp, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=1200)
    tail = log.read_text()[-4000:]
    assert res.returncode == 0, f"veRL run {name} failed (rc {res.returncode}); log tail:\n{tail}"
    steps = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [{"step": s["step"], **s["data"]} for s in steps], rows


def read_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(folder.glob("rows-*.jsonl"))
            for line in p.read_text().splitlines()]


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def response_logprobs(weights_dir: Path, rows: list[dict]) -> list[list[float]]:
    """Each row's response log-probs under the model saved in ``weights_dir`` (temperature 1)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(weights_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["prompt_ids"] + r["response_ids"]])
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
            n = len(r["prompt_ids"])
            out.append([float(logp[n - 1 + i, t]) for i, t in enumerate(r["response_ids"])])
    return out


def memtrain_update(model_dir: Path, rows: list[dict], cfg: dict, imr_gets_e2e_advantage: bool = False
                    ) -> dict[str, torch.Tensor]:
    """The parameter change ``memtrain train``'s update makes on these rows, from the weights in
    ``model_dir``, with SGD at veRL's learning rate; advantages as memtrain's trainer computes them
    (Dr. GRPO over the document's trajectories; IMR answers over their own group)."""
    from transformers import AutoModelForCausalLM

    from memtrain.config import from_dict
    from memtrain.records import Row
    from memtrain.rl.advantages import group_advantages
    from memtrain.rl.config import TrainConfig
    from memtrain.rl.reference import make_reference
    from memtrain.rl.trainer import update

    session_reward, imr_groups = {}, defaultdict(list)
    for i, r in enumerate(rows):
        if r["kind"] == "imr":
            imr_groups[r["group"]].append(i)
        else:
            uid, session, _ = r["key"].rsplit("_", 2)
            session_reward[(uid, int(session))] = r["reward"]
    advantage = [0.0] * len(rows)
    docs = sorted({uid for uid, _ in session_reward})
    e2e_adv = {}
    for uid in docs:
        sessions = sorted(s for u, s in session_reward if u == uid)
        adv = group_advantages(torch.tensor([[session_reward[(uid, s)] for s in sessions]]), "none")[0]
        e2e_adv.update({(uid, s): float(a) for s, a in zip(sessions, adv, strict=True)})
    for i, r in enumerate(rows):
        if r["kind"] != "imr":
            uid, session, _ = r["key"].rsplit("_", 2)
            advantage[i] = e2e_adv[(uid, int(session))]
    for group, members in imr_groups.items():
        if imr_gets_e2e_advantage:  # what stock veRL v1 would train on
            uid, rest = group.split("-s", 1)
            for i in members:
                advantage[i] = e2e_adv[(uid, int(rest.split("-")[0]))]
            continue
        adv = group_advantages(torch.tensor([[rows[i]["reward"] for i in members]]), "none")[0]
        for i, a in zip(members, adv.tolist(), strict=True):
            advantage[i] = a
    batch = [Row(r["prompt_ids"], r["response_ids"], advantage[i], r["kind"], False,
                 docs.index(r["key"].split("_")[0]), r["response_logprobs"]) for i, r in enumerate(rows)]

    train_cfg = from_dict(TrainConfig, {**cfg, "batch_size": len(docs)})
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    reference = make_reference(model, train_cfg.loss.kl_coef, lora=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=train_cfg.optim.lr)
    update(model.train(), reference, batch, optimizer, train_cfg, 1, pad_id=0)
    return {k: v.detach() - before[k] for k, v in model.state_dict().items()}


def test_memtrain_recipe_through_verls_trainer_with_parity_sync_and_resume(coin, tmp_path):
    tasks = write_taskset(tmp_path / "e2e", e2e_tasks(4), chunk_tokens=16, max_chunks=2)
    cfg = base_config(coin, tasks, tmp_path / "ckpt")

    # run A: step 1 (DAPO off so veRL trains on exactly the step's rollouts; SGD so the update is linear)
    steps, rows_dir = run_verl(tmp_path, "a", cfg, "actor_rollout_ref.actor.optim.optimizer=SGD")
    assert [s["step"] for s in steps] == [1]
    a = steps[0]
    assert a["actor/kl_coef"] == pytest.approx(0.01) and "actor/kl_loss" in a  # KL to the reference is on
    assert a["training/rollout_probs_diff_max"] < 1e-4  # HF rollout log-probs = the actor's (same weights)
    rows = [r for r in read_rows(rows_dir) if r["global_steps"] == 1]
    kinds = defaultdict(int)
    for r in rows:
        kinds[r["kind"]] += 1
    assert kinds == {"update": 8, "final": 4, "imr": 8}  # 4 trajectories x (2 updates + final) + 4 x G2=2
    # IMR answers: one-row sessions in groups of their own, rewarded by R^I (not the trajectory's R^E)
    imr = [r for r in rows if r["kind"] == "imr"]
    assert all(r["group"].endswith("-imr0") and r["key"].rsplit("_", 2)[1].startswith(("1", "2", "3", "4"))
               and r["reward"] in (0.0, 1.0) for r in imr)
    assert len({r["group"] for r in imr}) == 4
    assert len({r["reward"] for r in rows if r["kind"] == "final"}) > 1  # the coin gives GRPO a signal

    ckpt1 = tmp_path / "ckpt" / "global_step_1" / "actor" / "huggingface"
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    initial, trained = load_weights(coin), load_weights(ckpt1)
    verl_delta = {k: trained[k] - initial[k] for k in initial}
    assert max(float(d.abs().max()) for d in verl_delta.values()) > 1e-3  # the weights moved

    # parity: memtrain's update on the very rows veRL trained on gives the same parameter change
    ours = memtrain_update(coin, rows, cfg)
    scale = max(float(d.abs().max()) for d in verl_delta.values())
    worst = max(float((verl_delta[k] - ours[k]).abs().max()) for k in verl_delta)
    assert worst <= 1e-3 * scale, f"max |delta_veRL - delta_memtrain| = {worst:.3g} (scale {scale:.3g})"
    stock = memtrain_update(coin, rows, cfg, imr_gets_e2e_advantage=True)
    assert max(float((verl_delta[k] - stock[k]).abs().max()) for k in verl_delta) > 10 * max(worst, 1e-9)

    # run B: resume from the checkpoint with DAPO on; steps 2 and 3 sample from the synced weights
    cfg_b = base_config(coin, tasks, tmp_path / "ckpt", steps=3, **{"loss.dapo_filter": True})
    steps_b, rows_dir_b = run_verl(tmp_path, "b", cfg_b, "actor_rollout_ref.actor.optim.optimizer=SGD")
    assert [s["step"] for s in steps_b] == [2, 3]  # resumed at step 2, not from scratch
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    rows_b = read_rows(rows_dir_b)
    for step, weights in ((2, ckpt1), (3, tmp_path / "ckpt" / "global_step_2" / "actor" / "huggingface")):
        sampled = [r for r in rows_b if r["global_steps"] == step][:12]
        assert sampled
        served = [r["response_logprobs"] for r in sampled]
        actor = response_logprobs(weights, sampled)
        stale = response_logprobs(coin, sampled)
        gap = max(abs(x - y) for s, t in zip(served, actor, strict=True) for x, y in zip(s, t, strict=True))
        moved = max(abs(x - y) for s, t in zip(served, stale, strict=True) for x, y in zip(s, t, strict=True))
        assert gap < 1e-4 < 1e-2 < moved, (step, gap, moved)


def qa_tasks(n: int) -> list[MemTask]:
    return [MemTask(id=f"q{i}", kind="qa", problem="What is the capital of France?", answers=["Paris"],
                    chunks=["Lyon is a city in France.", "Paris is the capital of France."], imr=[[], []])
            for i in range(n)]


def test_memagent_qa_step_through_verls_trainer(coin, tmp_path):
    tasks = write_taskset(tmp_path / "qa", qa_tasks(3), chunk_tokens=16, max_chunks=2)
    cfg = base_config(coin, tasks, tmp_path / "ckpt", **{"rollout.g1": 4, "rollout.imr": False,
                                                         "loss.dapo_filter": True})
    steps, rows_dir = run_verl(tmp_path, "qa", cfg)
    assert [s["step"] for s in steps] == [1]
    rows = read_rows(rows_dir)
    assert {r["kind"] for r in rows} == {"update", "final"}  # no IMR in the MemAgent loop
    finals = [r["reward"] for r in rows if r["kind"] == "final"]
    assert set(finals) == {0.0, 1.0}  # DAPO kept an informative group
    assert (tmp_path / "ckpt" / "global_step_1" / "actor").is_dir()


def test_search_qa_step_through_verls_trainer(coin, tmp_path):
    """The MEM1 loop under veRL: a BM25 retriever built inside the Ray worker, every turn a row. The coin
    model writes no ``<answer>`` tag, so every episode ends invalid at reward 0 (DAPO off): this run checks
    the plumbing, the in-process tests check the episode and its reward."""
    from memtrain.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    passages = ['"Paris"\nParis is the capital of France.', '"Nile"\nThe Nile is a river in Africa.']
    (corpus / "passages.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "contents": c}) + "\n"
                                                   for i, c in enumerate(passages)))
    questions = tmp_path / "nq.jsonl"
    questions.write_text("".join(json.dumps({"question": f"what is the capital of france {i}",
                                             "answer": ["Paris"]}) + "\n" for i in range(6)))
    tasks = tmp_path / "search"
    assert main(["data", "build", "kind=searchqa", f"out={tasks}", f"searchqa.paths={{nq: {questions}}}",
                 "searchqa.sources=[nq]", "searchqa.split=train", "searchqa.n_objectives=1",
                 "searchqa.eval_fraction=0.34", f"searchqa.corpus={corpus}"]) == 0
    cfg = base_config(coin, tasks, tmp_path / "ckpt", **{"rollout.g1": 2, "rollout.imr": False,
                                                         "data.eval_size": 2})
    cfg["search"] = {"max_turns": 2, "response_tokens": 8, "memory_tokens": 4, "info_tokens": 16}
    cfg["retriever"] = {"kind": "bm25", "corpus": str(corpus), "topk": 1}
    steps, rows_dir = run_verl(tmp_path, "search", cfg)
    assert [s["step"] for s in steps] == [1]
    rows = read_rows(rows_dir)
    assert len(rows) == 2 and {r["kind"] for r in rows} == {"invalid"}  # G = 2 one-turn episodes
    assert all(r["reward"] == 0.0 for r in rows)
