"""Search backends behind one interface: the local index, `memtrain retriever serve` and HTTPRetriever,
against each other on loopback, and the client's retries and errors against hand-made servers."""

from __future__ import annotations

import json
import queue
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest

from memtrain.cli import main
from memtrain.errors import MemtrainError
from memtrain.io import write_jsonl
from memtrain.records import Hit
from memtrain.search.backends import (
    HTTPRetriever,
    LocalIndex,
    SearchBackend,
    SearchConfig,
    make_search,
    normalise_url,
    parse_result,
)
from memtrain.search.server import RetrieverServeConfig, serve
from memtrain.tasks.retrieval import BM25Retriever, DenseRetriever

DOCS = [
    ("Paris", "Paris is the capital and largest city of France, on the Seine."),
    ("Lyon", "Lyon is the third-largest city of France, where the Rhone meets the Saone."),
    ("Seine", "The Seine is a river in northern France that flows through Paris."),
    ("Quark", "A quark is an elementary particle; quarks combine to form protons."),
    ("Proton", "The proton is a subatomic particle made of three quarks."),
]
QUERIES = ["capital of France", "river through Paris", "elementary particle quark", "zzzz"]


def passages() -> list[Hit]:
    return [Hit.from_contents(f"doc{i}", Hit.format_contents(t, x)) for i, (t, x) in enumerate(DOCS)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    write_jsonl(folder / "passages.jsonl", [{"id": p.id, "contents": p.contents} for p in passages()])
    return folder


@pytest.fixture(scope="module")
def served(corpus):
    """`memtrain retriever serve` itself (the recipe), on port 0 in a thread."""
    ready: queue.Queue = queue.Queue()
    cfg = RetrieverServeConfig(corpus=str(corpus), kind="bm25", topk=2, port=0, progress=False)
    thread = threading.Thread(target=serve, args=(cfg, ready.put), daemon=True)
    thread.start()
    server = ready.get(timeout=60)
    yield server
    server.shutdown()
    thread.join(timeout=10)


def test_hit_parses_wiki18_contents():
    h = Hit.from_contents("7", '"Kiss and Tell (1945 film)"\nA 1945 film.\nSecond line.', 1.5)
    assert (h.title, h.text, h.score) == ("Kiss and Tell (1945 film)", "A 1945 film.\nSecond line.", 1.5)
    assert Hit.format_contents(h.title, h.text) == h.contents
    assert Hit.from_contents("8", "Unquoted\nbody").title == "Unquoted"
    bare = Hit.from_contents("9", "no title line at all")
    assert (bare.title, bare.text) == ("", "no title line at all")


def test_local_index_is_a_search_backend(corpus):
    index = make_search(SearchConfig(kind="bm25", corpus=str(corpus), topk=2))
    assert isinstance(index, LocalIndex) and isinstance(index, SearchBackend)
    hits = index.search(QUERIES)
    assert [len(h) for h in hits] == [2, 2, 2, 0]  # default topk from the config; no shared word, no hit
    assert hits[0][0].title == "Paris" and hits[1][0].title == "Seine" and hits[2][0].title == "Quark"
    assert all(h.score > 0 for row in hits for h in row)
    assert hits[0][0].score >= hits[0][1].score
    assert [len(h) for h in index.search(QUERIES[:1], topk=4)] == [3]  # only 3 passages say "France"
    assert index.search([]) == []


def _bag_of_words(texts: list[str]) -> np.ndarray:
    vocab = sorted({w.strip(".,;").lower() for _, x in DOCS for w in f"{_} {x}".split()})
    out = np.zeros((len(texts), len(vocab)))
    for i, t in enumerate(texts):
        for w in t.split():
            if w.strip(".,;").lower() in vocab:
                out[i, vocab.index(w.strip(".,;").lower())] += 1
    return out


def test_dense_local_index_scores_are_cosines():
    index = LocalIndex(passages(), DenseRetriever(_bag_of_words), topk=1, kind="dense")
    (hit,), = index.search(["proton quarks"])
    assert hit.title == "Proton" and 0 < hit.score <= 1


def test_served_index_round_trips_through_http_retriever(served, corpus):
    local = LocalIndex.from_corpus(corpus, "bm25", topk=2, progress=False)
    with HTTPRetriever(served.url, timeout_s=10, retries=0) as remote:
        assert remote.search(QUERIES, topk=3) == local.search(QUERIES, topk=3)  # ids, contents, exact scores
        small = HTTPRetriever(served.url, max_batch=1)  # split into one request per query
        assert small.search(QUERIES, topk=3) == local.search(QUERIES, topk=3)
        small.close()


def test_server_defaults_and_return_scores_false(served):
    r = httpx.post(served.url, json={"queries": ["capital of France"]})  # no topk, no return_scores
    assert r.status_code == 200
    (row,) = r.json()["result"]
    assert len(row) == 2  # the server's topk
    assert set(row[0]) == {"id", "contents"}  # Search-R1's answer without scores: bare documents
    assert parse_result(r.json(), 1)[0][0] == Hit("doc0", "Paris", row[0]["contents"], None)
    scored = httpx.post(served.url, json={"queries": ["capital of France"], "topk": 1, "return_scores": True})
    (item,), = scored.json()["result"]
    assert item["document"]["id"] == "doc0" and item["score"] > 0
    health = httpx.get(served.url.replace("/retrieve", "/health")).json()
    assert health == {"status": "ok", "passages": len(DOCS), "retriever": "bm25"}


@pytest.mark.parametrize("body", [b"not json", b'{"queries": "one"}', b'{"queries": [1]}', b"[]",
                                  b'{"queries": ["a"], "topk": 0}', b'{"queries": ["a"], "topk": "3"}',
                                  b'{"queries": ["a"], "return_scores": "yes"}'])
def test_server_rejects_bad_requests_with_400(served, body):
    r = httpx.post(served.url, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"]


def test_server_unknown_route_is_404(served):
    assert httpx.post(served.url.replace("/retrieve", "/search"), json={}).status_code == 404
    assert httpx.get(served.url.replace("/retrieve", "/nope")).status_code == 404


def test_cli_verb_reports_a_missing_corpus(tmp_path, capsys):
    assert main(["retriever", "serve", f"corpus={tmp_path / 'none'}", "port=0"]) == 2
    err = capsys.readouterr().err
    assert "passage file not found" in err and "memtrain data build search_corpus_cpu" in err


# ------------------------------------------------------------------------------------- client failures


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_a_clear_error_after_retries():
    url = f"http://127.0.0.1:{closed_port()}/retrieve"
    with pytest.raises(MemtrainError, match=r"unreachable after 3 attempt\(s\)") as e:
        HTTPRetriever(url, timeout_s=5, retries=2, backoff_s=0).search(["q"])
    assert url in str(e.value)


class Scripted:
    """A server answering each POST with the next (status, body) of a script, counting requests."""

    def __init__(self, script: list[tuple[int, bytes]]):
        self.script, self.requests = list(script), []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                owner.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                status, body = owner.script.pop(0) if len(owner.script) > 1 else owner.script[0]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/retrieve"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Scripted:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


GOOD = json.dumps({"result": [[{"document": {"id": "1", "contents": '"T"\nbody'}, "score": 2.0}]]}).encode()


def test_server_error_is_retried_then_succeeds():
    with Scripted([(500, b"busy"), (503, b"busy"), (200, GOOD)]) as srv:
        hits = HTTPRetriever(srv.url, retries=2, backoff_s=0).search(["q"], topk=1)
    assert hits == [[Hit("1", "T", '"T"\nbody', 2.0)]]
    assert len(srv.requests) == 3
    assert srv.requests[0] == {"queries": ["q"], "topk": 1, "return_scores": True}


def test_persistent_server_error_names_the_status_after_retries():
    with Scripted([(500, b"index exploded")]) as srv, pytest.raises(MemtrainError) as e:
        HTTPRetriever(srv.url, retries=1, backoff_s=0).search(["q"])
    assert "HTTP 500 after 2 attempt(s)" in str(e.value) and "index exploded" in str(e.value)
    assert len(srv.requests) == 2


def test_client_error_is_not_retried():
    with Scripted([(422, b'{"detail": "bad"}')]) as srv, pytest.raises(MemtrainError, match="HTTP 422"):
        HTTPRetriever(srv.url, retries=3, backoff_s=0).search(["q"])
    assert len(srv.requests) == 1


@pytest.mark.parametrize("body, message", [
    (b"<html>oops</html>", "malformed JSON"),
    (b'{"result": []}', "0 result lists for 1 queries"),
    (b'{"results": [[]]}', "no 'result' list"),
    (b'{"result": [[{"document": {"id": 1}}]]}', "no string 'contents'"),
])
def test_malformed_answers_are_clear_errors(body, message):
    with Scripted([(200, body)]) as srv, pytest.raises(MemtrainError, match=message) as e:
        HTTPRetriever(srv.url, retries=2, backoff_s=0).search(["q"])
    assert srv.url in str(e.value)
    assert len(srv.requests) == 1  # a wrong answer is not retried


def test_url_and_config_handling():
    assert normalise_url("http://10.0.0.1:8000") == "http://10.0.0.1:8000/retrieve"
    assert normalise_url("localhost:8000/") == "http://localhost:8000/retrieve"
    assert normalise_url("http://h:1/api/retrieve") == "http://h:1/api/retrieve"
    remote = make_search(SearchConfig(kind="http", url="http://127.0.0.1:9", topk=5, retries=0))
    assert isinstance(remote, HTTPRetriever) and isinstance(remote, SearchBackend) and remote.topk == 5
    with pytest.raises(MemtrainError, match="topk"):
        make_search(SearchConfig(topk=0))
    # a document given as title + text (some servers) is accepted too
    (hit,), = parse_result({"result": [[{"id": "x", "title": "A", "text": "b"}]]}, 1)
    assert (hit.title, hit.text, hit.score) == ("A", "b", None)


def test_bm25_topk_scored_agrees_with_topk():
    r = BM25Retriever()
    r.index([f"{t} {x}" for t, x in DOCS])
    scored = r.topk_scored(QUERIES, 3, exclude=[{0}, set(), set(), set()])
    assert [[i for i, _ in row] for row in scored] == r.topk(QUERIES, 3, exclude=[{0}, set(), set(), set()])
    assert 0 not in [i for i, _ in scored[0]]
