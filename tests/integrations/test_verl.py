"""memtrain on veRL 0.9 (installed by the project's install script, so these run in CI).

- the agent loop, built the way veRL builds it, returns memtrain's conversations with the chat template's
  token ids, the coupled reward and ``reward_extra_info``;
- parity: veRL's own ``compute_advantage_for_multi_trajectories`` on the rows memtrain's worker stores gives
  the advantages memtrain's trainer computes from the same rewards (E2E broadcast, IMR groups apart);
- bad rows fail with a clear error; the parquet export is read by veRL's dataset; the config writer's keys
  are real veRL keys and carry the paper's values.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

verl = pytest.importorskip("verl")  # the install script installs it; skip only outside the project venv

import hydra  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from helpers import make_tasks, write_taskset  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, _agent_loop_registry  # noqa: E402
from verl.protocol import DataProto  # noqa: E402
from verl.trainer.ppo.core_algos import AdvantageEstimator  # noqa: E402
from verl.trainer.ppo.v1 import agent_loop_tq  # noqa: E402
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402

from memtrain import prompts  # noqa: E402
from memtrain.agent.engine import HFEngine  # noqa: E402
from memtrain.agent.loop import AgentConfig  # noqa: E402
from memtrain.errors import MemtrainError  # noqa: E402
from memtrain.integrations.verl import agent_loop as loops  # noqa: E402
from memtrain.integrations.verl import export, worker  # noqa: E402
from memtrain.integrations.verl.reward import compute_score  # noqa: E402
from memtrain.rl import rewards  # noqa: E402
from memtrain.rl.config import RolloutConfig  # noqa: E402
from memtrain.rl.rollout import collect  # noqa: E402
from memtrain.rl.rows import build_rows  # noqa: E402

AGENT = AgentConfig(chunk_tokens=64, memory_tokens=6, answer_tokens=5, max_chunks=3)
ROLLOUT = RolloutConfig(g1=4, g2=3, lambda_imr=0.5)


def verl_config():
    from importlib.resources import files

    cfg = OmegaConf.load(str(files("verl.trainer.config") / "_generated_ppo_trainer.yaml"))
    cfg.actor_rollout_ref.rollout.name = "vllm"
    cfg.algorithm.adv_estimator = "grpo"
    return cfg


class TinyServer:
    """veRL's token-in/token-out server manager, backed by the tiny HF model (sampling, seeded per call)."""

    def __init__(self, model, tok):
        self.model, self.tok, self.calls = model, tok, []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        self.calls.append((list(prompt_ids), dict(sampling_params)))
        torch.manual_seed(len(self.calls))
        ids = torch.tensor([prompt_ids])
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                      max_new_tokens=sampling_params["max_tokens"],
                                      temperature=sampling_params["temperature"],
                                      pad_token_id=self.tok.pad_token_id)
        return TokenOutput(token_ids=out[0, ids.shape[1]:].tolist(), stop_reason="completed")


def row_of(task, index=0):
    return export.task_rows([task])[0] | {
        "uid": str(uuid.uuid4()), "global_steps": 1, "index": index}


def make_loop(name, server, tok, cfg=None):
    entry = {**_agent_loop_registry[name], "agent": AGENT.__dict__, "rollout": ROLLOUT.__dict__, "seed": 3}
    cfg = cfg or verl_config()
    return hydra.utils.instantiate(entry, trainer_config=DictConfigWrap(cfg), server_manager=server,
                                   tokenizer=tok, processor=None, hf_model_type="llama", dataset_cls=None,
                                   data_config=DictConfigWrap(cfg.data), tools=None)


SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": False}


def template_ids(tok, messages):
    return tok(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
               add_special_tokens=False)["input_ids"]


