#!/usr/bin/env python
"""One Ray inference actor's call, without Ray: how its batch goes through OpenVINO (THROUGHPUT, as the
actor builds it: ``node_backend``), on the same uint8 crops, interleaved rounds.

  - ``one call``: the whole batch in one backend call (the actor until issue 33): the batch converted,
    split over the streams' requests, started together, and awaited (``OpenVINOBackend._infer``);
  - ``streamed``: ``effnet.distributed.worker.streamed_probabilities`` (the actor now): the batch as jobs of
    ``STREAM_JOB_ROWS`` rows through the backend's asynchronous queue, one request per image;
  - ``local stream``: every batch through one queue (``Classifier.iter_probabilities``, the local eval's
    path), which an actor cannot do across its calls: the ceiling.

Prints the median images/s and the median per-round ratio to ``one call``; the probabilities of the three
are checked equal.

    python benchmarks/bench_ray_actor_call.py --images 256 --batch 16 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from effnet.backends import infer_stream  # noqa: E402
from effnet.distributed.worker import node_backend, streamed_probabilities  # noqa: E402
from effnet.predict import Classifier  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet-lite0", help="its default (real) weights")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16, help="rows per actor call (effnet eval's default)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    backend, options = node_backend("openvino", None, None)
    clf = Classifier(args.model, backend=backend, progress=False, **options)
    size = clf.preprocess.input_size
    crops = np.random.default_rng(0).integers(0, 256, (args.images, size, size, 3), dtype=np.uint8)
    batches = [crops[i : i + args.batch] for i in range(0, len(crops), args.batch)]

    def one_call() -> np.ndarray:
        return np.concatenate([clf.probabilities(b) for b in batches])

    def streamed() -> np.ndarray:
        return np.concatenate([streamed_probabilities(clf, b) for b in batches])

    def local_stream() -> np.ndarray:
        return np.concatenate([p for _, p in infer_stream(clf.backend, enumerate(batches))])

    runs = {"one call": one_call, "streamed": streamed, "local stream": local_stream}
    outputs = {name: fn() for name, fn in runs.items()}  # warm-up, and the numbers compared
    same = all(np.array_equal(outputs["one call"], out) for out in outputs.values())
    rates: dict[str, list[float]] = {name: [] for name in runs}
    load = os.getloadavg()
    for r in range(args.rounds):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            started = time.perf_counter()
            runs[name]()
            rates[name].append(len(crops) / (time.perf_counter() - started))
    b = clf.backend
    print(
        f"{args.model} openvino {b.precision}, {b.mode}, streams {b.streams}, threads {b.threads}; {args.images} "
        f"crops in calls of {args.batch} x {args.rounds} rounds; load average {load[0]:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end; identical probabilities: {same}"
    )
    print("| actor call | images/s (median) | ratio to one call (median of per-round ratios) |")
    print("| --- | ---: | ---: |")
    for name, values in rates.items():
        ratio = statistics.median(v / base for v, base in zip(values, rates["one call"], strict=True))
        print(f"| {name} | {statistics.median(values):.1f} | {ratio:.3f} |")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
