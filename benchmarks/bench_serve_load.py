"""Load test of ``memtrain serve`` and ``memtrain retriever serve``: throughput under concurrent OpenAI
clients, bursts of new connections, and slow clients.

    python benchmarks/bench_serve_load.py --threads 1   # all parts (~6 min on 2 CPUs)
    python benchmarks/bench_serve_load.py --quick        # 8 requests at 1 and 4 clients; bursts of 32, 64
    python benchmarks/bench_serve_load.py --parts bursts,slow   # without the model-throughput levels

Both servers run as users run them, in their own process on loopback (so their RSS is their own and the
clients' threads do not share their interpreter): ``memtrain serve model=M`` and ``memtrain retriever serve``
over ``--corpus`` (default: a synthetic corpus of ``--passages`` passages written to a temporary folder; the
HTTP layer is measured, not the search). Three parts (``--parts``):

- **throughput** (``memtrain serve``): for each concurrency level, that many client threads, each with its
  own ``openai.OpenAI`` client (raw ``httpx`` if the ``openai`` package is not installed; the results name
  the client), send the same fixed list of requests (greedy, ``max_tokens`` fixed). Per level: wall time,
  requests/s, completion tokens/s (from the responses' ``usage``), p50/p99 latency (nearest rank), failed
  requests (an error or a non-200) and lost ones (sent, never answered nor failed): both must be 0. The
  server's ``/health`` counters give the mean generate-call batch size per level. The headline is the ratio
  of the highest level's throughput to concurrency 1's, measured in the same run.
- **bursts** (both servers): ``--bursts`` levels (32, 64, 256): that many clients released together, each
  opening a new connection for one request (``Connection: close``, as a client without a pool does):
  ``max_tokens`` ``--burst-max-tokens`` chat requests, or one ``/retrieve`` query. Per level: answered 200,
  resets (connection reset or closed before an answer: what stdlib ``http.server``'s listen backlog of 5
  produced), refused, timeouts, other errors, non-200 answers, lost (no outcome within ``--burst-timeout``),
  p50/p99/max latency from the release, the server's RSS after. Target: 0 resets and 0 lost at 256.
- **slow** (both servers): ``--slow-clients`` connections that stop sending (half of them mid-head, half
  mid-body) while a burst of 32 normal requests runs; the normal ones must all be answered, and the server
  must close every slow one after its read timeout (``http.read_timeout_s``, set to ``--read-timeout`` for
  the run), a mid-body one with a 408.

Writes benchmarks/results/serve_load.{json,md} (``--quick``: serve_load_quick).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import queue
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["rivers", "mountains", "volcanoes", "deserts", "glaciers", "forests", "islands", "lakes",
          "canyons", "caves", "reefs", "steppes"]


def prompts(n: int) -> list[list[dict[str, str]]]:
    """``n`` distinct short chat prompts (a fixed list: every level sends the same requests)."""
    return [[{"role": "user", "content": f"Request {i}. In two sentences, tell me something about "
                                         f"{TOPICS[i % len(TOPICS)]}."}] for i in range(n)]


def start_server(args: argparse.Namespace, verb: list[str], options: list[str]
                 ) -> tuple[subprocess.Popen, str]:
    """``memtrain VERB... OPTIONS`` in its own process on a free port; (process, the URL it prints)."""
    exe = Path(sys.executable).with_name("memtrain")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "memtrain.cli"]),
           *verb, "port=0", f"http.read_timeout_s={args.read_timeout}", *options]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)  # torch's intra-op threads in the server
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    prefix = f"memtrain {' '.join(verb)}: http://"
    for line in proc.stdout:  # the server prints its URL once it is ready and the port bound
        if line.startswith(prefix):
            url = line.split()[len(verb) + 1]
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain: never block it
            return proc, url
    sys.exit(f"bench_serve_load: {' '.join(cmd)} exited before listening (exit {proc.wait()})")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)  # the server closes its socket (and batcher) on Ctrl-C
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_mb(proc: subprocess.Popen) -> float:
    return round(psutil.Process(proc.pid).memory_info().rss / 2**20, 1)


def make_client(url: str, timeout: float):
    """A function sending one chat request and returning its completion-token count."""
    try:
        import openai
    except ImportError:
        client = httpx.Client(base_url=url, timeout=timeout)

        def send_httpx(messages, max_tokens):
            r = client.post("/chat/completions", json={"model": "bench", "messages": messages,
                                                       "max_tokens": max_tokens, "temperature": 0})
            r.raise_for_status()
            return r.json()["usage"]["completion_tokens"]

        return send_httpx
    oa = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=timeout)

    def send_openai(messages, max_tokens):
        resp = oa.chat.completions.create(model="bench", messages=messages, max_tokens=max_tokens,
                                          temperature=0)
        return resp.usage.completion_tokens

    return send_openai


def client_name() -> str:
    try:
        import openai
    except ImportError:
        return f"httpx {httpx.__version__} (the openai package is not installed)"
    return f"openai {openai.__version__}"


def run_level(url: str, concurrency: int, requests: list, max_tokens: int, timeout: float) -> dict:
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(requests)):
        todo.put(i)
    latency: list[float | None] = [None] * len(requests)
    tokens = [0] * len(requests)
    errors: list[str] = []

    def worker() -> None:
        send = make_client(url, timeout)
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            t0 = time.perf_counter()
            try:
                tokens[i] = send(requests[i], max_tokens)
                latency[i] = time.perf_counter() - t0
            except Exception as e:  # counted, never raised: a load test reports failures
                errors.append(f"request {i}: {type(e).__name__}: {str(e)[:200]}")

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    wall = time.perf_counter() - t0
    done = sorted(x for x in latency if x is not None)
    n_tok = sum(tokens)

    return {
        "concurrency": concurrency,
        "requests": len(requests),
        "ok": len(done),
        "failed": len(errors),
        "lost": len(requests) - len(done) - len(errors),
        "seconds": round(wall, 2),
        "requests_per_s": round(len(done) / wall, 3),
        "completion_tokens": n_tok,
        "completion_tokens_per_s": round(n_tok / wall, 2),
        "latency_p50_s": rank(done, 0.50),
        "latency_p99_s": rank(done, 0.99),
        "latency_max_s": round(done[-1], 3) if done else None,
        "errors": errors[:5],
    }


def rank(done: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``done``."""
    return round(done[max(0, math.ceil(q * len(done)) - 1)], 3) if done else None