def test_agent_loop_returns_memtrain_conversations_with_template_ids_and_rewards(tiny):
    model, tok = tiny
    task = make_tasks(1)[0]
    server = TinyServer(model, tok)
    loop = make_loop(loops.MEMTRAIN_LOOP, server, tok)
    outs = asyncio.run(loop.run(SAMPLING, **row_of(task), session_id=1))

    kinds = [o.extra_fields["kind"] for o in outs]
    assert kinds == ["update"] * 3 + ["imr"] * ROLLOUT.g2 + ["final"]
    text = [tok.decode(o.response_ids, skip_special_tokens=True).strip() for o in outs]
    # every prompt is memtrain's template through the chat template, memories chained and cut to budget
    memory = prompts.NO_MEMORY
    for t in range(3):
        want = template_ids(tok, prompts.update_messages(task.problem, memory, task.chunks[t]))
        assert outs[t].prompt_ids == want
        assert len(outs[t].response_ids) <= AGENT.memory_tokens
        memory = text[t]
    assert outs[-1].prompt_ids == template_ids(tok, prompts.final_messages(task.problem, memory))
    imr_prompt = tok.decode(outs[3].prompt_ids)
    assert prompts.TARGET in imr_prompt and all(o.prompt_ids == outs[3].prompt_ids for o in outs[3:6])
    # per-turn budgets reach the server; veRL's own sampling parameters are kept
    budgets = [p["max_tokens"] for _, p in server.calls]
    assert budgets == [AGENT.memory_tokens] * 3 + [AGENT.answer_tokens] * (1 + ROLLOUT.g2)
    assert all(p["temperature"] == 1.0 and p["top_k"] == -1 for _, p in server.calls)
    # the coupled reward, recomputed from the decoded texts with memtrain's reward functions
    e2e = rewards.answer_reward(text[-1], task.answers)
    assert outs[-1].reward_score == pytest.approx(
        e2e + ROLLOUT.lambda_imr / ROLLOUT.g2 * sum(o.extra_fields["imr_reward"] for o in outs[3:6]))
    infos = [o.extra_fields["reward_extra_info"] for o in outs]
    assert all(set(i) == set(infos[-1]) for i in infos)  # veRL stacks these across rows
    assert infos[-1]["coupled_reward"] == outs[-1].reward_score and infos[-1]["e2e_reward"] == e2e
    assert [i["row_reward"] for i in infos[3:6]] == [o.extra_fields["imr_reward"] for o in outs[3:6]]


def test_memagent_loop_reads_qa_rows_without_imr(tiny):
    model, tok = tiny
    qa = make_tasks(1)[0]
    qa.kind, qa.imr = "qa", []
    loop = make_loop(loops.MEMAGENT_LOOP, TinyServer(model, tok), tok)
    outs = asyncio.run(loop.run(SAMPLING, **row_of(qa), session_id=0))
    assert [o.extra_fields["kind"] for o in outs] == ["update"] * 3 + ["final"]
    # and the MemTrain loop refuses a QA row instead of training it as an E2E task
    with pytest.raises(MemtrainError, match="agent_name"):
        asyncio.run(make_loop(loops.MEMTRAIN_LOOP, TinyServer(model, tok), tok).run(SAMPLING, **row_of(qa)))


@pytest.mark.parametrize("breakage, message", [("no_chunks", "no chunks"), ("empty_answer", "empty answer"),
                                               ("no_task", "extra_info.task")])
def test_bad_rows_give_clear_errors(tiny, breakage, message):
    model, tok = tiny
    task = make_tasks(1)[0]
    if breakage == "no_chunks":
        task.chunks, task.imr = [], []
    if breakage == "empty_answer":
        task.answers = [" "]
    row = row_of(task, index=7)
    if breakage == "no_task":
        del row["extra_info"]["task"]
    with pytest.raises(MemtrainError, match=message) as e:
        asyncio.run(make_loop(loops.MEMTRAIN_LOOP, TinyServer(model, tok), tok).run(SAMPLING, **row))
    assert "index=7" in str(e.value)


class CapturedPut:
    def __init__(self):
        self.keys, self.fields = [], []

    async def __call__(self, keys, fields, tags, partition_id):
        self.keys += keys
        self.fields += [fields[i] for i in range(len(keys))]


