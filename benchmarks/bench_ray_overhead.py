#!/usr/bin/env python
"""Ray's overhead on one node: local classify vs ``--engine ray`` on the same images and backend, interleaved.

Each round times, in rotating order:
  - local: ``Classifier(model, backend="auto")`` + ``iter_classify`` (decode threads ahead of the model);
  - ray:   ``effnet.distributed.classify(...)`` to the last row on an already running 1-node Ray
           (``ray.init(num_cpus=N)`` once): a fresh actor pool per run, so actor start and backend build
           are inside the time, as the model load is inside the local time.
Both include building the backend; neither includes process start or ``ray.init`` (a cluster pays that
once). A second figure times from the first row to the last (the pipeline without its start-up). Ratios are
medians of the per-round ratios ray/local in images/s.

    python benchmarks/bench_ray_overhead.py --model efficientnet-lite0 --images ../shared/imagenet/sample
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import ray  # noqa: E402

from effnet.distributed import classify  # noqa: E402
from effnet.predict import Classifier  # noqa: E402
from effnet.preprocess import find_images  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--images", default=str(REPO / ".." / "shared" / "imagenet" / "sample"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=2, help="logical CPUs of the 1-node Ray")
    args = ap.parse_args()
    paths = [str(p) for p in find_images([args.images])]
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False

    def timed(rows) -> tuple[float, float]:
        """(images/s from the start, images/s from the first row on: the pipeline without its start-up)."""
        t0 = time.perf_counter()
        first = None
        n = 0
        for _ in rows:
            n += 1
            first = first or time.perf_counter()
        end = time.perf_counter()
        return n / (end - t0), (n - 1) / (end - first) if first and end > first else float("nan")

    def local() -> tuple[float, float]:
        def rows():
            clf = Classifier(args.model, args.weights, backend="auto", progress=False)
            yield from clf.iter_classify(paths, batch_size=args.batch_size)

        return timed(rows())

    def on_ray() -> tuple[float, float]:
        def rows():
            ds = classify(paths, model=args.model, weights=args.weights, batch_size=args.batch_size, workers=1)
            yield from ds.iter_rows()

        return timed(rows())

    runs = {"local": local, "ray": on_ray}
    local(), on_ray()  # warm-up: exports cached, files in the page cache
    rates: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    for r in range(args.rounds):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            rates[name].append(runs[name]())
    print(f"{args.model}, {len(paths)} images, batch {args.batch_size}, {args.rounds} rounds, Ray: {args.cpus} CPUs")
    for i, what in enumerate(("whole run (backend build included)", "from the first row on")):
        print(f"{what}:")
        for name, values in rates.items():
            print(f"  {name:5s} images/s per round: {', '.join(f'{v[i]:.2f}' for v in values)}")
        ratios = [a[i] / b[i] for a, b in zip(rates["ray"], rates["local"], strict=True)]
        print(f"  ray / local: median {statistics.median(ratios):.3f} ({', '.join(f'{x:.3f}' for x in ratios)})")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
