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
from memtrain.config import CONFIGS, from_dict, load_config  # noqa: E402
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


def verl_compose(overrides: dict) -> OmegaConf:
    """veRL's trainer config as ``python -m verl.trainer.main_ppo`` composes it from these overrides."""
    from importlib.resources import files

    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(files("verl.trainer.config")), version_base=None):
        return compose("ppo_trainer",
                       overrides=[f"{k}={export.hydra_value(v)}" for k, v in overrides.items()])


def validate_with_verl(overrides: dict) -> OmegaConf:
    """Run veRL's own config check (the first thing main_ppo does) on the composed config."""
    from verl.trainer.main_ppo import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    config = verl_compose(overrides)
    validate_config(config, use_reference_policy=need_reference_policy(config),
                    use_critic=need_critic(config))
    return config


TRAIN_PRESETS = sorted(p.stem for p in (CONFIGS / "train").glob("*.yaml"))


@pytest.mark.parametrize("device", ["gpu", "cpu"])
@pytest.mark.parametrize("preset", TRAIN_PRESETS)
def test_every_train_preset_passes_verls_config_check(preset, device):
    """The generated command composes with veRL's config and passes ``validate_config`` (failed before: no
    log-prob micro-batch keys; the mini-batch counted documents where veRL counts rows)."""
    cfg = load_config(export.VerlConfig, "train", preset, [f"device={device}"])
    rows = 8 + 1 + 8  # a paper-length trajectory: 8 updates, the final answer, G2 = 8 IMR answers
    ov = export.verl_overrides(cfg, 7000, 1024, "train.parquet", "val.parquet", "loops.yaml", "reward.py",
                               loops.MEMTRAIN_LOOP, rows_per_session=rows)
    config = validate_with_verl(ov)
    actor = config.actor_rollout_ref.actor
    # the same optimizer steps per rollout batch as `memtrain train`: mini_batch_size documents per step
    docs = cfg.mini_batch_size or cfg.batch_size
    rollout_rows = cfg.batch_size * cfg.rollout.g1 * rows
    assert rollout_rows // (actor.ppo_mini_batch_size * config.actor_rollout_ref.rollout.n) == \
        cfg.batch_size // docs
    assert config.actor_rollout_ref.rollout.logprobs_mode == "processed_logprobs"
    assert config.actor_rollout_ref.rollout.name == ("hf" if device == "cpu" else "vllm")
    assert config.actor_rollout_ref.model.path not in ("smollm2", "tiny")  # a folder or a hub id veRL loads


def test_verl_config_maps_or_refuses_every_setting(tmp_path):
    """Model aliases resolve to the folder veRL loads; settings veRL cannot honour are refused by name."""
    from memtrain.models import embedded_model_dir

    cfg = from_dict(export.VerlConfig, {"model": {"name": "smollm2"}, "loss": {"mask_truncated": True},
                                        "eval_docs": 0, "data": {"tasks_dir": "x"}})
    ov = export.verl_overrides(cfg, 512, 64, "t", "v", "l", "r", loops.MEMAGENT_LOOP)
    assert ov["actor_rollout_ref.model.path"] == str(embedded_model_dir())
    assert ov["trainer.test_freq"] == -1 and ov["trainer.val_before_train"] is False  # eval_docs=0: no eval
    for bad, message in [({"engine": {"kind": "openai", "base_url": "http://x"}}, "engine.kind=openai"),
                         ({"model": {"name": "tiny"}}, "built in process"),
                         ({"device": "cpu", "rollout_name": "vllm"}, "needs a GPU"),
                         ({"model": {"lora": {"enabled": True, "dropout": 0.1}}}, "lora.dropout")]:
        with pytest.raises(MemtrainError, match=message):
            export.verl_overrides(from_dict(export.VerlConfig, {**bad, "data": {"tasks_dir": "x"}}), 512, 64,
                                  "t", "v", "l", "r", loops.MEMAGENT_LOOP)


