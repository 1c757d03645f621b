"""Load test of `effnet serve`: N requests at concurrency C against a server on this machine.

Reports failures, latency percentiles (p50/p90/p99/max), throughput, the batch sizes the server formed
(from /metrics) and the server's resident memory before and after the run. Starts its own server
(default: efficientnet-lite0 on a free loopback port) unless --url points at a running one; traffic only
ever goes to the loopback address. Bounded in requests and in time (--max-seconds). No assertions:
it measures.

    .venv/bin/python benchmarks/load_serve.py                       # 2,000 requests at concurrency 8
    .venv/bin/python benchmarks/load_serve.py --requests 5000 --concurrency 16 --server-args "--max-batch 16"
    .venv/bin/python benchmarks/load_serve.py --url http://127.0.0.1:8000 --pid 12345 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "imagenet" / "sample"


def rss_mib(pid: int | None) -> dict | None:
    """Resident and peak resident memory of a process, MiB (Linux /proc)."""
    if pid is None:
        return None
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except OSError:
        return None
    kib = lambda key: int(fields[key].split()[0])  # noqa: E731
    return {"rss_mib": round(kib("VmRSS") / 1024, 1), "peak_rss_mib": round(kib("VmHWM") / 1024, 1)}


def metric(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def batch_stats(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    lab = '{kind="pixels"}'
    return metric(text, "effnet_batch_size_count", lab), metric(text, "effnet_batch_size_sum", lab)


def start_server(model: str, extra: list[str], log_path: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "effnet", "serve", "--model", model, "--port", str(port), "--no-access-log", *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"load_serve: the server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"load_serve: the server was not ready within 300 s:\n{log_path.read_text()}")


async def run_load(
    url: str, payloads: list[bytes], requests: int, concurrency: int, max_seconds: float
) -> tuple[list[float], dict[str, int], float]:
    latencies: list[float] = []
    failures: dict[str, int] = {}
    next_index = 0
    deadline = time.monotonic() + max_seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < requests and time.monotonic() < deadline:
            i = next_index
            next_index += 1
            started = time.perf_counter()
            try:
                r = await client.post("/v1/classify?top_k=5", content=payloads[i % len(payloads)])
                ok = r.status_code == 200 and bool(r.json().get("predictions"))
                key = None if ok else f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                key = type(e).__name__
            if key is None:
                latencies.append(time.perf_counter() - started)
            else:
                failures[key] = failures.get(key, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, failures, elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument(
        "--images",
        type=Path,
        default=SAMPLE if SAMPLE.is_dir() else REPO / "examples",
        help="folder of images sent round-robin (default: ../shared/imagenet/sample, else examples/)",
    )
    p.add_argument("--model", default="efficientnet-lite0", help="model of the server this script starts")
    p.add_argument("--server-args", default="", help="extra `effnet serve` arguments, e.g. '--max-batch 16'")
    p.add_argument("--url", default=None, help="use a running server on this machine instead of starting one")
    p.add_argument("--pid", type=int, default=None, help="with --url: the server's pid, for its memory")
    p.add_argument("--warmup", type=int, default=16, help="requests before measuring (default: %(default)s)")
    p.add_argument("--max-seconds", type=float, default=900, help="stop sending after this long")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        p.error("--requests and --concurrency must be >= 1")
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        p.error("--url must be a loopback address: this script only loads servers on this machine")
    paths = sorted(f for f in args.images.iterdir() if f.suffix.lower() in (".jpeg", ".jpg", ".png"))
    if not paths:
        p.error(f"no images in {args.images}")
    payloads = [f.read_bytes() for f in paths]

    proc = None
    log_dir = tempfile.mkdtemp(prefix="load_serve-")
    if args.url:
        url, pid = args.url.rstrip("/"), args.pid
    else:
        proc, url = start_server(args.model, shlex.split(args.server_args), Path(log_dir) / "server.log")
        pid = proc.pid
    try:
        memory_idle = rss_mib(pid)
        asyncio.run(run_load(url, payloads, args.warmup, min(args.concurrency, args.warmup), 120))
        memory_before = rss_mib(pid)
        batches_before, rows_before = batch_stats(url)
        latencies, failures, elapsed = asyncio.run(
            run_load(url, payloads, args.requests, args.concurrency, args.max_seconds)
        )
        memory_after = rss_mib(pid)
        batches, rows = (a - b for a, b in zip(batch_stats(url), (batches_before, rows_before), strict=True))
        model = httpx.get(f"{url}/v1/model", timeout=10).json()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)

    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    sent = len(latencies) + sum(failures.values())
    result = {
        "model": model["name"],
        "weights": model["weights"],
        "backend": f"{model['backend']} {model['precision']}",
        "server_max_batch": model["max_batch"],
        "server_args": args.server_args,
        "requests": sent,
        "concurrency": args.concurrency,
        "ok": len(latencies),
        "failures": sum(failures.values()),
        "failures_by_kind": failures,
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p90_ms": round(float(np.percentile(ms, 90)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "seconds": round(elapsed, 2),
        "batches": int(batches),
        "mean_batch": round(rows / batches, 2) if batches else None,
        "memory_idle": memory_idle,
        "memory_before": memory_before,
        "memory_after": memory_after,
        "images": f"{len(payloads)} files from {args.images}",
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        mem = lambda m: "n/a" if m is None else f"{m['rss_mib']} MiB (peak {m['peak_rss_mib']})"  # noqa: E731
        print(
            f"{result['model']} ({result['backend']}, max batch {result['server_max_batch']}) on "
            f"{result['cpus']} CPUs, {result['images']}"
        )
        print(
            f"requests {sent} at concurrency {args.concurrency}: {len(latencies)} ok, "
            f"{result['failures']} failed {failures or ''}"
        )
        print(
            f"latency p50 {result['p50_ms']} ms, p90 {result['p90_ms']} ms, p99 {result['p99_ms']} ms, "
            f"max {result['max_ms']} ms"
        )
        print(
            f"throughput {result['throughput_rps']} req/s over {result['seconds']} s; "
            f"{result['batches']} batches, mean {result['mean_batch']} images/batch"
        )
        print(f"server memory: idle {mem(memory_idle)}, before {mem(memory_before)}, after {mem(memory_after)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
