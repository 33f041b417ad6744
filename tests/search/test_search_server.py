"""`memtrain retriever serve` under abuse (issue 23): bursts of new connections, strict JSON, body cap, read
timeouts and the concurrency bound, on loopback over a trivial backend; and its request schema against any
JSON (hypothesis)."""

from __future__ import annotations

import json
import threading
import time

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from test_serve import JSON, JSON_LEAF, burst, exchange, head, serving, status_of, wait_until

from memtrain.records import Hit
from memtrain.search.server import make_retriever_server, parse_retrieve
from memtrain.serving.http import HTTPConfig
from memtrain.serving.protocol import BadRequest, loads


class Echo:
    """A backend that finds each query itself: the tests measure the server, not a search."""

    kind = "echo"

    def search(self, queries: list[str], topk: int | None = None) -> list[list[Hit]]:
        return [[Hit(f"q{i}", q, Hit.format_contents(q, "text"), 1.0)] for i, q in enumerate(queries)]


class Gated(Echo):
    """Echo behind a gate: ``search`` signals ``entered`` and waits for ``release``."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def search(self, queries, topk=None):
        self.entered.set()
        assert self.release.wait(60), "the test never released the gate"
        return super().search(queries, topk)


def running(backend=None, **http):
    """A retriever server over ``backend`` on a free loopback port, for the ``with`` block."""
    return serving(make_retriever_server(backend or Echo(), port=0, http=HTTPConfig(**http)))


def test_a_burst_of_new_connections_is_all_answered():
    """stdlib http.server's listen backlog of 5 reset 13 of 64 such requests at 32-way concurrency."""
    with running() as srv:
        codes = burst(srv.url, 128, "POST", json.dumps({"queries": ["capital of France"]}).encode())
        assert codes == [200] * 128, sorted(map(str, codes))


def test_nan_infinity_and_bad_content_length_are_400s():
    with running() as srv:
        for raw, field in ((b'{"queries": ["a"], "topk": NaN}', "topk"),
                           (b'{"queries": ["a"], "topk": Infinity}', "topk"),
                           (b'{"queries": ["a", -Infinity]}', "queries[1]"),
                           (b'{"queries": ["a"], "return_scores": NaN}', "return_scores")):
            r = httpx.post(srv.url, content=raw)
            assert r.status_code == 400 and f"'{field}'" in r.json()["detail"], (raw, r.text)
        for length in ("abc", "-1", "5, 6"):
            got, closed = exchange(srv.server_address, head("/retrieve", length) + b"{}")
            assert status_of(got) == 400 and closed, (length, got[:200])


def test_an_over_cap_body_is_a_413_and_a_slow_one_a_408():
    with running(max_body_bytes=1024, read_timeout_s=0.5) as srv:
        got, closed = exchange(srv.server_address, head("/retrieve", 2000) + b"{")
        assert status_of(got) == 413 and closed and b"max_body_bytes" in got
        chunk = b"100\r\n" + b" " * 256 + b"\r\n"  # chunked, no Content-Length: counted as it streams in
        got, closed = exchange(srv.server_address, head("/retrieve", None, "Transfer-Encoding: chunked\r\n")
                               + chunk * 6)
        assert status_of(got) == 413 and closed
        t0 = time.monotonic()
        got, closed = exchange(srv.server_address, head("/retrieve", 100) + b'{"queries"')
        assert status_of(got) == 408 and closed and json.loads(got.split(b"\r\n\r\n", 1)[1])["detail"]
        got, closed = exchange(srv.server_address, b"POST /retrieve HTTP/1.1\r\nHost: x")
        assert got == b"" and closed
        assert time.monotonic() - t0 < 8
        assert httpx.post(srv.url, json={"queries": ["a"]}).json()["result"][0][0]["id"] == "q0"


def test_requests_beyond_the_concurrency_bound_are_503s():
    gate = Gated()
    with running(gate, max_concurrency=1) as srv:
        out: dict = {}
        t = threading.Thread(target=lambda: out.setdefault("r", httpx.post(srv.url, json={"queries": ["a"]},
                                                                          timeout=60)), daemon=True)
        t.start()
        assert gate.entered.wait(30)
        r = httpx.post(srv.url, json={"queries": ["b"]})
        assert r.status_code == 503 and "max_concurrency=1" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
        assert httpx.get(srv.url.replace("/retrieve", "/health")).json()["status"] == "ok"
        gate.release.set()
        t.join(30)
        assert out["r"].status_code == 200
        wait_until(lambda: srv.busy.active == 0, "the slot is released")
        assert httpx.post(srv.url, json={"queries": ["c"]}).status_code == 200


RETRIEVE_BODY = JSON | st.fixed_dictionaries(
    {"queries": st.lists(st.text(max_size=10), max_size=4) | JSON_LEAF | JSON},
    optional={"topk": JSON_LEAF | JSON, "return_scores": JSON_LEAF | JSON})


@given(body=RETRIEVE_BODY)
@settings(max_examples=300, deadline=None)
def test_any_json_is_a_retrieve_request_or_a_400(body):
    for value in (body, json.dumps(body).encode()):
        try:
            parsed = loads(value) if isinstance(value, bytes) else value
            queries, topk, scores = parse_retrieve(parsed, 3, 100, 4096)
        except BadRequest as e:
            assert e.status == 400 and str(e)
            continue
        assert all(isinstance(q, str) for q in queries) and 1 <= topk <= 100 and isinstance(scores, bool)
