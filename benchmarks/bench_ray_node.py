#!/usr/bin/env python
"""Per-node throughput of a Ray inference actor: OpenVINO LATENCY vs THROUGHPUT configuration, interleaved.

A ``--engine ray`` actor makes one backend call per batch (OpenVINO's LATENCY configuration: one stream,
every core on one request). The alternative measured here is the THROUGHPUT configuration: a model
compiled with N streams, each batch split across N concurrent calls. Each round times every
configuration on the same uint8 crops, rotating the order; the table gives the median images/s over rounds
and the median per-round ratio to the first configuration.

    python benchmarks/bench_ray_node.py --model efficientnet-b5 --rounds 5 --images 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import effnet  # noqa: E402
from effnet.backends import create_backend  # noqa: E402
from effnet.bench import machine_description  # noqa: E402
from effnet.predict import resolve_source  # noqa: E402


def infer_batch(backend, crops: np.ndarray, streams: int, pool: ThreadPoolExecutor) -> np.ndarray:
    """One call (LATENCY), or the batch split across ``streams`` concurrent calls (THROUGHPUT, as
    benchmark_app drives it: one infer request per stream, each from its own thread)."""
    if streams <= 1 or len(crops) < 2:
        return backend(crops)
    return np.concatenate(list(pool.map(backend, np.array_split(crops, min(streams, len(crops))))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet-b5")
    ap.add_argument("--weights", default=None, help="checkpoint (default: random weights, same compute)")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--images", type=int, default=32, help="images per configuration per round")
    ap.add_argument("--streams", type=int, nargs="+", default=[2, 4], help="THROUGHPUT stream counts to try")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    args = ap.parse_args()

    weights = args.weights
    if weights is None:
        torch.manual_seed(0)
        weights = str(Path(tempfile.mkdtemp()) / f"{args.model}-random.pth")
        torch.save(effnet.create_model(args.model).state_dict(), weights)
    source = resolve_source(args.model, weights, progress=False)
    size = source.preprocess.input_size
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (args.images, size, size, 3), dtype=np.uint8)

    configs: list[tuple[str, object, int, int]] = []  # name, backend, streams, batch
    latency = create_backend("openvino", source, precision=args.precision)
    for b in args.batch_sizes:
        configs.append((f"LATENCY (streams={latency.streams}), batch {b}", latency, 1, b))
    for n in args.streams:
        backend = create_backend("openvino", source, precision=args.precision, streams=n)
        for b in args.batch_sizes:
            if b >= n:
                configs.append((f"THROUGHPUT streams={backend.streams}, batch {b} split {n} ways", backend, n, b))
    pool = ThreadPoolExecutor(max_workers=max(args.streams))

    def run(backend, streams: int, batch: int) -> float:
        t0 = time.perf_counter()
        for i in range(0, len(crops), batch):
            infer_batch(backend, crops[i : i + batch], streams, pool)
        return len(crops) / (time.perf_counter() - t0)

    for _, backend, streams, batch in configs:  # warm-up
        run(backend, streams, batch)
    rates: dict[str, list[float]] = {name: [] for name, *_ in configs}
    ratios: dict[str, list[float]] = {name: [] for name, *_ in configs}
    for r in range(args.rounds):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        this = {name: run(backend, streams, batch) for name, backend, streams, batch in order}
        for name in this:
            rates[name].append(this[name])
            ratios[name].append(this[name] / this[configs[0][0]])
    print(f"{args.model} {args.precision}, {args.images} images x {args.rounds} rounds; {machine_description()}")
    print("| configuration | images/s (median) | ratio to first (median of per-round ratios) |")
    print("| --- | ---: | ---: |")
    for name, *_ in configs:
        print(f"| {name} | {statistics.median(rates[name]):.2f} | {statistics.median(ratios[name]):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
