"""Soak test of `effnet serve`: N minutes of mixed good and bad traffic at concurrency 8, loopback only.

Every request is one of: a real image to /v1/classify (raw or multipart), a v2 binary tensor, and bad
ones (garbage bytes, truncated images, deep JSON, wrong shapes, unknown fields, bad query strings,
unknown paths). Good requests must get 200, bad ones 4xx; anything else (5xx, transport errors) is an
error. Reports requests and statuses per kind, p50/p99 latency of the good requests, and the server's
resident memory at start, after warm-up and at the end, sampled every few seconds: memory must not grow
after warm-up. Bounded in time (--minutes) and in count (--max-requests). Starts its own server on a free
127.0.0.1 port. No assertions beyond the exit code (1 if any error or 5xx): it measures.

    .venv/bin/python benchmarks/soak_serve.py                      # 10 minutes, Lite0, auto backend
    .venv/bin/python benchmarks/soak_serve.py --minutes 1 --server-args "--backend torch" --json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import os
import platform
import shlex
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_serve import REPO, SAMPLE, rss_mib, start_server  # noqa: E402


def payloads(images: list[bytes], size: int, model: str) -> list[tuple[str, bool, dict]]:
    """(kind, good?, httpx request kwargs) for every kind of traffic."""
    from PIL import Image

    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "data",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ]
        }
    ).encode()
    infer = f"/v2/models/{model}/infer"
    small = io.BytesIO()
    Image.open(io.BytesIO(images[0])).convert("RGB").resize((64, 48)).save(small, format="PNG")
    out: list[tuple[str, bool, dict]] = []
    for i, img in enumerate(images[:8]):
        out.append(("classify raw", True, {"url": "/v1/classify?top_k=5", "content": img}))
        out.append(("classify raw", True, {"url": "/v1/classify", "content": images[(i + 8) % len(images)]}))
    out.append(("classify multipart", True, {"url": "/v1/classify", "files": {"image": ("a.png", small.getvalue())}}))
    v2 = {
        "url": infer,
        "content": header + x.tobytes(),
        "headers": {"inference-header-content-length": str(len(header))},
    }
    out += [("v2 binary", True, v2)] * 3
    bad = [
        ("garbage", {"url": "/v1/classify", "content": os.urandom(2048)}),
        ("truncated jpeg", {"url": "/v1/classify", "content": images[1][: len(images[1]) // 3]}),
        ("empty", {"url": "/v1/classify", "content": b""}),
        ("bad top_k", {"url": "/v1/classify?top_k=0", "content": images[2]}),
        ("multipart no image", {"url": "/v1/classify", "files": {"x": ("a.png", small.getvalue())}}),
        ("deep json", {"url": infer, "content": b"[" * 200_000}),
        (
            "wrong shape",
            {
                "url": infer,
                "json": {"inputs": [{"name": "data", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0] * 192}]},
            },
        ),
        ("unknown field", {"url": infer, "json": {"inputs": [{"name": "data", "dtype": "FP32"}]}}),
        ("binary too short", {**v2, "content": header + x.tobytes()[:1000]}),
        ("unknown path", {"url": "/v3/nothing", "method": "GET"}),
    ]
    out += [(kind, False, kw) for kind, kw in bad]
    return out


async def soak(url: str, traffic: list, concurrency: int, seconds: float, max_requests: int, pid: int, samples: list):
    """Send traffic round-robin from `concurrency` workers; sample the server's memory every 5 s."""
    stats: dict[str, Counter] = defaultdict(Counter)
    latencies: list[float] = []
    errors: Counter = Counter()
    sent = 0
    deadline = time.monotonic() + seconds
    started = time.monotonic()

    async def worker(client: httpx.AsyncClient, w: int) -> None:
        nonlocal sent
        i = w
        while sent < max_requests and time.monotonic() < deadline:
            sent += 1
            kind, good, kw = traffic[i % len(traffic)]
            i += concurrency
            kw = dict(kw)
            method = kw.pop("method", "POST")
            t = time.perf_counter()
            try:
                r = await client.request(method, **kw)
                status = r.status_code
            except httpx.HTTPError as e:
                errors[type(e).__name__] += 1
                continue
            stats[kind][status] += 1
            if good and status == 200:
                latencies.append(time.perf_counter() - t)
            elif good or status >= 500 or status < 400:
                errors[f"{kind}: HTTP {status}"] += 1

    async def sampler() -> None:
        while time.monotonic() < deadline and sent < max_requests:
            samples.append((round(time.monotonic() - started, 1), rss_mib(pid)["rss_mib"]))
            await asyncio.sleep(5)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        t0 = time.perf_counter()
        tasks = [worker(client, w) for w in range(concurrency)]
        await asyncio.gather(sampler(), *tasks)
        elapsed = time.perf_counter() - t0
    return stats, latencies, errors, elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--warmup-minutes", type=float, default=1.0, help="traffic before the 'after warm-up' memory")
    p.add_argument("--max-requests", type=int, default=2_000_000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--server-args", default="", help="extra `effnet serve` arguments, e.g. '--backend torch'")
    p.add_argument("--images", type=Path, default=SAMPLE if SAMPLE.is_dir() else REPO / "examples")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    files = sorted(f for f in args.images.iterdir() if f.suffix.lower() in (".jpeg", ".jpg", ".png"))
    if len(files) < 2:
        p.error(f"need at least 2 images in {args.images}")
    images = [f.read_bytes() for f in files]

    log = Path(tempfile.mkdtemp(prefix="soak_serve-")) / "server.log"
    proc, url = start_server(args.model, shlex.split(args.server_args), log)
    samples: list[tuple[float, float]] = []
    try:
        model = httpx.get(f"{url}/v1/model", timeout=10).json()
        traffic = payloads(images, model["input_size"], model["name"])
        memory_start = rss_mib(proc.pid)
        warm = asyncio.run(
            soak(url, traffic, args.concurrency, args.warmup_minutes * 60, args.max_requests, proc.pid, [])
        )
        memory_warm = rss_mib(proc.pid)
        stats, latencies, errors, elapsed = asyncio.run(
            soak(url, traffic, args.concurrency, args.minutes * 60, args.max_requests, proc.pid, samples)
        )
        memory_end = rss_mib(proc.pid)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)

    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    by_status: Counter = Counter()
    for c in stats.values():
        by_status.update(c)
    rss = [r for _, r in samples]
    half = len(rss) // 2
    result = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "benchmarks/soak_serve.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "server": f"{model['name']} ({model['weights']}, {model['backend']} {model['precision']})",
        "minutes": round(elapsed / 60, 2),
        "concurrency": args.concurrency,
        "warmup_requests": sum(sum(c.values()) for c in warm[0].values()),
        "requests": sum(by_status.values()) + sum(errors.values()),
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
        "by_kind": {k: {str(s): n for s, n in sorted(c.items())} for k, c in sorted(stats.items())},
        "errors": dict(errors),
        "server_5xx": sum(v for k, v in by_status.items() if k >= 500),
        "good_p50_ms": round(float(np.percentile(ms, 50)), 1),
        "good_p99_ms": round(float(np.percentile(ms, 99)), 1),
        "throughput_rps": round((sum(by_status.values())) / elapsed, 1),
        "rss_mib": {"start": memory_start, "after_warmup": memory_warm, "end": memory_end},
        "rss_first_half_max_mib": max(rss[:half], default=None),
        "rss_second_half_max_mib": max(rss[half:], default=None),
        "rss_samples": len(rss),
        "server_errors_total": [line for line in metrics.splitlines() if line.startswith("effnet_errors_total")],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 1 if errors or result["server_5xx"] else 0


if __name__ == "__main__":
    sys.exit(main())