def test_truncated_responses_are_masked_out_of_verls_loss_when_asked(tiny):
    model, tok = tiny
    r = collect(HFEngine(model, tok, batch_size=16), make_tasks(1), AGENT, RolloutConfig(g1=1, g2=2), seed=1)
    scored = loops.ScoredTrajectory(r.trajectories[0], r.imr[0], 0.0, 0.0, 0.0)
    *updates, final = [t.completion for t in r.trajectories[0].turns]
    in_output_order = [*updates, *r.imr[0].completions, final]
    for i, c in enumerate(in_output_order):  # every other response cut at its budget
        c.finish_reason = "length" if i % 2 else "stop"
    kept = [any(o.response_mask) for o in loops.to_outputs(scored)]
    masked = [any(o.response_mask) for o in loops.to_outputs(scored, mask_truncated=True)]
    assert all(kept) and masked == [i % 2 == 0 for i in range(len(in_output_order))]


def test_verl_config_writes_the_run_with_the_paper_values(tmp_path):
    from memtrain.cli import main

    tasks_dir = write_taskset(tmp_path / "tasks", make_tasks(6))
    out = tmp_path / "verl"
    assert main(["verl-config", "paper_memtrain_qwen3_4b", "model.name=smollm2",
                 f"data.tasks_dir={tasks_dir}", "data.eval_size=2", f"out={out}", "mini_batch_size=1"]) == 0
    ov = json.loads((out / "overrides.json").read_text())
    rows = 3 + 1 + 8  # the tasks' 3 chunks, the final answer, G2 = 8 IMR answers
    paper = {"actor_rollout_ref.rollout.n": 8, "algorithm.norm_adv_by_std_in_grpo": False,
             "actor_rollout_ref.actor.loss_agg_mode": "seq-mean-token-mean",
             "actor_rollout_ref.actor.clip_ratio_low": 0.2, "actor_rollout_ref.actor.clip_ratio_high": 0.28,
             "actor_rollout_ref.actor.use_kl_loss": True, "actor_rollout_ref.actor.kl_loss_coef": 0.001,
             "actor_rollout_ref.actor.kl_loss_type": "low_var_kl", "data.train_batch_size": 32,
             "actor_rollout_ref.actor.ppo_mini_batch_size": rows, "actor_rollout_ref.actor.optim.lr": 1e-6,
             "trainer.total_training_steps": 300, "algorithm.adv_estimator": "grpo",
             "algorithm.filter_groups.enable": True, "trainer.use_v1": True}
    assert {k: ov[k] for k in paper} == paper
    validate_with_verl(ov)
    # the prompt bound covers an update prompt of a full chunk and a full memory of this tokenizer
    assert ov["data.max_prompt_length"] >= 64 + 1024  # chunk_tokens of the task set + memory_tokens
    registry = OmegaConf.load(out / "agent_loops.yaml")
    entry = next(e for e in registry if e.name == loops.MEMTRAIN_LOOP)
    assert entry.agent.chunk_tokens == 64 and entry.rollout.g2 == 8 and entry.agent.prompt_version == "paper"
    rows = __import__("pyarrow.parquet", fromlist=["x"]).read_table(out / "train.parquet").to_pylist()
    assert len(rows) == 4 and {r["agent_name"] for r in rows} == {loops.MEMTRAIN_LOOP}
    script = (out / "run.sh").read_text()
    assert script.count("=") >= len(ov) and script.rstrip().endswith('"$@"')


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
    assert outs[-1].reward_score == 2.0  # both objectives right (an alias for the second), summed (MEM1)
    # rows scored outside the loop get the same reward from the row's objectives; "em" stays the mean
    extra = row["extra_info"]
    assert compute_score(row["data_source"], "<answer>Paris; Seine</answer>", None, extra) == {"score": 2.0,
                                                                                               "em": 1.0}
    assert compute_score(row["data_source"], "<answer>Paris; Rhine</answer>", None, extra) == {"score": 1.0,
                                                                                               "em": 0.5}
    assert compute_score(row["data_source"], "<answer>Seine; Paris</answer>", None, extra)["score"] == 0.0
    assert compute_score(row["data_source"], "<answer>Paris</answer>", None, extra)["score"] == 0.0


def test_registry_entries_from_agent_loops_yaml_survive_the_loop_module_import(monkeypatch):
    """veRL's worker loads agent_loops.yaml, then imports the loop module on the first session; the entry
    must keep the run's settings (veRL's own ``register`` replaced it: sessions after the first ran with
    default budgets, G2 and rewards)."""
    import importlib

    from verl.experimental.agent_loop import agent_loop as verl_loops

    entry = OmegaConf.create({"name": loops.MEMTRAIN_LOOP, "_target_": f"{loops.__name__}.MemTrainAgentLoop",
                              "rollout": {"g2": 2}})
    monkeypatch.setitem(verl_loops._agent_loop_registry, loops.MEMTRAIN_LOOP, entry)
    importlib.reload(loops)
    assert verl_loops._agent_loop_registry[loops.MEMTRAIN_LOOP]["rollout"]["g2"] == 2


