"""Load test of ``memtrain serve``: concurrent OpenAI clients against one server, batched vs concurrency 1.

    python benchmarks/bench_serve_load.py            # embedded SmolLM2; 32 requests at concurrency 1, 4, 16
    python benchmarks/bench_serve_load.py --quick    # 8 requests at concurrency 1 and 4, 16 tokens (a minute)

The server runs as users run it, ``memtrain serve`` in its own process on loopback (so its RSS is its own
and the clients' threads do not share its interpreter). For each concurrency level, that many client
threads, each with its own ``openai.OpenAI`` client (raw ``httpx`` if the ``openai`` package is not
installed; the results name the client), send the same fixed list of requests (greedy, ``max_tokens``
fixed). Per level: wall time, requests/s, completion tokens/s (from the responses' ``usage``), p50/p99
latency (nearest rank), failed requests (an error or a non-200) and lost ones (sent, never answered nor
failed): both must be 0. The server's RSS is read before the first level and after each; its ``/health``
counters give the mean generate-call batch size per level. The headline is the ratio of the highest
level's throughput to concurrency 1's, measured in the same run.
Writes benchmarks/results/serve_load.{json,md} (``--quick``: serve_load_quick).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import signal
import subprocess
import sys
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


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    exe = Path(sys.executable).with_name("memtrain")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "memtrain.cli"]),
           "serve", f"model={args.model}", "port=0", f"engine.batch_size={args.batch_size}",
           f"max_batch={args.max_batch}", f"engine.dtype={args.dtype}"]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)  # torch's intra-op threads in the server
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:  # the server prints its URL once the model is loaded and the port bound
        if line.startswith("memtrain serve: http://"):
            url = line.split()[2]
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain: never block it
            return proc, url
    sys.exit(f"bench_serve_load: the server exited before listening (exit {proc.wait()})")


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

    def rank(q: float) -> float | None:  # nearest-rank percentile
        return round(done[max(0, math.ceil(q * len(done)) - 1)], 3) if done else None

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
        "latency_p50_s": rank(0.50),
        "latency_p99_s": rank(0.99),
        "latency_max_s": round(done[-1], 3) if done else None,
        "errors": errors[:5],
    }


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
    ap.add_argument("--quick", action="store_true", help="8 requests at concurrency 1 and 4, 16 tokens")
    ap.add_argument("--name", default="serve_load", help="results file stem")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    if args.quick:  # a smoke run: never overwrite the full run's results
        args.concurrency, args.requests, args.max_tokens = "1,4", 8, 16
        args.name = args.name if args.name != "serve_load" else "serve_load_quick"
    levels = [int(c) for c in args.concurrency.split(",")]
    if levels[0] != 1:
        sys.exit("bench_serve_load: the first --concurrency level must be 1 (the baseline)")

    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    proc, url = start_server(args)
    server = psutil.Process(proc.pid)
    health = url.removesuffix("/v1") + "/health"
    try:
        requests = prompts(args.requests)
        run_level(url, 1, requests[:2], args.max_tokens, args.timeout)  # warm-up (first-call costs)
        rss_before = server.memory_info().rss
        rows = []
        for c in levels:
            h0 = httpx.get(health).json()
            row = run_level(url, c, requests, args.max_tokens, args.timeout)
            h1 = httpx.get(health).json()
            calls = h1["batches"] - h0["batches"]
            row["generate_calls"] = calls
            convs = h1["conversations"] - h0["conversations"]
            row["mean_batch"] = round(convs / calls, 2) if calls else None
            row["server_rss_mb_after"] = round(server.memory_info().rss / 2**20, 1)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "errors"}), flush=True)
        rss_after = server.memory_info().rss
    finally:
        proc.send_signal(signal.SIGINT)  # the server closes its socket and batcher on Ctrl-C
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    base, top = rows[0], rows[-1]
    result = {
        "benchmark": "serve_load",
        "model": args.model,
        "client": client_name(),
        "server": {"engine.batch_size": args.batch_size, "max_batch": args.max_batch, "dtype": args.dtype,
                   "torch_threads": args.threads or "default"},
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_avg_at_start": round(load0, 2),
        "requests_per_level": args.requests,
        "max_tokens": args.max_tokens,
        "levels": rows,
        "failed_total": sum(r["failed"] for r in rows),
        "lost_total": sum(r["lost"] for r in rows),
        "server_rss_mb_before": round(rss_before / 2**20, 1),
        "server_rss_mb_after": round(rss_after / 2**20, 1),
        "throughput_ratio_vs_concurrency_1": round(top["completion_tokens_per_s"]
                                                   / base["completion_tokens_per_s"], 2),
        "requests_per_s_ratio_vs_concurrency_1": round(top["requests_per_s"] / base["requests_per_s"], 2),
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    cmd = " ".join(["python benchmarks/bench_serve_load.py", *sys.argv[1:]])
    md = [
        "# Serving under load: concurrent OpenAI clients against `memtrain serve`",
        "",
        f"`{cmd}`: `memtrain serve model={args.model}` in its own process on loopback (engine.batch_size "
        f"{args.batch_size}, max_batch {args.max_batch}, dtype {args.dtype}, torch threads "
        f"{args.threads or 'default'}); {args.requests} chat requests per level (distinct prompts, greedy, "
        f"max_tokens {args.max_tokens}) from N client threads, each with its own {result['client']} client; "
        f"{os.cpu_count()} CPUs shared by server and clients, load average {result['load_avg_at_start']} at "
        f"start; {result['total_seconds']} s in all, model load included.",
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
        f"**Batched serving at {top['concurrency']} clients: {result['throughput_ratio_vs_concurrency_1']}x "
        f"the completion tokens/s of one client** ({result['requests_per_s_ratio_vs_concurrency_1']}x the "
        f"requests/s), same run. Failed requests: {result['failed_total']}; lost: {result['lost_total']}. "
        f"Server RSS {result['server_rss_mb_before']} MB after warm-up, {result['server_rss_mb_after']} MB "
        "after the last level.",
        "",
        f"p99 is the nearest-rank percentile of the level's {args.requests} requests"
        f"{': the slowest one' if args.requests < 100 else ''}. "
        "Latency at N clients includes the time a request waits for the batch ahead of it.",
        "",
    ]
    (out / f"{args.name}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0 if result["failed_total"] == 0 and result["lost_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