def store_rows(monkeypatch, worker_cls, sessions, uid, validate=False):
    """Push each session's outputs through a worker's postprocess; return the TransferQueue rows."""
    cap = CapturedPut()
    monkeypatch.setattr(agent_loop_tq.tq, "async_kv_batch_put", cap)
    w = object.__new__(worker_cls)  # a Ray actor class: skip __init__ (model config, TQ client)
    w.config, w.tokenizer, w.processor = verl_config(), None, None
    w.reward_loop_worker_handles, w.distillation_enabled = None, False
    for sid, outs in enumerate(sessions):
        asyncio.run(w._agent_loop_postprocess(outs, validate, uid=uid, session_id=sid, global_steps=1,
                                              index=0))
    return cap


def verl_advantages(cap, n):
    rm = torch.nn.utils.rnn.pad_sequence([f["rm_scores"] for f in cap.fields], batch_first=True)
    mask = torch.nn.utils.rnn.pad_sequence([f["response_mask"] for f in cap.fields], batch_first=True)
    data = DataProto.from_dict(tensors={"token_level_rewards": rm, "response_mask": mask},
                               non_tensors={"uid": np.array([f["uid"] for f in cap.fields], dtype=object)})
    data = compute_advantage_for_multi_trajectories(data, batch_keys=cap.keys, num_repeat=n,
                                                    adv_estimator=AdvantageEstimator.GRPO,
                                                    norm_adv_by_std_in_grpo=False)
    return [float(a[m.bool()][0]) if m.any() else 0.0 for a, m in zip(data.batch["advantages"], mask,
                                                                                  strict=True)]


@pytest.fixture
def informative(monkeypatch):
    """Rewards a random tiny model can earn: answer = 1 for an even-length response, IMR = 1 when divisible
    by 3 (deterministic in the sampled tokens, varied within groups)."""
    monkeypatch.setattr(rewards, "answer_reward", lambda text, golds, *_: float(len(text) % 2 == 0))
    monkeypatch.setattr(rewards, "imr_reward", lambda text, answer, *_: float(len(text) % 3 == 0))


def test_verl_grpo_on_memtrain_rows_equals_memtrain_advantages(tiny, monkeypatch, informative):
    model, tok = tiny
    task = make_tasks(1)[0]
    r = collect(HFEngine(model, tok, batch_size=16), [task], AGENT, ROLLOUT, seed=5)
    assert len(set(r.rewards)) > 1 and any(len(set(q.rewards)) > 1 for q in r.imr)  # informative groups
    scored = [loops.ScoredTrajectory(tr, q, a, s, R) for tr, q, a, s, R in
              zip(r.trajectories, r.imr, r.answer_rewards, r.answer_strict, r.rewards, strict=True)]
    uid = str(uuid.uuid4())
    cap = store_rows(monkeypatch, worker.MemTrainWorkerTQ, [loops.to_outputs(s) for s in scored], uid)
    got = verl_advantages(cap, ROLLOUT.g1)

    rows, _ = build_rows(r, "none", dapo_filter=False)
    want_e2e = [row.advantage for row in rows if row.kind != "imr"]  # trajectory by trajectory, turn by turn
    want_imr = [row.advantage for row in rows if row.kind == "imr"]  # probe by probe, answer by answer
    kinds = [f["extra_fields"]["kind"] for f in cap.fields]
    got_e2e = [a for a, k in zip(got, kinds, strict=True) if k != "imr"]
    got_imr = [a for a, k in zip(got, kinds, strict=True) if k == "imr"]
    assert got_e2e == pytest.approx(want_e2e, abs=1e-6) and got_imr == pytest.approx(want_imr, abs=1e-6)
    # IMR answers are their own groups: one per session's IMR prompt, never the document's
    groups = {f["uid"] for f, k in zip(cap.fields, kinds, strict=True) if k == "imr"}
    assert groups == {f"{uid}-s{s}-imr0" for s in range(ROLLOUT.g1)}
    assert all(key.split("_")[0] == uid for key in cap.keys)  # the replay buffer still sees one prompt

    # stock v1 instead gives every IMR answer its trajectory's E2E advantage
    stock = store_rows(monkeypatch, worker._WorkerTQ, [loops.to_outputs(s) for s in scored], uid)
    stock_adv = verl_advantages(stock, ROLLOUT.g1)
    stock_kinds = [f["extra_fields"]["kind"] for f in stock.fields]
    stock_imr = [a for a, k in zip(stock_adv, stock_kinds, strict=True) if k == "imr"]
    assert stock_imr != pytest.approx(want_imr, abs=1e-6)


