#!/usr/bin/env python
"""Ray's overhead on one node: local classify vs ``effnet.distributed.classify`` on the same images and backend.

Each round times, in alternating order, both engines on two inputs: the N sample images, and the same
images listed ``--repeat`` times (K x N inputs, decoded and classified K times):
  - local: ``Classifier(model, backend="auto")`` + ``iter_classify`` (decode threads ahead of the model);
  - ray:   ``effnet.distributed.classify(...)`` to the last row on an already running 1-node Ray
           (``ray.init(num_cpus=N)`` once, or ``--address`` of a ``ray start`` cluster): a fresh actor pool per
           run, so actor start and backend build are inside the time, as the model load is inside local's.
Neither includes process start or ``ray.init`` (a cluster pays that once). From the two sizes:
  - whole run:  N / T(N) images/s, start-up included (what one small job sees);
  - marginal:   (K-1) N / (T(KN) - T(N)) images/s, the rate once running (what a big job sees: per-job
                start-up is a fixed cost, these images/s are the per-node throughput);
  - fixed cost: T(N) - N / marginal seconds per job.
Ratios are medians of per-round ratios ray / local.

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
    ap.add_argument("--repeat", type=int, default=5, help="K: the long input lists the images K times")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=2, help="logical CPUs of the 1-node Ray started here")
    ap.add_argument("--address", default=None, help="join this running cluster instead (e.g. auto)")
    ap.add_argument("--workers", type=int, default=1, help="inference actors")
    ap.add_argument("--cpus-per-worker", type=float, default=None, help="as effnet classify --cpus-per-worker")
    args = ap.parse_args()
    if args.repeat < 2:
        ap.error("--repeat must be >= 2")
    short = [str(p) for p in find_images([args.images])]
    long = short * args.repeat
    if args.address:
        ray.init(address=args.address, logging_level="WARNING")
    else:
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False

    def local(paths: list[str]) -> float:
        t0 = time.perf_counter()
        clf = Classifier(args.model, args.weights, backend="auto", progress=False)
        n = sum(1 for _ in clf.iter_classify(paths, batch_size=args.batch_size))
        assert n == len(paths)
        return time.perf_counter() - t0

    def on_ray(paths: list[str]) -> float:
        t0 = time.perf_counter()
        ds = classify(
            paths,
            model=args.model,
            weights=args.weights,
            batch_size=args.batch_size,
            workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
        )
        n = sum(len(b["path"]) for b in ds.iter_batches(batch_size=None))
        assert n == len(paths)
        return time.perf_counter() - t0

    engines = {"local": local, "ray": on_ray}
    local(short), on_ray(short)  # warm-up: exports cached, files in the page cache
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in engines}
    for r in range(args.rounds):
        for name in list(engines) if r % 2 == 0 else list(engines)[::-1]:
            times[name].append((engines[name](short), engines[name](long)))
    n, extra = len(short), len(long) - len(short)
    figures: dict[str, list[dict[str, float]]] = {
        name: [
            {
                "whole": n / t_short,
                "marginal": extra / (t_long - t_short),
                "fixed": t_short - n * (t_long - t_short) / extra,
            }
            for t_short, t_long in values
        ]
        for name, values in times.items()
    }
    where = args.address or f"a 1-node Ray of {args.cpus} CPUs started here"
    where += f", {args.workers} actors of {args.cpus_per_worker or 'default'} CPUs"
    print(f"{args.model}, {n} and {len(long)} inputs, batch {args.batch_size}, {args.rounds} rounds, Ray: {where}")
    for name, values in times.items():
        print(
            f"  {name:5s} seconds per round ({n}, {len(long)}): {', '.join(f'({a:.2f}, {b:.2f})' for a, b in values)}"
        )
    for key, what in (("whole", f"whole run of {n}, images/s"), ("marginal", "marginal images/s")):
        print(f"{what}:")
        for name, values in figures.items():
            print(f"  {name:5s} per round: {', '.join(f'{v[key]:.1f}' for v in values)}")
        ratios = [a[key] / b[key] for a, b in zip(figures["ray"], figures["local"], strict=True)]
        print(f"  ray / local: median {statistics.median(ratios):.3f} ({', '.join(f'{x:.3f}' for x in ratios)})")
    for name, values in figures.items():
        print(f"fixed cost per job, {name}: median {statistics.median(v['fixed'] for v in values):.2f} s")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