def test_the_imr_worker_class_survives_rays_pickling_in_a_fresh_process():
    """Ray ships the worker class to a new process; there its ``__init__`` chain must run (it failed with
    ``super(type, obj)`` when veRL's undecorated base travelled by value)."""
    import subprocess
    import sys

    import cloudpickle
    import ray

    actor_cls = ray.remote(worker.MemTrainWorkerTQ).__ray_metadata__.modified_class
    blob = cloudpickle.dumps(actor_cls)
    probe = ("import pickle, sys\n"
             "cls = pickle.loads(sys.stdin.buffer.read())\n"
             "try:\n    cls(None, None)\n"
             "except AttributeError as e:\n    print('init ran', e)\n"
             "except TypeError as e:\n    print('broken', e)\n")
    res = subprocess.run([sys.executable, "-c", probe], input=blob, capture_output=True, timeout=300)
    out = res.stdout.decode()
    assert "init ran" in out, out + res.stderr.decode()[-2000:]  # got past super().__init__ to the config


def test_outputs_carry_the_weight_versions_veRL_tags_rows_with(tokenizer):
    """veRL's step metrics read min/max_global_steps from every stored row (None failed step 1)."""
    class VersionedServer:
        calls = 0

        async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
            VersionedServer.calls += 1
            step = 3 if VersionedServer.calls == 1 else 4  # the weights changed mid-trajectory
            return TokenOutput(token_ids=tokenizer.encode("Paris", add_special_tokens=False),
                               extra_fields={"global_steps": step, "min_global_steps": step,
                                             "max_global_steps": step})

    gen = loops.ServerGenerator(VersionedServer(), tokenizer, {"temperature": 1.0})
    convs = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    asyncio.run(gen.complete(convs, loops.Sampling(max_new_tokens=4)))
    assert gen.weight_steps(default=0) == {"min_global_steps": 3, "max_global_steps": 4}
    assert loops.ServerGenerator(None, tokenizer, {}).weight_steps(default=5) == {"min_global_steps": 5,
                                                                                 "max_global_steps": 5}


def test_hf_rollout_batches_requests_with_tempered_logprobs_and_synced_weights(tiny, tmp_path):
    """The ``hf`` rollout server: concurrent requests are generated together; log-probs are the sampling
    distribution's (logits / T), as veRL's actor computes them; pushed weights are used at once."""
    from memtrain.integrations.verl import hf_rollout

    model, tok = tiny
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    server = hf_rollout.HFRolloutServer.__ray_metadata__.modified_class.__ray_actor_class__(
        str(tmp_path / "m"), "float32", 512)
    calls, real = [], server.engine.generate_ids

    def counted(prompts, sampling):
        calls.append(len(prompts))
        return real(prompts, sampling)

    server.engine.generate_ids = counted
    prompts = [tok.encode("The capital of France is"), tok.encode("Rivers of Europe:")]

    async def both():
        return await asyncio.gather(*(server.generate(p, {"temperature": 0.5, "max_tokens": 5}, f"r{i}")
                                      for i, p in enumerate(prompts)))

    outs = asyncio.run(both())
    assert calls == [2]  # one batch for the turn
    for p, out in zip(prompts, outs, strict=True):
        assert len(out.token_ids) == 5 and out.extra_fields["global_steps"] == 0
        with torch.no_grad():
            logits = server.engine.model(torch.tensor([p + out.token_ids])).logits[0, len(p) - 1:-1].float()
        want = torch.log_softmax(logits / 0.5, -1).gather(1, torch.tensor(out.token_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(out.log_probs), want, atol=1e-4)

    named = {"lm_head.weight": model.lm_head.weight.detach() + 0.1}
    assert asyncio.run(server.load_weights(named, global_steps=4)) == 1
    again = asyncio.run(server.generate(prompts[0], {"temperature": 1.0, "max_tokens": 1}, "r2"))
    assert again.extra_fields["global_steps"] == 4
    assert torch.equal(server.engine.model.lm_head.weight, named["lm_head.weight"])