# ------------------------------------------------------------------------- bursts of new connections

RESET = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)  # RemoteDisconnected is a reset


def outcome(url: str, body: bytes | None, timeout: float) -> int | str:
    """One request on a new connection: its status, or what went wrong instead."""
    u = httpx.URL(url)
    conn = http.client.HTTPConnection(u.host, u.port, timeout=timeout)
    try:
        conn.request("POST" if body is not None else "GET", u.raw_path.decode(), body=body,
                     headers={"Connection": "close", "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except RESET:
        return "reset"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except Exception as e:  # counted, never raised
        return f"error: {type(e).__name__}"
    finally:
        conn.close()


def burst(url: str, bodies: list[bytes], timeout: float) -> dict:
    """``len(bodies)`` clients released together, each with one request on a new connection."""
    n = len(bodies)
    start = threading.Barrier(n + 1)
    results: list[tuple[int | str, float] | None] = [None] * n

    def client(i: int) -> None:
        start.wait()
        t0 = time.perf_counter()
        got = outcome(url, bodies[i], timeout)
        results[i] = (got, time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(max(0.0, timeout + 5 - (time.perf_counter() - t0)))
    wall = time.perf_counter() - t0
    got = [r for r in results if r is not None]
    ok = sorted(d for status, d in got if status == 200)
    kinds = [status for status, _ in got]
    errors = sorted({k for k in kinds if isinstance(k, str) and k.startswith("error")})
    return {
        "clients": n,
        "ok": len(ok),
        "resets": kinds.count("reset"),
        "refused": kinds.count("refused"),
        "timeouts": kinds.count("timeout"),
        "other_errors": sum(1 for k in kinds if isinstance(k, str) and k.startswith("error")),
        "non_200": sum(1 for k in kinds if isinstance(k, int) and k != 200),
        "lost": n - len(got),
        "seconds": round(wall, 2),
        "latency_p50_s": rank(ok, 0.50),
        "latency_p99_s": rank(ok, 0.99),
        "latency_max_s": round(ok[-1], 3) if ok else None,
        "statuses": sorted({k for k in kinds if isinstance(k, int)}),
        "errors": errors[:5],
    }


def bursts(proc: subprocess.Popen, url: str, body, levels: list[int], timeout: float) -> list[dict]:
    rows = []
    for n in levels:
        row = burst(url, [body(i) for i in range(n)], timeout)
        row["server_rss_mb_after"] = rss_mb(proc)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# ------------------------------------------------------------------------------------- slow clients


def slow_probe(proc: subprocess.Popen, url: str, body, n_slow: int, read_timeout: float, timeout: float
               ) -> dict:
    """``n_slow`` clients that stop sending (half mid-head, half mid-body), a burst of 32 normal requests
    meanwhile, then how the server treats the slow ones."""
    u = httpx.URL(url)
    path = u.raw_path.decode()
    t0 = time.monotonic()
    slow = []
    for i in range(n_slow):
        s = socket.create_connection((u.host, u.port), timeout=timeout)
        if i % 2:  # half a head
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Ty".encode())
        else:  # a whole head, 10 of 1000 announced body bytes
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                      f"Content-Length: 1000\r\n\r\n{{\"a\": \"1234".encode())
        slow.append(s)
    got: list[bytes] = [b""] * n_slow
    closed_at: list[float | None] = [None] * n_slow
    watcher = threading.Thread(target=watch, args=(slow, got, closed_at, t0, t0 + 3 * read_timeout + 10),
                               daemon=True)
    watcher.start()  # the slow connections are watched while the normal burst runs
    during = burst(url, [body(i) for i in range(32)], timeout)
    watcher.join()
    for sock in slow:
        sock.close()
    statuses = [int(g.split(b" ", 2)[1]) if g.startswith(b"HTTP/1.1 ") else None for g in got]
    seconds = [c for c in closed_at if c is not None]
    return {
        "slow_clients": n_slow,
        "read_timeout_s": read_timeout,
        "closed_by_server": len(seconds),
        "answered_408": statuses.count(408),
        "max_seconds_to_close": round(max(seconds), 2) if seconds else None,
        "burst_during": {k: during[k] for k in ("clients", "ok", "resets", "lost", "latency_p50_s",
                                                 "latency_p99_s")},
        "server_rss_mb_after": rss_mb(proc),
    }


def watch(socks: list[socket.socket], got: list[bytes], closed_at: list[float | None], t0: float,
          deadline: float) -> None:
    """Read every socket until the server closes it (``closed_at[i]``: seconds after ``t0``) or
    ``deadline``; what each received goes to ``got[i]``."""
    sel = selectors.DefaultSelector()
    for i, sock in enumerate(socks):
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            i = key.data
            try:
                chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
            except RESET:
                chunk = b""
            if chunk:
                got[i] += chunk
            else:
                closed_at[i] = round(time.monotonic() - t0, 2)
                sel.unregister(key.fileobj)
    sel.close()


def synthetic_corpus(folder: Path, n: int) -> Path:
    """``n`` passages in wiki-18 form, words drawn from a fixed list (the search is not what is measured)."""
    words = [*TOPICS, "river", "city", "born", "capital", "mountain", "king", "war", "film", "album", "team"]
    with open(folder / "passages.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(40))
            f.write(json.dumps({"id": str(i), "contents": f'"Passage {i}"\n{text}'}) + "\n")
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="served model (tiny: a random model, for a smoke run)")
    ap.add_argument("--concurrency", default="1,4,16", help="comma-separated client thread counts")
    ap.add_argument("--requests", type=int, default=32, help="requests sent at every level")
    ap.add_argument("--max-tokens", type=int, default=32, help="max_tokens of every request")
    ap.add_argument("--batch-size", type=int, default=16, help="server engine.batch_size (HF micro-batch)")
    ap.add_argument("--max-batch", type=int, default=64, help="server max_batch")
    ap.add_argument("--dtype", default="auto", help="server engine.dtype")
    ap.add_argument("--threads", type=int, default=0,
                    help="server torch threads (OMP_NUM_THREADS; 0: torch's default)")
    ap.add_argument("--timeout", type=float, default=600.0, help="client timeout per request, seconds")
    ap.add_argument("--parts", default="throughput,bursts,slow", help="comma-separated parts to run")
    ap.add_argument("--bursts", default="32,64,256", help="comma-separated burst sizes (new connections)")
    ap.add_argument("--burst-max-tokens", type=int, default=2, help="max_tokens of burst chat requests")
    ap.add_argument("--burst-timeout", type=float, default=300.0, help="seconds a burst request may take")
    ap.add_argument("--slow-clients", type=int, default=16, help="slow connections in the slow-client probe")
    ap.add_argument("--read-timeout", type=float, default=5.0, help="the servers' http.read_timeout_s")
    ap.add_argument("--corpus", default=None, help="retriever corpus (default: a synthetic one)")
    ap.add_argument("--passages", type=int, default=5000, help="passages of the synthetic corpus")
    ap.add_argument("--quick", action="store_true",
                    help="8 requests at concurrency 1 and 4, 16 tokens; bursts of 32 and 64; 8 slow clients")
    ap.add_argument("--name", default="serve_load", help="results file stem")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    if args.quick:  # a smoke run: never overwrite the full run's results
        args.concurrency, args.requests, args.max_tokens = "1,4", 8, 16
        args.bursts, args.slow_clients = "32,64", 8
        args.name = args.name if args.name != "serve_load" else "serve_load_quick"
    levels = [int(c) for c in args.concurrency.split(",")]
    if levels[0] != 1:
        sys.exit("bench_serve_load: the first --concurrency level must be 1 (the baseline)")
    parts = set(args.parts.split(","))
    if parts - {"throughput", "bursts", "slow"}:
        sys.exit(f"bench_serve_load: unknown --parts {sorted(parts - {'throughput', 'bursts', 'slow'})}")
    burst_levels = [int(c) for c in args.bursts.split(",")]

    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    result: dict = {
        "benchmark": "serve_load",
        "model": args.model,
        "client": client_name(),
        "server": {"engine.batch_size": args.batch_size, "max_batch": args.max_batch, "dtype": args.dtype,
                   "torch_threads": args.threads or "default", "http.read_timeout_s": args.read_timeout},
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_avg_at_start": round(load0, 2),
        "parts": sorted(parts),
    }

    # ----- memtrain serve
    proc, url = start_server(args, ["serve"], [f"model={args.model}", f"engine.batch_size={args.batch_size}",
                                               f"max_batch={args.max_batch}", f"engine.dtype={args.dtype}"])
    health = url.removesuffix("/v1") + "/health"

    burst_prompts = prompts(max(*burst_levels, 32))

    def chat(i: int) -> bytes:
        return json.dumps({"model": "bench", "messages": burst_prompts[i], "temperature": 0,
                           "max_tokens": args.burst_max_tokens}).encode()

    try:
        requests = prompts(args.requests)
        run_level(url, 1, requests[:2], args.max_tokens, args.timeout)  # warm-up (first-call costs)
        result["server_rss_mb_before"] = rss_mb(proc)
        if "throughput" in parts:
            rows = []
            for c in levels:
                h0 = httpx.get(health).json()
                row = run_level(url, c, requests, args.max_tokens, args.timeout)
                h1 = httpx.get(health).json()
                calls = h1["batches"] - h0["batches"]
                row["generate_calls"] = calls
                convs = h1["conversations"] - h0["conversations"]
                row["mean_batch"] = round(convs / calls, 2) if calls else None
                row["server_rss_mb_after"] = rss_mb(proc)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "errors"}), flush=True)
            base, top = rows[0], rows[-1]
            result.update({
                "requests_per_level": args.requests,
                "max_tokens": args.max_tokens,
                "levels": rows,
                "failed_total": sum(r["failed"] for r in rows),
                "lost_total": sum(r["lost"] for r in rows),
                "server_rss_mb_after": rss_mb(proc),
                "throughput_ratio_vs_concurrency_1": round(top["completion_tokens_per_s"]
                                                           / base["completion_tokens_per_s"], 2),
                "requests_per_s_ratio_vs_concurrency_1": round(top["requests_per_s"]
                                                               / base["requests_per_s"], 2),
            })
        serve_url = url + "/chat/completions"
        if "bursts" in parts:
            rows = bursts(proc, serve_url, chat, burst_levels, args.burst_timeout)
            result["bursts"] = {"memtrain serve": rows}
        if "slow" in parts:
            result["slow"] = {"memtrain serve": slow_probe(proc, serve_url, chat, args.slow_clients,
                                                           args.read_timeout, args.burst_timeout)}
    finally:
        stop_server(proc)

    # ----- memtrain retriever serve
    if parts & {"bursts", "slow"}:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = args.corpus or str(synthetic_corpus(Path(tmp), args.passages))
            result["retriever_corpus"] = args.corpus or f"synthetic, {args.passages} passages"
            proc, url = start_server(args, ["retriever", "serve"], [f"corpus={corpus}", "kind=bm25",
                                                                    "progress=false"])

            def query(i: int) -> bytes:
                return json.dumps({"queries": [f"which {TOPICS[i % len(TOPICS)]} river city {i}"],
                                   "topk": 3}).encode()

            try:
                if "bursts" in parts:
                    result["bursts"]["memtrain retriever serve"] = bursts(proc, url, query, burst_levels,
                                                                          args.burst_timeout)
                if "slow" in parts:
                    result["slow"]["memtrain retriever serve"] = slow_probe(
                        proc, url, query, args.slow_clients, args.read_timeout, args.burst_timeout)
            finally:
                stop_server(proc)
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = report(args, result)
    (out / f"{args.name}.md").write_text(md)
    print(md)
    return 0 if ok(result) else 1


