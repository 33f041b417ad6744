"""``memtrain serve`` and :class:`OpenAIEngine` against each other, for real, on the tiny model."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from memtrain.agent.engine import Sampling, render
from memtrain.agent.loop import AgentConfig, make_task, open_trace, run_memory_agent
from memtrain.agent.openai_engine import OpenAIEngine
from memtrain.errors import MemtrainError
from memtrain.serve import make_server, parse_request

SECRET = "sk-test-DO-NOT-LEAK-4242"


@pytest.fixture(scope="module")
def hf(tiny_engine):
    return tiny_engine


@pytest.fixture(scope="module")
def server(hf):
    srv = make_server(hf, "127.0.0.1", 0, model_name="tiny", batch_window_ms=20)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def conversations(n: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f"Conversation {i}: " + "tell me about rivers " * (i + 1)}]
        for i in range(n)
    ]


def test_server_is_faithful_to_hf_engine_and_batches(server, hf):
    convs = conversations(6)
    sampling = Sampling(max_new_tokens=10)
    expected = hf.generate(convs, sampling)
    before = len(server.batcher.batches)
    client = OpenAIEngine(server.url, "tiny", tokenizer=hf.tokenizer, concurrency=6, request_token_ids=True)
    got = client.generate(convs, sampling)
    assert [g.text for g in got] == [e.text for e in expected]
    assert [g.completion_ids for g in got] == [e.completion_ids for e in expected]
    assert [g.prompt_ids for g in got] == [render(hf.tokenizer, c) for c in convs]
    assert [g.finish_reason for g in got] == [e.finish_reason for e in expected]
    assert max(server.batcher.batches[before:]) > 1  # concurrent requests were coalesced
    # without server-side ids the client re-tokenises locally; without a tokenizer it has no ids
    plain = OpenAIEngine(server.url, "tiny", tokenizer=hf.tokenizer).generate(convs[:2], sampling)
    assert [p.prompt_ids for p in plain] == [render(hf.tokenizer, c) for c in convs[:2]]
    bare = OpenAIEngine(server.url, "tiny").generate(convs[:1], sampling)[0]
    assert bare.text == expected[0].text and bare.prompt_ids == [] and bare.completion_ids == []


def test_memory_loop_over_http_matches_local(server, hf, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMTRAIN_TEST_KEY", SECRET)
    cfg = AgentConfig(chunk_tokens=24, memory_tokens=10, answer_tokens=6)
    text = "The river Orne flows through Caen. Marie Curie was born in Warsaw in 1867. " * 3
    tasks = [
        make_task(text * (i + 1), "Where was Curie born?", hf.tokenizer, cfg, task_id=f"d{i}")
        for i in range(3)
    ]
    client = OpenAIEngine(
        server.url,
        "tiny",
        tokenizer=hf.tokenizer,
        api_key_env="MEMTRAIN_TEST_KEY",
        concurrency=4,
        request_token_ids=True,
    )
    trace_path = tmp_path / "trace.jsonl"
    trace = open_trace(trace_path)
    remote = run_memory_agent(client, tasks, cfg, Sampling(), trace=trace, progress=False)
    trace.close()
    local = run_memory_agent(hf, tasks, cfg, Sampling(), progress=False)
    assert [r.memories for r in remote] == [loc.memories for loc in local]
    assert [r.response for r in remote] == [loc.response for loc in local]
    assert [len(r.turns) for r in remote] == [len(t.chunks) + 1 for t in tasks]
    trace_text = trace_path.read_text()
    assert len(trace_text.splitlines()) == sum(len(r.turns) for r in remote)
    assert SECRET not in trace_text


def test_http_errors_and_endpoints(server):
    base = server.url
    r = httpx.post(
        f"{base}/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{base}/chat/completions", json={"model": "tiny"})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = httpx.post(f"{base}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "n": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    r = httpx.post(
        f"{base}/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0},
    )
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion" and body["model"] == "tiny"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] in {"stop", "length"}
    u = body["usage"]
    assert (
        0 < u["completion_tokens"] <= 3 and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    )
    assert httpx.get(f"{base}/models").json()["data"][0]["id"] == "tiny"
    assert httpx.get(base.removesuffix("/v1") + "/health").json()["status"] == "ok"
    assert httpx.get(f"{base}/nope").status_code == 404


def test_parse_request_validation():
    conv, s, ids = parse_request(
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_completion_tokens": 7,
            "temperature": 0.5,
            "seed": 3,
            "return_token_ids": True,
        }
    )
    assert conv == [{"role": "user", "content": "hi"}] and ids
    assert (s.max_new_tokens, s.temperature, s.seed) == (7, 0.5, 3)
    for bad in (
        {"messages": []},
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
        {"messages": [{"role": "user", "content": "x"}], "stream": True},
        ["not", "an", "object"],
    ):
        with pytest.raises(Exception, match="must|stream|only"):
            parse_request(bad)


def test_unreachable_server_fails_fast_without_leaking_key(monkeypatch):
    monkeypatch.setenv("MEMTRAIN_TEST_KEY", SECRET)
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    client = OpenAIEngine(url, "m", api_key_env="MEMTRAIN_TEST_KEY", timeout=2, retries=2, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(MemtrainError) as info:
        client.generate([[{"role": "user", "content": "hi"}]], Sampling(max_new_tokens=4))
    assert time.monotonic() - start < 30
    msg = str(info.value)
    assert url in msg and "3 attempts" in msg and "running" in msg
    assert SECRET not in msg and SECRET not in repr(info.value)


def _mock_client(handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def _ok(text: str = "fine") -> httpx.Response:
    return httpx.Response(
        200,
        json={"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "length"}]},
    )


def test_retries_backoff_auth_header_and_payload(monkeypatch):
    monkeypatch.setenv("MEMTRAIN_TEST_KEY", SECRET)
    seen: list[httpx.Request] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, json={"error": {"message": "busy"}}) if len(seen) < 3 else _ok()

    client = OpenAIEngine(
        "http://x.invalid/v1", "m", api_key_env="MEMTRAIN_TEST_KEY", retries=3, backoff=0.001
    )
    client._client = _mock_client(flaky)
    (comp,) = client.generate(
        [[{"role": "user", "content": "hi"}]], Sampling(max_new_tokens=5, temperature=0.7, top_p=0.9, seed=11)
    )
    assert len(seen) == 3 and comp.text == "fine" and comp.finish_reason == "length"
    assert seen[-1].headers["Authorization"] == f"Bearer {SECRET}"
    payload = json.loads(seen[-1].content)
    assert (payload["max_tokens"], payload["temperature"], payload["top_p"], payload["seed"]) == (
        5,
        0.7,
        0.9,
        11,
    )
    assert "return_token_ids" not in payload and "top_k" not in payload  # OpenAI rejects unknown fields

    calls: list[int] = []

    def unauthorized(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(401, json={"error": {"message": "invalid api key"}})

    client._client = _mock_client(unauthorized)
    with pytest.raises(MemtrainError, match="HTTP 401.*MEMTRAIN_TEST_KEY") as info:
        client.generate([[{"role": "user", "content": "hi"}]], Sampling())
    assert len(calls) == 1  # client errors are not retried
    assert SECRET not in str(info.value)


def test_serve_cli_rejects_bad_sizes_before_loading(capsys):
    from memtrain.cli import main

    assert main(["serve", "model=tiny", "engine.batch_size=0"]) == 2
    assert "EngineConfig.batch_size must be >= 1" in capsys.readouterr().err


def test_openai_engine_records_the_servers_log_probs_and_a_seed_per_conversation():
    """With logprobs on, the sampled tokens' log-probs come back aligned with the token ids; each
    conversation of a call carries its own seed (identical prompts of one group then sample apart)."""
    seen: list[dict] = []

    def server(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        return httpx.Response(200, json={"choices": [{
            "message": {"role": "assistant", "content": "a b"}, "finish_reason": "stop", "token_ids": [7, 8],
            "logprobs": {"content": [{"token": "a", "logprob": -0.5}, {"token": " b", "logprob": -1.25}]}}],
            "prompt_token_ids": [1, 2, 3]})

    client = OpenAIEngine("http://x.invalid/v1", "m", logprobs=True, request_token_ids=True, concurrency=2)
    client._client = _mock_client(server)
    convs = [[{"role": "user", "content": "same"}]] * 2
    comps = client.generate(convs, Sampling(max_new_tokens=2, temperature=1.0, seeds=[11, 12]))
    assert [c.logprobs for c in comps] == [[-0.5, -1.25]] * 2 and comps[0].completion_ids == [7, 8]
    assert sorted(b["seed"] for b in seen) == [11, 12] and all(b["logprobs"] is True for b in seen)
