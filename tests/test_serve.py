"""``memtrain serve`` and :class:`OpenAIEngine` against each other, for real, on the tiny model."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import socket
import threading
import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memtrain.agent.engine import Sampling, render
from memtrain.agent.loop import AgentConfig, make_task, open_trace, run_memory_agent
from memtrain.agent.openai_engine import OpenAIEngine
from memtrain.errors import MemtrainError
from memtrain.serve import (
    MEMORY_TASK_ID,
    BadRequest,
    HTTPConfig,
    apply_stop,
    make_server,
    parse_request,
    text_pieces,
)
from memtrain.serving.protocol import loads

try:  # the real client where installed; the wire format is checked over raw HTTP either way
    import openai
except ImportError:
    openai = None

SECRET = "sk-test-DO-NOT-LEAK-4242"


@pytest.fixture(scope="module")
def hf(tiny_engine):
    return tiny_engine


@pytest.fixture(scope="module")
def server(hf):
    with running(hf) as srv:
        yield srv


@contextlib.contextmanager
def serving(srv):
    """``srv`` (either server, already bound) serving on a thread for the ``with`` block, then closed."""
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def running(engine, **cfg):
    """A ``memtrain serve`` server over ``engine`` on a free loopback port, for the ``with`` block."""
    return serving(make_server(engine, **{"model": "tiny", "port": 0, "batch_window_ms": 20, **cfg}))


def conversations(n: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f"Conversation {i}: " + "tell me about rivers " * (i + 1)}]
        for i in range(n)
    ]


def test_server_is_faithful_to_hf_engine_and_batches(server, hf):
    convs = conversations(6)
    sampling = Sampling(max_new_tokens=10)
    expected = hf.generate(convs, sampling)
    before = server.batcher.n_batches
    client = OpenAIEngine(server.url, "tiny", tokenizer=hf.tokenizer, concurrency=6, request_token_ids=True)
    got = client.generate(convs, sampling)
    assert [g.text for g in got] == [e.text for e in expected]
    assert [g.completion_ids for g in got] == [e.completion_ids for e in expected]
    assert [g.prompt_ids for g in got] == [render(hf.tokenizer, c) for c in convs]
    assert [g.finish_reason for g in got] == [e.finish_reason for e in expected]
    sizes = list(server.batcher.batches)[before - server.batcher.n_batches:]
    assert max(sizes) > 1  # concurrent requests were coalesced
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
    r = httpx.post(f"{base}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "n": 0})
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
    health = httpx.get(base.removesuffix("/v1") + "/health").json()
    assert health["status"] == "ok" and health["queued"] == 0 and health["batches"] >= 1
    assert httpx.get(f"{base}/nope").status_code == 404


def test_parse_request_validation():
    req = parse_request(
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_completion_tokens": 7,
            "temperature": 0.5,
            "seed": 3,
            "return_token_ids": True,
            "n": 2,
            "stop": "\n",
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert req.conversation == [{"role": "user", "content": "hi"}] and req.return_token_ids
    s = req.sampling
    assert (s.max_new_tokens, s.temperature, s.seed, req.max_tokens) == (7, 0.5, 3, 7)
    assert (req.n, req.stop, req.stream, req.include_usage) == (2, ["\n"], True, True)
    defaults = parse_request({"messages": [{"role": "user", "content": "x"}]}, default_max_tokens=9)
    d = defaults.sampling
    assert (defaults.max_tokens, d.max_new_tokens, d.temperature) == (None, 9, 1)
    x = [{"role": "user", "content": "x"}]
    for bad, param in (
        ({"messages": []}, "messages"),
        ({"messages": x, "max_tokens": 0}, "max_tokens"),
        ({"messages": x, "max_tokens": -5}, "max_tokens"),
        ({"messages": x, "temperature": "hot"}, "temperature"),
        ({"messages": x, "temperature": -0.1}, "temperature"),
        ({"messages": x, "stream": "yes"}, "stream"),
        ({"messages": x, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"messages": x, "n": 0}, "n"),
        ({"messages": x, "stop": ["ok", ""]}, "stop"),
        ({"messages": x, "stop": 3}, "stop"),
        ({"messages": x, "memory_agent": "doc"}, "memory_agent"),
        ({"messages": x, "memory_agent": {"document": "d"}, "stop": "."}, "stop"),
        (["not", "an", "object"], None),
    ):
        with pytest.raises(Exception, match="must|allowed|supported") as info:
            parse_request(bad)
        assert info.value.param == param and info.value.status == 400


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


# ------------------------------------------------------------------ issue 14: serving as users expect

HELLO = [{"role": "user", "content": "Say something about rivers and mountains."}]


def post(srv, body, path="/chat/completions", key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(srv.url + path, json=body, headers=headers, timeout=120)


def sse(srv, body) -> list[dict]:
    """The chunks of a streamed response over raw HTTP; checks the SSE framing and the closing [DONE]."""
    with httpx.stream("POST", srv.url + "/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


# The tiny random-weight model's greedy choice is always "\n" (an empty text once stripped), so the tests
# that need real text sample with a fixed seed: a request alone in its batch is then reproducible.
SAMPLED = {"temperature": 1.0, "seed": 7}


def test_streaming_reassembles_to_the_non_streamed_text(server):
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 16, **SAMPLED}
    full = post(server, body).json()
    text = full["choices"][0]["message"]["content"]
    assert len(text) > 10

    chunks = sse(server, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    first, *middle, last_choice, usage_chunk = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"]["content"] for c in middle]
    assert len(deltas) > 1 and "".join(deltas) == text  # token pieces, not one blob
    assert all(c["choices"][0]["finish_reason"] is None for c in [first, *middle])
    assert last_choice["choices"][0]["finish_reason"] == full["choices"][0]["finish_reason"]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == full["usage"]
    assert all("usage" not in c for c in sse(server, {**body, "stream": True}))  # not asked: not sent

    if openai is not None:  # the real client: its stream parser, its chunk models
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
        stream = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=16, stream=True,
                                                stream_options={"include_usage": True}, **SAMPLED)
        got = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == text
        assert got[-1].usage.completion_tokens == full["usage"]["completion_tokens"]
        plain = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=16, **SAMPLED)
        assert plain.choices[0].message.content == text


def test_text_pieces_and_stop_cut_on_the_real_tokenizer(tokenizer):
    from memtrain.records import Completion

    text = "Naïve café — 東京 rivers,\n  mountains 🏔 and a [MASK]."
    ids = tokenizer.encode(text, add_special_tokens=False)
    whole = tokenizer.decode(ids, skip_special_tokens=True).strip()
    pieces = text_pieces(tokenizer, ids, whole)
    assert "".join(pieces) == whole and len(pieces) > 5
    assert "".join(text_pieces(tokenizer, ids, whole, max_pieces=3)) == whole
    comp = Completion(text=whole, prompt_ids=[1], completion_ids=ids, finish_reason="length")
    cut = apply_stop(tokenizer, comp, ["nothing here", "mountains"])
    assert cut.text == whole[: whole.index("mountains")] and cut.finish_reason == "stop"
    assert "mountains" in tokenizer.decode(cut.token_ids) and "mountains" not in tokenizer.decode(
        cut.token_ids[:-1])  # counted up to the token that completed the stop string
    assert apply_stop(tokenizer, comp, ["absent"]).text == whole


def test_stop_sequences_cut_the_text(server):
    body = {"messages": HELLO, "max_tokens": 24, **SAMPLED}
    full = post(server, body).json()
    text = full["choices"][0]["message"]["content"]
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert len(text) > 10 and len(stop) == 3
    r = post(server, {**body, "stop": ["never-there", stop]}).json()
    (choice,) = r["choices"]
    assert choice["message"]["content"] == text[: text.index(stop)] and choice["finish_reason"] == "stop"
    assert r["usage"]["completion_tokens"] < full["usage"]["completion_tokens"]
    assert r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"]
    streamed = sse(server, {**body, "stop": stop, "stream": True})
    got = "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed)
    assert got == text[: text.index(stop)]
    assert streamed[-1]["choices"][0]["finish_reason"] == "stop"


def test_n_choices_and_usage(server):
    one = post(server, {"messages": HELLO, "max_tokens": 8, "temperature": 0}).json()
    two = post(server, {"messages": HELLO, "max_tokens": 8, "temperature": 0, "n": 2}).json()
    assert [c["index"] for c in two["choices"]] == [0, 1]
    assert {c["message"]["content"] for c in two["choices"]} == {one["choices"][0]["message"]["content"]}
    u1, u2 = one["usage"], two["usage"]
    assert u2["prompt_tokens"] == u1["prompt_tokens"]  # the prompt is counted once
    assert u2["completion_tokens"] == 2 * u1["completion_tokens"]
    assert u2["total_tokens"] == u2["prompt_tokens"] + u2["completion_tokens"]
    sampled = post(server, {"messages": HELLO, "max_tokens": 8, "temperature": 1.0, "n": 3, "seed": 5,
                            "return_token_ids": True}).json()
    assert len(sampled["choices"]) == 3
    assert sampled["usage"]["completion_tokens"] == sum(len(c["token_ids"]) for c in sampled["choices"])
    assert sampled["usage"]["prompt_tokens"] == len(sampled["prompt_token_ids"])
    chunks = sse(server, {"messages": HELLO, "max_tokens": 8, "temperature": 0, "n": 2, "stream": True})
    for i in (0, 1):
        got = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                      if c["choices"][0]["index"] == i)
        assert got == one["choices"][0]["message"]["content"]


def test_over_long_prompt_is_a_400_naming_the_context_limit(hf):
    with running(hf, max_model_len=64, default_max_tokens=32) as srv:
        assert httpx.get(srv.url + "/models").json()["data"][0]["max_model_len"] == 64
        p = len(render(hf.tokenizer, HELLO))
        r = post(srv, {"messages": HELLO, "max_tokens": 64 - p + 1})
        err = r.json()["error"]
        assert r.status_code == 400 and (err["code"], err["param"]) == ("context_length_exceeded", "messages")
        assert err["message"].startswith(
            f"This model's maximum context length is 64 tokens. However, you requested {65} tokens "
            f"({p} in the messages, {64 - p + 1} in the completion)."
        )
        assert post(srv, {"messages": HELLO, "max_tokens": 64 - p, "temperature": 0}).status_code == 200
        long = [{"role": "user", "content": "rivers " * 100}]
        r = post(srv, {"messages": long})
        assert r.status_code == 400 and "maximum context length is 64 tokens" in r.json()["error"]["message"]
        # without max_tokens, the default budget is cut to what the context leaves
        r = post(srv, {"messages": HELLO, "temperature": 0}).json()
        assert r["usage"]["completion_tokens"] <= min(32, 64 - p)
        # the memory agent checks every step before generating
        spec = {"document": "Rivers flow. " * 40, "chunk_tokens": 40, "memory_tokens": 16}
        r = post(srv, {"messages": HELLO, "memory_agent": spec})
        assert r.status_code == 400 and "maximum context length is 64 tokens" in r.json()["error"]["message"]


class GatedEngine:
    """The tiny engine behind a gate: ``generate`` signals ``entered`` and waits for ``release``, so a test
    can hold the batcher's worker inside a generate call for as long as it needs, without sleeping."""

    def __init__(self, inner):
        self.inner, self.tokenizer, self.model = inner, inner.tokenizer, inner.model
        self.entered, self.release = threading.Event(), threading.Event()

    def generate(self, conversations, sampling):
        self.entered.set()
        assert self.release.wait(120), "the test never released the gate"
        return self.inner.generate(conversations, sampling)