def ok(result: dict) -> bool:
    """No failed or lost request anywhere; every burst answered; every slow client closed."""
    good = result.get("failed_total", 0) == 0 and result.get("lost_total", 0) == 0
    for rows in result.get("bursts", {}).values():
        good &= all(r["ok"] == r["clients"] for r in rows)
    for probe in result.get("slow", {}).values():
        good &= probe["closed_by_server"] == probe["slow_clients"]
        good &= probe["burst_during"]["ok"] == probe["burst_during"]["clients"]
    return bool(good)


def report(args: argparse.Namespace, result: dict) -> str:
    cmd = " ".join(["python benchmarks/bench_serve_load.py", *sys.argv[1:]])
    md = [
        "# Serving under load: `memtrain serve` and `memtrain retriever serve`",
        "",
        f"`{cmd}`: each server in its own process on loopback (uvicorn + Starlette; `memtrain serve "
        f"model={args.model}` with engine.batch_size {args.batch_size}, max_batch {args.max_batch}, dtype "
        f"{args.dtype}, torch threads {args.threads or 'default'}; `memtrain retriever serve` BM25 over "
        f"{result.get('retriever_corpus', '-')}; both with http.read_timeout_s={args.read_timeout}); "
        f"{os.cpu_count()} CPUs shared by servers and clients, load average {result['load_avg_at_start']} at "
        f"start; {result['total_seconds']} s in all, model load included.",
        "",
    ]
    if "levels" in result:
        rows, top = result["levels"], result["levels"][-1]
        md += [
            "## Throughput: concurrent OpenAI clients against `memtrain serve`",
            "",
            f"{args.requests} chat requests per level (distinct prompts, greedy, max_tokens "
            f"{args.max_tokens}) from N client threads, each with its own {result['client']} client.",
            "",
            "| clients | seconds | requests/s | completion tokens/s | p50 latency (s) | p99 latency (s) | "
            "generate calls | mean batch | failed | lost | server RSS after (MB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            md.append(f"| {r['concurrency']} | {r['seconds']} | {r['requests_per_s']} | "
                      f"{r['completion_tokens_per_s']} | {r['latency_p50_s']} | {r['latency_p99_s']} | "
                      f"{r['generate_calls']} | {r['mean_batch']} | {r['failed']} | {r['lost']} | "
                      f"{r['server_rss_mb_after']} |")
        md += [
            "",
            f"**Batched serving at {top['concurrency']} clients: "
            f"{result['throughput_ratio_vs_concurrency_1']}x the completion tokens/s of one client** "
            f"({result['requests_per_s_ratio_vs_concurrency_1']}x the requests/s), same run. Failed "
            f"requests: {result['failed_total']}; lost: {result['lost_total']}. Server RSS "
            f"{result['server_rss_mb_before']} MB after warm-up, {result['server_rss_mb_after']} MB after "
            "the last level. p99 is the nearest-rank percentile of the level's requests"
            f"{': the slowest one' if args.requests < 100 else ''}; latency at N clients includes the time a "
            "request waits for the batch ahead of it.",
            "",
        ]
    if "bursts" in result:
        md += [
            "## Bursts of new connections",
            "",
            "N clients released together, each opening a new connection for one request (`Connection: "
            f"close`): a chat request with max_tokens {args.burst_max_tokens} (greedy) to `memtrain serve`, "
            "one query (topk 3) to `memtrain retriever serve`. A reset is a connection reset or closed "
            "before an answer (what the standard library's listen backlog of 5 produced: 20 of 128 at 32 "
            "clients, 52 of 128 at 64 before); lost: no outcome within the burst timeout. Latency from the "
            "release.",
            "",
            "| server | clients | answered 200 | resets | refused | timeouts | other errors | non-200 | "
            "lost | p50 (s) | p99 (s) | max (s) | server RSS after (MB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, rows in result["bursts"].items():
            for r in rows:
                md.append(f"| {name} | {r['clients']} | {r['ok']} | {r['resets']} | {r['refused']} | "
                          f"{r['timeouts']} | {r['other_errors']} | {r['non_200']} | {r['lost']} | "
                          f"{r['latency_p50_s']} | {r['latency_p99_s']} | {r['latency_max_s']} | "
                          f"{r['server_rss_mb_after']} |")
        top = max(burst_levels_of(result))
        met = all(r["resets"] == 0 and r["lost"] == 0 for rows in result["bursts"].values() for r in rows
                  if r["clients"] == top)
        md += ["", f"Target 0 resets and 0 lost at {top} clients: **{'met' if met else 'not met'}**.", ""]
    if "slow" in result:
        md += [
            "## Slow clients",
            "",
            "Connections that stop sending, half mid-head and half mid-body, held while a burst of 32 normal "
            "requests runs (new connections); then each is read until the server closes it.",
            "",
            "| server | slow clients | closed by the server | 408 answers (mid-body) | last closed after "
            "(s) | normal requests answered | their p50 / p99 (s) | server RSS after (MB) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, p in result["slow"].items():
            d = p["burst_during"]
            md.append(f"| {name} | {p['slow_clients']} | {p['closed_by_server']} | {p['answered_408']} | "
                      f"{p['max_seconds_to_close']} | {d['ok']} of {d['clients']} | {d['latency_p50_s']} / "
                      f"{d['latency_p99_s']} | {p['server_rss_mb_after']} |")
        md.append("")
    return "\n".join(md)


def burst_levels_of(result: dict) -> list[int]:
    return [r["clients"] for rows in result["bursts"].values() for r in rows]


if __name__ == "__main__":
    sys.exit(main())
