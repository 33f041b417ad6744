"""The vLLM engine's training path, against a fake ``vllm`` module (vLLM itself needs CUDA).

What is checked is memtrain's side of the contract DESIGN §9 describes: the engine is built in process,
weights go one parameter at a time into the model runner's ``load_weights`` (never through
``LLM.apply_model``), the prefix cache is reset after each sync, sleep/wake wraps the update, every request
carries its own seed, and the sampler's log-probs come back.
"""

from __future__ import annotations

import copy
import os
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from memtrain.agent.engine import Sampling
from memtrain.errors import MemtrainError


class FakeRunnerModel(torch.nn.Module):
    """Stands in for vLLM's model: its own (bf16) copy of the weights, filled by ``load_weights``."""

    def __init__(self, policy: torch.nn.Module, log: list):
        super().__init__()
        self.weights = {n: torch.zeros_like(p, dtype=torch.bfloat16) for n, p in policy.named_parameters()}
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.log = log

    def load_weights(self, weights):
        weights = list(weights)
        self.log.append(("load", len(weights)))
        for name, t in weights:
            self.weights[name].copy_(t)


class FakeLLM:
    instances: list = []

    def __init__(self, model, dtype, enable_sleep_mode, gpu_memory_utilization, **kwargs):
        self.init = dict(model=model, enable_sleep_mode=enable_sleep_mode,
                         multiprocessing=os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING"),
                         logprobs_mode=kwargs.get("logprobs_mode"))
        self.log: list = []
        self.runner = None
        worker = SimpleNamespace(worker=SimpleNamespace(model_runner=self))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=worker))
        FakeLLM.instances.append(self)

    @property
    def model(self):
        return self.runner

    def apply_model(self, fn):  # the pickling path memtrain must not take
        raise AssertionError("apply_model pickles the state dict under V1 multiprocessing")

    def reset_prefix_cache(self):
        self.log.append(("reset_prefix_cache",))

    def sleep(self, level):
        self.log.append(("sleep", level))

    def wake_up(self):
        self.log.append(("wake_up",))

    def generate(self, inputs, params, use_tqdm):
        self.log.append(("generate", [p.seed for p in params]))
        outs = []
        for p in params:
            ids = [7 + p.seed % 5, 9]  # deterministic in the request's own seed
            lps = None
            if p.logprobs == 0:
                lps = [{t: SimpleNamespace(logprob=-0.5 * (k + 1))} for k, t in enumerate(ids)]
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, finish_reason="stop",
                                                                 logprobs=lps)]))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.LLM = FakeLLM
    mod.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    FakeLLM.instances = []
    return mod


def test_sync_streams_parameters_in_process_then_resets_the_cache(fake_vllm, tiny, tokenizer):
    from memtrain.agent.vllm_engine import VLLMEngine

    policy = copy.deepcopy(tiny[0])
    engine = VLLMEngine("some/model", tokenizer=tokenizer, sleep_mode=True, logprobs=True)
    llm = FakeLLM.instances[-1]
    assert llm.init["multiprocessing"] == "0" and llm.init["enable_sleep_mode"] is True
    # tempered log-probs, as the trainer computes them (vLLM's default is the raw model's)
    assert llm.init["logprobs_mode"] == "processed_logprobs"
    llm.runner = FakeRunnerModel(policy, llm.log)

    with torch.no_grad():  # "trained" weights
        for p in policy.parameters():
            p.add_(0.25)
    trained = {n: p.detach().clone() for n, p in policy.named_parameters()}
    engine.sleep()
    with pytest.raises(MemtrainError, match="asleep"):
        engine.generate([[{"role": "user", "content": "hi"}]], Sampling())
    engine.wake_up()
    engine.sync_weights(policy)
    n_params = len(trained)
    loads = [e for e in llm.log if e[0] == "load"]
    assert loads == [("load", 1)] * n_params  # one parameter per call: peak extra memory is one tensor
    assert llm.log[:2] == [("sleep", 1), ("wake_up",)] and llm.log[-1] == ("reset_prefix_cache",)
    for n, t in trained.items():  # the engine now holds the trained weights (to its own dtype)
        assert torch.equal(llm.runner.weights[n], t.to(torch.bfloat16))


def test_every_request_has_its_own_seed_and_logprobs_come_back(fake_vllm, tokenizer):
    from memtrain.agent.vllm_engine import VLLMEngine

    engine = VLLMEngine("some/model", tokenizer=tokenizer, logprobs=True)
    convs = [[{"role": "user", "content": "same prompt"}]] * 3
    out = engine.generate(convs, Sampling(temperature=1.0, seeds=[11, 12, 13]))
    assert FakeLLM.instances[-1].log[-1] == ("generate", [11, 12, 13])
    assert [c.completion_ids[0] for c in out] == [7 + 11 % 5, 7 + 12 % 5, 7 + 13 % 5]
    assert all(c.logprobs == [-0.5, -1.0] for c in out)
    engine.sleep()  # sleep mode off: a no-op, generation still works
    assert engine.generate(convs[:1], Sampling(seed=4))[0].completion_ids[0] == 7 + 4 % 5


def test_trainer_sleeps_the_engine_for_the_update_and_syncs_after_waking(tmp_path, monkeypatch):
    from helpers import tiny_config

    from memtrain.agent.engine import HFEngine
    from memtrain.config import from_dict
    from memtrain.recipes import train as train_recipe
    from memtrain.rl import trainer
    from memtrain.rl.config import TrainConfig

    events: list[str] = []

    class SleepyEngine(HFEngine):
        def sleep(self):
            events.append("sleep")

        def wake_up(self):
            events.append("wake_up")

        def sync_weights(self, model):
            events.append("sync")

        def generate(self, conversations, sampling):
            events.append("generate")
            return super().generate(conversations, sampling)

    real_update = trainer.update
    def update(*args, **kwargs):
        events.append("update")
        return real_update(*args, **kwargs)

    monkeypatch.setattr(train_recipe, "update", update)
    monkeypatch.setattr(train_recipe, "build_engine", lambda cfg, name, policy=None, tokenizer=None:
                        SleepyEngine(policy, tokenizer, batch_size=16))
    train_recipe.train(from_dict(TrainConfig, tiny_config(tmp_path, steps=1, save_every=1, eval_docs=0)))
    step = events[events.index("sleep") - 1:]
    assert step[:5] == ["generate", "sleep", "update", "wake_up", "sync"]