def wait_until(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def in_thread(fn, *args):
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("r", fn(*args)), daemon=True)
    t.start()
    return t, out


def test_full_queue_is_a_503_and_the_server_recovers(hf):
    gate = GatedEngine(hf)
    body = {"messages": HELLO, "max_tokens": 4, "temperature": 0}
    with running(gate, max_queue=2) as srv:
        first = in_thread(post, srv, body)
        assert gate.entered.wait(60)  # the worker is inside generate with the first request
        queued = [in_thread(post, srv, body) for _ in range(2)]
        wait_until(lambda: srv.batcher.queued == 2, "two requests wait in the queue")
        r = post(srv, body)
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_full"
        assert "max_queue=2" in r.json()["error"]["message"]
        assert post(srv, {**body, "n": 3}).status_code == 400  # can never fit: a client error, not 503
        gate.release.set()
        for t, out in [first, *queued]:
            t.join(60)
            assert out["r"].status_code == 200
        assert post(srv, body).status_code == 200 and srv.batcher.queued == 0


def test_request_timeout_is_a_504_and_the_server_keeps_working(hf):
    gate = GatedEngine(hf)
    body = {"messages": HELLO, "max_tokens": 4, "temperature": 0}
    with running(gate, request_timeout_s=0.3) as srv:
        r = post(srv, body)  # taken by the worker, stuck in generate behind the gate
        assert gate.entered.is_set()
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"
        r = post(srv, body)  # never started: queued behind the stuck batch, then given up
        assert r.status_code == 504 and srv.batcher.queued == 1
        gate.release.set()
        ok = post(srv, body)
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] is not None
        assert srv.batcher.n_conversations == 2  # the abandoned queued request was skipped, not generated


