"""How fast the CPU can feed the model: Pillow decode + resize + crop throughput, threads vs processes.

Runs exactly what ``Classifier.crop`` runs (effnet.preprocess: Pillow decode, EXIF, RGB, the record's
resize and center crop) over the JPEGs of a folder (default: ../shared/imagenet/sample), with a thread
pool and a process pool of 1..N workers, interleaved round by round. Prints a markdown table of
images/s; ``--json`` writes the raw numbers. A benchmark, not a test: nothing here asserts a speed.

    python benchmarks/bench_decode.py --model efficientnet-b5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from effnet.preprocess import find_images, load_image, resize_crop  # noqa: E402
from effnet.weights.records import Preprocess, default_record  # noqa: E402

_PREPROCESS: Preprocess | None = None


def _init(preprocess: Preprocess) -> None:
    global _PREPROCESS
    _PREPROCESS = preprocess


def _crop(path: str) -> int:
    assert _PREPROCESS is not None
    return int(np.asarray(resize_crop(load_image(path), _PREPROCESS)).shape[0])


def _run(pool: Executor, paths: list[str]) -> float:
    start = time.perf_counter()
    # chunksize for processes: one pickle round trip per few images, not per image
    for _ in pool.map(_crop, paths, **({"chunksize": 4} if isinstance(pool, ProcessPoolExecutor) else {})):
        pass
    return len(paths) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO / ".." / "shared" / "imagenet" / "sample"))
    ap.add_argument("--model", default="efficientnet-b5", help="whose record's preprocessing (default: B5's)")
    ap.add_argument("--workers", default=None, help="comma-separated pool sizes (default: 1, 2, 4, ... all cores)")
    ap.add_argument("--repeat", type=int, default=2, help="passes over the images per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows the median")
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args(argv)

    preprocess = default_record(args.model).preprocess
    paths = [str(p) for p in find_images([args.data]) if p.suffix.lower() in (".jpg", ".jpeg")] * args.repeat
    if not paths:
        print(f"no JPEG files in {args.data}", file=sys.stderr)
        return 2
    cores = os.cpu_count() or 1
    if args.workers:
        sizes = [int(w) for w in args.workers.split(",")]
    else:
        sizes = sorted({*(1 << i for i in range(cores.bit_length()) if 1 << i <= cores), cores})
    _init(preprocess)
    pools: dict[tuple[str, int], Executor] = {}
    for n in sizes:
        pools["threads", n] = ThreadPoolExecutor(n)
        pools["processes", n] = ProcessPoolExecutor(n, initializer=_init, initargs=(preprocess,))
    results: dict[tuple[str, int], list[float]] = {k: [] for k in pools}
    try:
        for pool in pools.values():  # warm-up: start processes, load libraries, fill the page cache
            _run(pool, paths[: max(8, len(pools))])
        for _ in range(args.rounds):
            for key, pool in pools.items():
                results[key].append(_run(pool, paths))
    finally:
        for pool in pools.values():
            pool.shutdown()

    print(
        f"Pillow {PIL.__version__} decode + {preprocess.interpolation} resize {preprocess.resize_size} + crop "
        f"{preprocess.input_size} ({args.model}'s record), {len(paths) // args.repeat} JPEGs x {args.repeat}, "
        f"{platform.processor() or platform.machine()}, {cores} logical CPUs; median of {args.rounds} "
        "interleaved rounds\n"
    )
    print("| workers | threads img/s | processes img/s |")
    print("|---:|---:|---:|")
    for n in sizes:
        t, p = (float(np.median(results[kind, n])) for kind in ("threads", "processes"))
        print(f"| {n} | {t:.1f} | {p:.1f} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps({f"{k}/{n}": v for (k, n), v in results.items()}, indent=1), encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
