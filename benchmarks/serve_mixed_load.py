"""Classify latency of `effnet serve` with and without explanations arriving (issue 29): a measurement, not a test.

Starts its own server on a free 127.0.0.1 port, then runs two phases of --seconds each:

1. classify only: /v1/classify at a steady --rate (requests per second, open loop: each request is sent on
   schedule whether or not the previous one is answered, so a stall shows as latency, not as fewer requests);
2. the same classify load while --explainers clients send /v1/explain back to back, cycling through every
   method (gradcam, integrated-gradients, occlusion), each hanging up after --explain-wait seconds.

Reports classify p50/p99 and status counts per phase, and the explain statuses (200, 422 too costly,
503 busy, hung up). Prints the machine and its load (uptime) at the start.

    .venv/bin/python benchmarks/serve_mixed_load.py --model efficientnet-lite0 --rate 4 --seconds 30
    .venv/bin/python benchmarks/serve_mixed_load.py --model efficientnet-b5 --weights random --rate 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_serve import REPO, start_server  # noqa: E402

METHODS = ("gradcam", "integrated-gradients", "occlusion")
PHOTO = (REPO / "examples" / "chelsea.png").read_bytes()


async def classify_load(client: httpx.AsyncClient, rate: float, seconds: float) -> tuple[list[float], Counter]:
    latencies: list[float] = []
    statuses: Counter = Counter()

    async def one() -> None:
        started = time.perf_counter()
        try:
            r = await client.post("/v1/classify", content=PHOTO, timeout=60)
            statuses[r.status_code] += 1
            if r.status_code == 200:
                latencies.append(time.perf_counter() - started)
        except httpx.HTTPError as e:
            statuses[type(e).__name__] += 1

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies, statuses


async def explainer(url: str, index: int, stop: asyncio.Event, wait_s: float, statuses: Counter) -> None:
    i = index
    while not stop.is_set():
        method = METHODS[i % len(METHODS)]
        i += 1
        async with httpx.AsyncClient(base_url=url) as client:
            try:
                r = await client.post(f"/v1/explain?method={method}", content=PHOTO, timeout=wait_s)
                statuses[f"{method} {r.status_code}"] += 1
                if r.status_code == 503:
                    await asyncio.sleep(min(5.0, float(r.headers.get("retry-after", "1"))))
            except httpx.TimeoutException:
                statuses[f"{method} hung up"] += 1


def summary(latencies: list[float], statuses: Counter) -> dict:
    ms = np.asarray(latencies) * 1000
    return {
        "answered_200": len(latencies),
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
    }


async def run(args: argparse.Namespace, url: str) -> dict:
    async with httpx.AsyncClient(base_url=url) as client:
        for _ in range(3):  # warm-up, and the explainer's model built and measured once
            await client.post("/v1/classify", content=PHOTO, timeout=120)
        r = await client.post("/v1/explain?method=gradcam", content=PHOTO, timeout=600)
        warm = r.status_code
        alone = summary(*await classify_load(client, args.rate, args.seconds))
        stop, explains = asyncio.Event(), Counter()
        workers = [
            asyncio.create_task(explainer(url, i, stop, args.explain_wait, explains)) for i in range(args.explainers)
        ]
        await asyncio.sleep(1.0)
        mixed = summary(*await classify_load(client, args.rate, args.seconds))
        stop.set()
        await asyncio.gather(*workers)
    return {"explain_warmup_status": warm, "classify_alone": alone, "classify_with_explains": mixed,
            "explains": dict(sorted(explains.items()))}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--weights", default=None, help="e.g. 'random' for a random-init B5 (no real weights here)")
    p.add_argument("--rate", type=float, default=4.0, help="classify requests per second")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    p.add_argument("--explainers", type=int, default=4, help="concurrent explain clients in phase 2")
    p.add_argument("--explain-wait", type=float, default=20.0, help="seconds an explain client waits, then hangs up")
    p.add_argument("--server-args", default="", help="more `effnet serve` options")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    extra = ["--weights", args.weights] if args.weights else []
    extra += args.server_args.split()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(args.model, extra, Path(tmp) / "serve.log")
        try:
            result = asyncio.run(run(args, url))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    result = {"model": args.model, "weights": args.weights, "rate_per_s": args.rate, "seconds": args.seconds,
              "explainers": args.explainers, "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs", "uptime_at_start": uptime, **result}  # fmt: skip
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
