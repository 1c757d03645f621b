#!/usr/bin/env python
"""Per-node throughput of a Ray inference actor: OpenVINO LATENCY vs THROUGHPUT configuration, interleaved.

A ``--engine ray`` actor makes one backend call per batch. In OpenVINO's LATENCY configuration (one
stream) that call runs on one infer request with every core; in the THROUGHPUT configuration (the model
compiled with N streams) the backend splits the call's batch over its N infer requests, started together
(``OpenVINOBackend._infer``), each stream on its share of the cores. Each round times every
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
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import effnet  # noqa: E402
from effnet.backends import create_backend  # noqa: E402
from effnet.bench import machine_description  # noqa: E402
from effnet.predict import resolve_source  # noqa: E402


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

    configs: list[tuple[str, object, int]] = []  # name, backend, batch
    latency = create_backend("openvino", source, precision=args.precision)
    for b in args.batch_sizes:
        configs.append((f"LATENCY (streams={latency.streams}), batch {b}", latency, b))
    hinted = create_backend("openvino", source, precision=args.precision, mode="throughput")
    for b in args.batch_sizes:
        configs.append((f"THROUGHPUT hint (streams={hinted.streams}, threads={hinted.threads}), batch {b}", hinted, b))
    for n in args.streams:
        backend = create_backend("openvino", source, precision=args.precision, streams=n)
        for b in args.batch_sizes:
            if b >= n:
                configs.append((f"THROUGHPUT streams={backend.streams}, batch {b} split {n} ways", backend, b))

    def run(backend, batch: int) -> float:
        t0 = time.perf_counter()
        for i in range(0, len(crops), batch):
            backend(crops[i : i + batch])
        return len(crops) / (time.perf_counter() - t0)

    for _, backend, batch in configs:  # warm-up
        run(backend, batch)
    rates: dict[str, list[float]] = {name: [] for name, *_ in configs}
    ratios: dict[str, list[float]] = {name: [] for name, *_ in configs}
    for r in range(args.rounds):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        this = {name: run(backend, batch) for name, backend, batch in order}
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