def test_api_key_is_required_compared_and_never_shown(hf, monkeypatch, caplog):
    monkeypatch.delenv("MEMTRAIN_SERVE_KEY", raising=False)
    with pytest.raises(MemtrainError, match=r"\$MEMTRAIN_SERVE_KEY is unset"):
        make_server(hf, port=0, api_key_env="MEMTRAIN_SERVE_KEY")
    monkeypatch.setenv("MEMTRAIN_SERVE_KEY", SECRET)
    caplog.set_level(logging.DEBUG, logger="memtrain.serve")
    body = {"messages": HELLO, "max_tokens": 3}
    with running(hf, api_key_env="MEMTRAIN_SERVE_KEY") as srv:
        for key in (None, "sk-wrong", SECRET + "x", SECRET[:-1]):
            r = post(srv, body, key=key)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            assert SECRET not in r.text
        assert httpx.get(srv.url + "/models").status_code == 401
        assert httpx.get(srv.url.removesuffix("/v1") + "/health").status_code == 200  # probes need no key
        assert post(srv, body, key=SECRET).status_code == 200
        auth = {"Authorization": f"Bearer {SECRET}"}
        assert httpx.get(srv.url + "/models", headers=auth).status_code == 200
        client = OpenAIEngine(srv.url, "tiny", tokenizer=hf.tokenizer, api_key_env="MEMTRAIN_SERVE_KEY")
        assert client.generate([HELLO], Sampling(max_new_tokens=3))[0].prompt_ids
        if openai is not None:
            ok = openai.OpenAI(base_url=srv.url, api_key=SECRET, max_retries=0)
            assert ok.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3).choices
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=srv.url, api_key="sk-wrong", max_retries=0).chat.completions.create(
                    model="tiny", messages=HELLO, max_tokens=3)
        assert SECRET not in repr(srv) and SECRET not in caplog.text