def test_validation_rows_drop_imr_answers(tiny, monkeypatch):
    model, tok = tiny
    r = collect(HFEngine(model, tok, batch_size=16), make_tasks(1), AGENT, RolloutConfig(g1=1, g2=2), seed=1)
    outs = loops.to_outputs(loops.ScoredTrajectory(r.trajectories[0], r.imr[0], 0.0, 0.0, 0.0))
    cap = store_rows(monkeypatch, worker.MemTrainWorkerTQ, [outs], "u1", validate=True)
    assert [f["extra_fields"]["kind"] for f in cap.fields] == ["update"] * 3 + ["final"]
    with pytest.raises(ValueError, match="'_'"):
        worker.row_plan(outs, "bad_uid", 0, False)


def test_parquet_export_is_read_by_verls_dataset(tmp_path, tokenizer):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    tasks = make_tasks(3)
    path = tmp_path / "train.parquet"
    export.write_parquet(path, export.task_rows(tasks, reward="sub_em"))
    data_cfg = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 4096,
                                 "filter_overlong_prompts": False, "return_raw_chat": True,
                                 "cache_dir": str(tmp_path / "cache")})
    ds = RLHFDataset(data_files=[str(path)], tokenizer=tokenizer, config=data_cfg)
    assert len(ds) == 3
    row = ds[2]
    assert row["index"] == 2 and row["agent_name"] == loops.MEMTRAIN_LOOP
    assert row["raw_prompt"] == [{"role": "user", "content": tasks[2].problem}]
    assert loops.task_from_row(row, "e2e") == tasks[2]  # the whole task survives the round trip
    # the reward function for rows scored outside the loop scores like memtrain, with the row's settings
    extra = row["extra_info"]
    assert compute_score(row["data_source"], "It is \\boxed{Paris}.", "Paris", extra)["score"] == 1.0
    assert compute_score(row["data_source"], "\\boxed{Paris, France}", "Paris", extra) == {"score": 1.0,
                                                                                            "strict_em": 0.0}
    assert compute_score(row["data_source"], "no box", "Paris", extra)["score"] == 0.0


def test_verl_config_writes_real_verl_keys_with_the_paper_values(tmp_path):
    from memtrain.cli import main

    tasks_dir = write_taskset(tmp_path / "tasks", make_tasks(6))
    out = tmp_path / "verl"
    assert main(["verl-config", "paper_memtrain_qwen3_4b", "model.name=smollm2",
                 f"data.tasks_dir={tasks_dir}", "data.eval_size=2", f"out={out}", "mini_batch_size=8"]) == 0
    ov = json.loads((out / "overrides.json").read_text())
    paper = {"actor_rollout_ref.rollout.n": 8, "algorithm.norm_adv_by_std_in_grpo": False,
             "actor_rollout_ref.actor.loss_agg_mode": "seq-mean-token-mean",
             "actor_rollout_ref.actor.clip_ratio_low": 0.2, "actor_rollout_ref.actor.clip_ratio_high": 0.28,
             "actor_rollout_ref.actor.use_kl_loss": True, "actor_rollout_ref.actor.kl_loss_coef": 0.001,
             "actor_rollout_ref.actor.kl_loss_type": "low_var_kl", "data.train_batch_size": 32,
             "actor_rollout_ref.actor.ppo_mini_batch_size": 8, "actor_rollout_ref.actor.optim.lr": 1e-6,
             "trainer.total_training_steps": 300, "algorithm.adv_estimator": "grpo",
             "algorithm.filter_groups.enable": True, "trainer.use_v1": True}
    assert {k: ov[k] for k in paper} == paper
    # every key is one of veRL's own (struct merge refuses unknown keys), except the documented '+' addition
    base = verl_config()
    OmegaConf.set_struct(base, True)
    dotlist = [f"{k}={json.dumps(v) if isinstance(v, list | bool) else v}" for k, v in ov.items()
               if not k.startswith("+")]
    merged = OmegaConf.merge(base, OmegaConf.from_dotlist(dotlist))
    assert merged.actor_rollout_ref.rollout.n == 8
    # the prompt bound covers an update prompt of a full chunk and a full memory of this tokenizer
    assert ov["data.max_prompt_length"] >= 64 + 1024  # chunk_tokens of the task set + memory_tokens
    registry = OmegaConf.load(out / "agent_loops.yaml")
    entry = next(e for e in registry if e.name == loops.MEMTRAIN_LOOP)
    assert entry.agent.chunk_tokens == 64 and entry.rollout.g2 == 8 and entry.agent.prompt_version == "paper"
    rows = __import__("pyarrow.parquet", fromlist=["x"]).read_table(out / "train.parquet").to_pylist()
    assert len(rows) == 4 and {r["agent_name"] for r in rows} == {loops.MEMTRAIN_LOOP}
    assert (out / "run.sh").read_text().count("=") >= len(ov)


