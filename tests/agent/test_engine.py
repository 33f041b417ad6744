"""The HF engine's CPU paths (row-wise prefill, matmul decode attention) against stock HF ``generate``."""

from __future__ import annotations

import pytest
import torch

from memtrain.agent import engine as eng
from memtrain.agent.engine import HFEngine, Sampling, render
from memtrain.models import tiny_model

CONVERSATIONS = [
    [{"role": "user", "content": "Where does the river Orne reach the sea?"}],
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Name a colour."}],  # a duplicate, as in a GRPO group
    [{"role": "user", "content": "Summarise the history of the railway in the village in two sentences."}],
    [{"role": "user", "content": "Hi"}],
]


@pytest.fixture(scope="module")
def model_tok():
    return tiny_model(seed=3)


def both(model, tok, sampling: Sampling, logprobs: bool = False):
    fast = HFEngine(model, tok, batch_size=8, logprobs=logprobs).generate(CONVERSATIONS, sampling)
    stock = HFEngine(model, tok, batch_size=8, logprobs=logprobs, cpu_kernels=False).generate(
        CONVERSATIONS, sampling)
    return fast, stock


GREEDY, SAMPLED = Sampling(max_new_tokens=12), Sampling(max_new_tokens=12, temperature=1.0, seed=7)


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED])
def test_cpu_paths_give_stock_generate_tokens_and_logprobs(model_tok, sampling):
    model, tok = model_tok
    fast, stock = both(model, tok, sampling, logprobs=True)
    assert model.config._attn_implementation == "sdpa"  # the stock engine put SDPA back
    for f, s in zip(fast, stock, strict=True):
        assert f.prompt_ids == s.prompt_ids
        assert f.completion_ids == s.completion_ids
        assert f.logprobs == pytest.approx(s.logprobs, abs=1e-5)
    assert len({len(c.prompt_ids) for c in fast}) > 2  # really a padded batch


def test_each_distinct_prompt_is_prefilled_once(model_tok):
    model, tok = model_tok
    engine = HFEngine(model, tok, batch_size=8)
    prefill_rows = []

    def record(_module, _args, kwargs):
        if kwargs["input_ids"].shape[1] > 1:  # a prefill, not a decode step
            prefill_rows.append(kwargs["input_ids"].shape)

    hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        engine.generate(CONVERSATIONS, Sampling(max_new_tokens=3))
    finally:
        hook.remove()
    assert len(prefill_rows) == len(CONVERSATIONS) - 1  # the duplicate reuses its twin's cache
    assert all(shape[0] == 1 for shape in prefill_rows)


def test_row_prefill_cache_equals_the_padded_batch_cache(model_tok):
    from transformers import DynamicCache

    model, tok = model_tok
    prompts = [render(tok, c) for c in CONVERSATIONS]
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    with torch.inference_mode():
        ours = eng._prefill_rows(model, prompts, width)
        ref = DynamicCache(config=model.config)
        model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=(mask.cumsum(-1) - 1)[:, :-1],
              use_cache=True, **{eng._cache_kwarg(model): ref})
    real = mask[:, :-1].bool()
    for a, b in zip(ours.layers, ref.layers, strict=True):
        for x, y in ((a.keys, b.keys), (a.values, b.values)):
            assert x.shape == y.shape
            torch.testing.assert_close(x.transpose(1, 2)[real], y.transpose(1, 2)[real], atol=1e-5, rtol=1e-5)
            assert not x.transpose(1, 2)[~real].any()  # left padding holds zeros (masked in decode)


def test_decode_attention_matches_sdpa_with_padding_and_grouped_heads():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    g = torch.Generator().manual_seed(0)
    module = torch.nn.Module().eval()
    module.num_key_value_groups = 3
    query = torch.randn(2, 6, 1, 8, generator=g)
    key, value = torch.randn(2, 2, 9, 8, generator=g), torch.randn(2, 2, 9, 8, generator=g)
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[1, ..., :4] = False  # a left-padded row
    for m in (mask, None):
        ours, _ = eng._decode_attention(module, query, key, value, m, scaling=0.3)
        ref, _ = sdpa_attention_forward(module, query, key, value, m, scaling=0.3)
        assert ours.shape == ref.shape == (2, 1, 6, 8)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # the padded keys are really ignored: changing them changes nothing
    key2 = key.clone()
    key2[1, :, :4] = 100.0
    torch.testing.assert_close(eng._decode_attention(module, query, key2, value, mask, scaling=0.3)[0],
                               eng._decode_attention(module, query, key, value, mask, scaling=0.3)[0])


def test_sliding_window_model_keeps_stock_generate():
    from transformers import MistralConfig, MistralForCausalLM

    model, tok = tiny_model()
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=4,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    mistral = MistralForCausalLM(cfg).eval()
    assert eng._plain_cache(model) and not eng._plain_cache(mistral)
    fast, stock = both(mistral, tok, Sampling(max_new_tokens=6))
    assert [c.completion_ids for c in fast] == [c.completion_ids for c in stock]