DOC = ("The river Orne flows through Caen. Marie Curie was born in Warsaw in 1867. "
       "Caen has a castle built by William the Conqueror. ") * 4
AGENT = {"chunk_tokens": 32, "memory_tokens": 10, "answer_tokens": 6}


def test_memory_agent_endpoint_matches_the_library_loop(server, hf):
    cfg = AgentConfig(**AGENT)
    question = "Where was Curie born?"
    task = make_task(DOC, question, hf.tokenizer, cfg, task_id=MEMORY_TASK_ID)
    # seeded sampling: the loop derives each step's seed from (seed, task id, step), alone in its batch each
    # step is reproducible, and the memories hold real text (greedy ones are empty on this model: SAMPLED)
    (local,) = run_memory_agent(hf, [task], cfg, Sampling(**SAMPLED), progress=False)
    assert len(task.chunks) >= 3 and all(local.memories)

    r = post(server, {"model": "tiny", "messages": [{"role": "user", "content": question}], **SAMPLED,
                      "memory_agent": {"document": DOC, **AGENT, "return_trace": True}})
    assert r.status_code == 200, r.text
    body = r.json()
    (choice,) = body["choices"]
    ma = choice["memory_agent"]
    assert ma["n_chunks"] == len(task.chunks) and len(ma["memories"]) == len(task.chunks) + 1
    assert ma["memories"] == local.memories and ma["answer"] == local.answer
    assert choice["message"]["content"] == local.response
    assert [row["kind"] for row in ma["trace"]] == ["update"] * len(task.chunks) + ["final"]
    assert [row["memory"] for row in ma["trace"][:-1]] == local.memories[1:]
    n_prompt = sum(len(t.completion.prompt_ids) for t in local.turns)
    n_completion = sum(len(t.completion.completion_ids) for t in local.turns)
    assert body["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                             "total_tokens": n_prompt + n_completion}

    plain = post(server, {"document": DOC, "question": question, **AGENT, **SAMPLED},
                 path="/memory/answer").json()
    assert (plain["answer"], plain["response"], plain["n_chunks"]) == (local.answer, local.response,
                                                                       len(task.chunks))
    assert "memories" not in plain and "trace" not in plain  # only on request

    streamed = sse(server, {"messages": [{"role": "user", "content": question}], **SAMPLED,
                            "stream": True, "memory_agent": {"document": DOC, **AGENT}})
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed) == local.response
    assert streamed[-1]["choices"][0]["memory_agent"]["answer"] == local.answer

    if openai is not None:  # any OpenAI client: the extra field goes in extra_body and comes back as extra
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
        resp = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": question}], **SAMPLED,
            extra_body={"memory_agent": {"document": DOC, **AGENT}})
        assert resp.choices[0].message.content == local.response
        assert resp.choices[0].model_extra["memory_agent"]["answer"] == local.answer