class ScriptedServer:
    """Answers each call with the next scripted text (as token ids), recording the prompts it saw."""

    def __init__(self, tok, texts):
        self.tok, self.texts, self.prompts = tok, list(texts), []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        self.prompts.append(self.tok.decode(prompt_ids))
        return TokenOutput(token_ids=self.tok.encode(self.texts.pop(0), add_special_tokens=False))


def test_search_loop_runs_the_mem1_episode_with_the_objective_reward(tokenizer, monkeypatch):
    from memtrain.records import Hit, MemTask

    class FakeSearch:
        def search(self, queries, topk=None):
            hit = Hit.from_contents("d1", '"Paris"\nParis is the capital of France.', 1.0)
            return [[hit] for _ in queries]

    monkeypatch.setattr(loops, "searcher", lambda cfg: FakeSearch())
    objs = [{"qid": "1", "question": "What is the capital of France?", "answers": ["Paris"]},
            {"qid": "2", "question": "Which river flows through Paris?", "answers": ["Seine", "the Seine"]}]
    task = MemTask(id="s0", kind="search", problem="; ".join(o["question"] for o in objs), chunks=[],
                   answers=["Paris; Seine"], meta={"objectives": objs})
    server = ScriptedServer(tokenizer, ["<think>need the capital</think><search>capital of France</search>",
                                        "<think>Paris</think><answer>Paris; the Seine</answer>"])
    entry = {**_agent_loop_registry[loops.SEARCH_LOOP], "rollout": ROLLOUT.__dict__, "seed": 0,
             "search": {"max_turns": 3, "response_tokens": 64, "memory_tokens": 16, "info_tokens": 64}}
    cfg = verl_config()
    loop = hydra.utils.instantiate(entry, trainer_config=DictConfigWrap(cfg), server_manager=server,
                                   tokenizer=tokenizer, processor=None, hf_model_type="llama",
                                   dataset_cls=None, data_config=DictConfigWrap(cfg.data), tools=None)
    row = export.task_rows([task], reward="em")[0] | {"uid": "u", "global_steps": 1, "index": 0}
    outs = asyncio.run(loop.run(SAMPLING, **row, session_id=0))
    assert [o.extra_fields["kind"] for o in outs] == ["search", "answer"]
    assert "<information>" in server.prompts[1] and "Paris is the capital of France." in server.prompts[1]
    assert outs[-1].reward_score == 1.0  # both objectives right (an alias for the second)
    # rows scored outside the loop get the same reward from the row's objectives
    extra = row["extra_info"]
    assert compute_score(row["data_source"], "<answer>Paris; Seine</answer>", None, extra)["score"] == 1.0
    assert compute_score(row["data_source"], "<answer>Seine; Paris</answer>", None, extra)["score"] == 0.0
    assert compute_score(row["data_source"], "<answer>Paris</answer>", None, extra)["score"] == 0.0
