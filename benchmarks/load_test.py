"""Load test of `sentitune serve` on loopback: requests/s, latency and the batches the server formed.

Starts `sentitune serve RUN --port 0` in its own process (as a user would run it), then, for each
number of concurrent clients (1, 8, 32 by default), fires one-review requests from that many client
threads until `--requests` are answered or `--seconds` have passed, whichever comes first. Each
request is a real IMDb test review (a seeded sample). Reports requests/s, p50 and p99 latency
(client side: queueing, batching and the model together) and the mean batch size the server formed
in that phase (texts / batches from its /health counters), as a markdown table.

    .venv/bin/python benchmarks/load_test.py runs/minilm-lora-quickstart              # print the table
    .venv/bin/python benchmarks/load_test.py runs/minilm-lora-quickstart --write      # and into docs/PERFORMANCE.md

The client threads run on the same machine as the server and take some of its CPU: on a small
machine the numbers are a floor for what the server alone could do.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from docs_block import write_block
from machine import arch, cpus_online

from sentitune.atomic import write_text

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "PERFORMANCE.md"


def reviews(data: str | None, count: int, seed: int, max_chars: int) -> list[str]:
    """A seeded sample of IMDb test reviews (both classes, every length up to the server's --max-chars)."""
    from sentitune.data.imdb import locate_imdb, read_imdb

    test = read_imdb(locate_imdb(data, download=False), splits=("test",))["test"]
    texts = [e.text for e in test if len(e.text) <= max_chars]
    return random.Random(seed).sample(texts, min(count, len(texts)))


def start_server(run: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    """`sentitune serve` on a free loopback port; returns the process and its URL (the line it prints)."""
    command = [sys.executable, "-m", "sentitune.cli", "serve", str(run), "--port", "0", "--log-level", "warning",
               "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
               "--queue-size", str(max(256, 2 * max(args.clients)))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline() if proc.stdout else ""
    if " at http" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r} (exit code {proc.wait()})")
    return proc, line.split(" at ")[1].split()[0]


def phase(url: str, texts: list[str], clients: int, requests: int, seconds: float) -> dict[str, Any]:
    """`clients` threads, each with its own connection, sending one review per request, back to back."""
    lock = threading.Lock()
    sent = 0
    latencies: list[float] = []
    failures: dict[int, int] = {}
    before = httpx.get(f"{url}/health").json()
    start = time.perf_counter()
    deadline = start + seconds

    def client() -> None:
        nonlocal sent
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                with lock:
                    if sent >= requests or time.perf_counter() >= deadline:
                        return
                    text = texts[sent % len(texts)]
                    sent += 1
                t0 = time.perf_counter()
                status = http.post("/predict", json={"text": text}).status_code
                elapsed = time.perf_counter() - t0
                with lock:
                    if status == 200:
                        latencies.append(elapsed)
                    else:
                        failures[status] = failures.get(status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = httpx.get(f"{url}/health").json()
    batches, served = after["batches"] - before["batches"], after["texts"] - before["texts"]
    ms = np.array(latencies) * 1000
    return {"clients": clients, "answered": len(latencies), "failed": failures, "seconds": round(wall, 2),
            "requests_per_s": len(latencies) / wall, "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None, "batches": batches,
            "mean_batch": served / batches if batches else None, "largest_batch": after["largest_batch"]}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| clients | requests answered | requests/s | p50 latency (ms) | p99 latency (ms) | mean batch | "
             "errors |", "|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        errors = ", ".join(f"{n}x {code}" for code, n in sorted(r["failed"].items())) or "none"
        lines.append(f"| {r['clients']} | {r['answered']} in {r['seconds']:.1f} s | {r['requests_per_s']:.1f} | "
                     f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['mean_batch']:.2f} | {errors} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a saved run directory")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated concurrent clients, one phase each")
    parser.add_argument("--requests", type=int, default=400, help="at most this many requests per phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="at most this long per phase")
    parser.add_argument("--max-batch", type=int, default=32, help="the server's --max-batch")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="the server's --max-wait-ms")
    parser.add_argument("--reviews", type=int, default=500, help="distinct IMDb test reviews sent (cycled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="IMDb archive or folder (default: $SENTITUNE_IMDB, then the cache)")
    parser.add_argument("--out", type=Path, help="also write the measurements as JSON here")
    parser.add_argument("--write", action="store_true", help="put the table into docs/PERFORMANCE.md (serve-load)")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    texts = reviews(args.data, args.reviews, args.seed, max_chars=20_000)
    load = os.getloadavg()[0]  # other jobs on the machine: they slow both the server and the clients
    proc, url = start_server(args.run, args)
    try:
        with httpx.Client(base_url=url, timeout=120) as http:  # warm-up: first calls allocate and load kernels
            for text in texts[:4]:
                http.post("/predict", json={"text": text}).raise_for_status()
            meta = http.get("/metadata").json()
        rows = [phase(url, texts, clients, args.requests, args.seconds) for clients in args.clients]
    finally:
        proc.terminate()
        proc.wait()
    command = " ".join(["python", "benchmarks/load_test.py", *map(shlex.quote, sys.argv[1:])])
    body = (f"```\n{command}\n```\n\n"
            f"Run `{meta['run']}` ({meta['method']}, {meta['base_model']}, max_length {meta['max_length']}, "
            f"{meta['precision']}); server `--max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms:g}`; "
            f"one review per request, {len(texts)} distinct IMDb test reviews; {cpus_online()} CPU cores "
            f"({arch()}), shared by the server and the clients (1-minute load average {load:.1f} when "
            f"it started{': other jobs were running too' if load > 1.5 else ''}).\n\n{table(rows)}")
    print(body, end="")
    if args.out:
        write_text(args.out, json.dumps({"command": command, "run": meta, "load_average": load, "phases": rows},
                                         indent=2) + "\n")
    if args.write:
        write_block(DOC, "serve-load", body)
        print(f"wrote the table into {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