def test_memory_agent_steps_share_batches_with_other_requests(hf):
    """Two memory reads queued behind a held batch come out of the batcher as one generate call."""
    gate = GatedEngine(hf)
    q = [{"role": "user", "content": "Where was Curie born?"}]
    with running(gate) as srv:
        blocker = in_thread(post, srv, {"messages": HELLO, "max_tokens": 4, "temperature": 0})
        assert gate.entered.wait(60)
        docs = (DOC, DOC[::-1])
        reads = [in_thread(post, srv, {"messages": q, "temperature": 0,
                                       "memory_agent": {"document": d, **AGENT}}) for d in docs]
        wait_until(lambda: srv.batcher.queued == 2, "both reads' first steps wait in the queue")
        gate.release.set()
        for t, _ in [blocker, *reads]:
            t.join(120)
        assert list(srv.batcher.batches)[:2] == [1, 2]  # the blocker alone, then both reads' first steps
        assert all(out["r"].status_code == 200 for _, out in [blocker, *reads])
        cfg = AgentConfig(**AGENT)
        tasks = [make_task(d, q[0]["content"], hf.tokenizer, cfg, task_id=str(i)) for i, d in enumerate(docs)]
        local = run_memory_agent(hf, tasks, cfg, Sampling(), progress=False)
        got = [out["r"].json()["choices"][0]["message"]["content"] for _, out in reads]
        assert got == [tr.response for tr in local]


def test_memory_agent_errors_are_400s(server):
    q = [{"role": "user", "content": "Where?"}]
    for spec, needle in (
        ({"document": "   "}, "empty"),
        ({"document": 3}, "must be a string"),
        ({"document": DOC, "chunk_tokens": 0}, ">= 1"),
        ({"document": DOC, "chunk_size": 10}, "unknown memory_agent fields"),
        ({"document": DOC, "prompt_version": "v99"}, "v99"),
    ):
        r = post(server, {"messages": q, "memory_agent": spec})
        assert r.status_code == 400 and needle in r.json()["error"]["message"], (spec, r.text)
    r = post(server, {"messages": [{"role": "user", "content": " "}], "memory_agent": {"document": DOC}})
    assert r.status_code == 400 and "question" in r.json()["error"]["message"]
    r = post(server, {"document": DOC}, path="/memory/answer")
    assert r.status_code == 400 and r.json()["error"]["param"] == "question"


# ------------------------------------------------------------------ issue 23: a real ASGI stack

