"""Requests/s and latency percentiles of `tunesmith serve`, with and without dynamic batching.

Starts a real server process per setting (base SmolLM2-135M + two LoRA adapters sharing
it), then drives chat completions from 1 and from 8 concurrent clients, alternating the
two adapters. Greedy decoding up to ``--max-tokens`` (answers may stop earlier at EOS, so
completion tokens are counted and reported as tokens/s too). Prints one JSON line per
(batching, clients) and the batching speedup at 8 clients.

usage: python benchmarks/serve_throughput.py [--requests 32] [--max-tokens 32]
       [--adapter NAME=RUN_DIR --adapter NAME=RUN_DIR]   (default: two random LoRA adapters)
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

BASE = "builtin:smollm2-135m"
PROMPTS = [
    "Write a short poem about the sea.", "What is the capital of France?", "Give me three tips for sleeping well.",
    "Explain what a neural network is.", "Who wrote Hamlet?", "Describe a sunset in two sentences.",
    "What is 12 times 7?", "Name a fruit that is yellow.", "How do plants make food?", "Tell me a fun fact.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(adapters: list[str], max_batch: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "tunesmith.cli", "serve", "--base", BASE, "--port", str(port),
           "--max-batch", str(max_batch), "--batch-wait-ms", "10"]
    for spec in adapters:
        cmd += ["--adapter", spec]
    proc = subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"server did not start:\n{log_path.read_text()[-3000:]}")


def drive(url: str, names: list[str], clients: int, requests: int, max_tokens: int) -> dict:
    def one(i: int) -> tuple[float, int]:
        body = {"model": names[i % len(names)], "max_tokens": max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
        start = time.perf_counter()
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600)
        r.raise_for_status()
        return time.perf_counter() - start, r.json()["usage"]["completion_tokens"]

    one(0)  # warm-up: first-call allocations are not what a running server pays
    before = httpx.get(f"{url}/health").json()["batching"]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    after = httpx.get(f"{url}/health").json()["batching"]
    latencies = sorted(r[0] * 1000 for r in results)
    tokens = sum(r[1] for r in results)

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 1)

    return {"clients": clients, "requests": requests, "wall_s": round(wall, 2),
            "requests_per_s": round(requests / wall, 3), "completion_tokens_per_s": round(tokens / wall, 1),
            "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "mean": round(statistics.mean(latencies), 1)},
            "mean_batch": round((after["jobs"] - before["jobs"]) / max(1, after["batches"] - before["batches"]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32, help="requests per (setting, clients)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=RUN_DIR")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        adapters = args.adapter
        if not adapters:
            from tunesmith.models.load import resolve_model_source
            from tunesmith.synthetic import make_lora_run

            source = resolve_model_source(BASE)
            for name, seed in (("adapter-a", 1), ("adapter-b", 2)):
                make_lora_run(Path(tmp) / name, source, "causal_lm", seed=seed, r=16)
                adapters.append(f"{name}={Path(tmp) / name}")
        names = [spec.partition("=")[0] for spec in adapters]
        results = {}
        for label, max_batch in (("no batching", 1), ("batching", 8)):
            proc, url = start_server(adapters, max_batch, Path(tmp) / f"server-{max_batch}.log")
            try:
                for clients in (1, 8):
                    row = drive(url, names, clients, args.requests, args.max_tokens)
                    row = {"system": f"tunesmith serve ({label}, max_batch={max_batch})", **row}
                    results[(max_batch, clients)] = row
                    print(json.dumps(row), flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    speedup = results[(8, 8)]["requests_per_s"] / results[(1, 8)]["requests_per_s"]
    print(json.dumps({"batching_speedup_at_8_clients": round(speedup, 2),
                      "p50_latency_ratio_at_8_clients": round(results[(8, 8)]["latency_ms"]["p50"]
                                                              / results[(1, 8)]["latency_ms"]["p50"], 2)}))


if __name__ == "__main__":
    main()