def burst(url: str, n: int, method: str = "GET", body: bytes | None = None) -> list[int | str]:
    """``n`` clients released together, each on a new connection (one request each, ``Connection:
    close``); their status codes, or the names of the errors they got instead."""
    u = httpx.URL(url)
    start = threading.Barrier(n)
    out: list[int | str] = [""] * n

    def one(i: int) -> None:
        start.wait()
        conn = http.client.HTTPConnection(u.host, u.port, timeout=120)
        try:
            headers = {"Connection": "close", "Content-Type": "application/json"}
            conn.request(method, u.raw_path.decode(), body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            out[i] = resp.status
        except Exception as e:  # a reset, a refused or timed-out connection: what the test counts
            out[i] = type(e).__name__
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return out


def exchange(address: tuple[str, int], data: bytes, wait: float = 10.0) -> tuple[bytes, bool]:
    """Send raw ``data`` on a new connection, then read until the server closes it; (what came back,
    whether it closed within ``wait`` seconds)."""
    got = b""
    with socket.create_connection(address, timeout=wait) as s:
        s.sendall(data)
        try:
            while chunk := s.recv(65536):
                got += chunk
        except TimeoutError:
            return got, False
        except ConnectionResetError:
            pass
    return got, True


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def head(path: str, length: int | str | None = None, extra: str = "") -> bytes:
    cl = f"Content-Length: {length}\r\n" if length is not None else ""
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{cl}{extra}\r\n"
            ).encode()


def test_a_burst_of_new_connections_is_all_answered(server):
    """stdlib http.server's listen backlog of 5 reset 20 of 128 such requests at 32-way concurrency."""
    root = server.url.removesuffix("/v1")
    codes = burst(root + "/health", 128)
    assert codes == [200] * 128, sorted(map(str, codes))
    body = json.dumps({"messages": HELLO, "max_tokens": 1, "temperature": 0}).encode()
    codes = burst(server.url + "/chat/completions", 64, "POST", body)
    assert codes == [200] * 64, sorted(map(str, codes))
    if openai is not None:  # the real client, no retries, a new connection per client
        errors: list[str] = []
        start = threading.Barrier(64)

        def one() -> None:
            client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
            start.wait()
            try:
                assert client.models.list().data[0].id == "tiny"
            except Exception as e:
                errors.append(type(e).__name__)
            finally:
                client.close()

        threads = [threading.Thread(target=one, daemon=True) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert errors == []


def test_nan_and_infinity_are_400s_naming_the_field(server):
    """Python's json reads NaN and Infinity: they used to reach the engine (temperature) or fail with 500."""
    msgs = json.dumps(HELLO)
    for field in ("max_tokens", "n", "temperature", "top_p", "seed"):
        for token in ("NaN", "Infinity", "-Infinity", "1e999"):
            raw = f'{{"messages": {msgs}, "{field}": {token}}}'.encode()
            r = httpx.post(server.url + "/chat/completions", content=raw, timeout=60)
            err = r.json()["error"]
            assert (r.status_code, err["param"], err["type"]) == (400, field, "invalid_request_error"), r.text
            assert field in err["message"]
    raw = f'{{"messages": {msgs}, "memory_agent": {{"document": "d", "chunk_tokens": NaN}}}}'.encode()
    r = httpx.post(server.url + "/chat/completions", content=raw, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "memory_agent.chunk_tokens"
    raw = b'{"question": "q", "temperature": NaN}'
    r = httpx.post(server.url + "/memory/answer", content=raw, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"


def test_a_bad_content_length_is_a_400(server):
    for length in ("abc", "-1", "1e3", "5, 6"):
        got, closed = exchange(server.server_address, head("/v1/chat/completions", length) + b"{}")
        assert status_of(got) == 400 and closed, (length, got[:200])
    valid = head("/v1/chat/completions", 2, "Connection: close\r\n") + b"{}"
    got, closed = exchange(server.server_address, valid)
    assert status_of(got) == 400 and b"messages" in got  # a valid one still reaches the app


def test_an_unauthenticated_big_body_is_a_401_before_it_is_read(hf, monkeypatch):
    monkeypatch.setenv("MEMTRAIN_SERVE_KEY", SECRET)
    with running(hf, api_key_env="MEMTRAIN_SERVE_KEY") as srv:
        t0 = time.monotonic()
        # 60 MiB announced (under the body cap), 64 KiB sent: the answer must not wait for the rest
        got, closed = exchange(srv.server_address, head("/v1/chat/completions", 60 * 2**20) + b" " * 65536)
        assert status_of(got) == 401 and closed and b"invalid_api_key" in got
        assert time.monotonic() - t0 < 5
        assert post(srv, {"messages": HELLO, "max_tokens": 2}, key=SECRET).status_code == 200


def test_an_over_cap_body_is_a_413(hf):
    with running(hf, http=HTTPConfig(max_body_bytes=4096)) as srv:
        got, closed = exchange(srv.server_address, head("/v1/chat/completions", 5000) + b"{")
        assert status_of(got) == 413 and closed and b"http.max_body_bytes" in got
        chunk = b"400\r\n" + b" " * 1024 + b"\r\n"  # chunked, no Content-Length: counted as it streams in
        chunked = head("/v1/chat/completions", None, "Transfer-Encoding: chunked\r\n")
        got, closed = exchange(srv.server_address, chunked + chunk * 8)
        assert status_of(got) == 413 and closed
        body = {"messages": [{"role": "user", "content": "x" * 3000}], "max_tokens": 1}
        assert post(srv, body).status_code == 200  # under the cap


def test_slow_heads_and_bodies_time_out(hf):
    with running(hf, http=HTTPConfig(read_timeout_s=0.5)) as srv:
        t0 = time.monotonic()
        got, closed = exchange(srv.server_address, head("/v1/chat/completions", 100) + b'{"messages"')
        assert status_of(got) == 408 and closed and b"read_timeout" in got
        got, closed = exchange(srv.server_address, b"POST /v1/chat/completions HTTP/1.1\r\nHost: te")
        assert got == b"" and closed  # half a head: the connection is closed
        assert time.monotonic() - t0 < 8
        assert post(srv, {"messages": HELLO, "max_tokens": 2}).status_code == 200


def test_requests_beyond_the_concurrency_bound_are_503s(hf):
    gate = GatedEngine(hf)
    body = {"messages": HELLO, "max_tokens": 2, "temperature": 0}
    with running(gate, http=HTTPConfig(max_concurrency=2)) as srv:
        first = in_thread(post, srv, body)
        assert gate.entered.wait(60)
        second = in_thread(post, srv, body)
        wait_until(lambda: srv.batcher.queued == 1, "the second request waits in the queue")
        r = post(srv, body)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        err = r.json()["error"]
        assert err["code"] == "server_busy" and "max_concurrency=2" in err["message"]
        assert httpx.get(srv.url.removesuffix("/v1") + "/health").status_code == 200  # probes still answer
        gate.release.set()
        for t, out in (first, second):
            t.join(60)
            assert out["r"].status_code == 200
        assert post(srv, body).status_code == 200 and srv.busy.active == 0


JSON_LEAF = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
             | st.sampled_from([0, 1, -1, 0.5, 2**63, 10**400, math.nan, math.inf, "", "user"]))
JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]) | JSON,
                                 "content": st.text(max_size=12) | JSON})
CHAT_FIELDS = ("max_tokens", "max_completion_tokens", "n", "temperature", "top_p", "top_k", "seed", "stop",
               "stream", "stream_options", "logprobs", "top_logprobs", "return_token_ids", "memory_agent")
CHAT_BODY = JSON | st.fixed_dictionaries({"messages": st.lists(MESSAGE, min_size=1, max_size=3) | JSON},
                                         optional={f: JSON_LEAF | JSON for f in CHAT_FIELDS})


@given(body=CHAT_BODY)
@settings(max_examples=300, deadline=None)
def test_any_json_is_a_chat_request_or_a_400(body):
    """Whatever JSON arrives (through the strict parser or as Python values), validation answers a request
    or the 400 error, never another exception."""
    for value in (body, json.dumps(body).encode()):
        try:
            req = parse_request(loads(value) if isinstance(value, bytes) else value)
        except BadRequest as e:
            assert e.status == 400 and e.body()["error"]["type"] == "invalid_request_error"
            continue
        s = req.sampling
        assert 1 <= req.n <= 128 and (req.max_tokens is None or req.max_tokens >= 1)
        assert math.isfinite(s.temperature) and s.temperature >= 0 and 0 < s.top_p <= 1
        assert all(isinstance(m["role"], str) and isinstance(m["content"], str) for m in req.conversation)


@given(raw=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
@settings(max_examples=200, deadline=None)
def test_any_bytes_are_json_or_a_400(raw):
    try:
        loads(raw)
    except BadRequest as e:
        assert e.status == 400
