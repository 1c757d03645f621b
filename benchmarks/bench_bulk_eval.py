#!/usr/bin/env python
"""`effnet eval` end to end from JPEGs vs OpenVINO's own benchmark_app on the same IR, interleaved.

A bulk job (``effnet eval``, ``effnet classify`` over many images) compiles OpenVINO in its THROUGHPUT
configuration and keeps every stream fed from the decode-ahead pipeline (``OpenVINOBackend.infer_stream``).
The goal (issue 22): eval's images/s, counted from the first JPEG opened to the last result (the report's
``throughput.images_per_second``), at least 0.9x of ``benchmark_app -hint throughput``'s pure-inference figure
on the very IR eval ran, at the same inference precision (f32, and the bf16 pair: benchmark_app's default on a
CPU with AVX512_BF16 is bf16, so the precision is always given).

Each round runs every configuration once, rotating the order (the cores may be shared with other work: only
ratios inside one round are compared); the table gives medians over rounds and the median per-round ratio.

    python benchmarks/bench_bulk_eval.py --rounds 3 --copies 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

import effnet  # noqa: E402
from effnet.bench import machine_description  # noqa: E402
from effnet.source import resolve_source  # noqa: E402

OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def make_dataset(sample: Path, folder: Path, copies: int, limit: int | None) -> int:
    """``copies`` links to every sample JPEG (the first ``limit``), named ``<synset>_<copy>_<name>`` (eval's
    flat layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for image in sorted(sample.glob("*.JPEG"))[:limit]:
        for k in range(copies):
            (folder / f"{image.name[:9]}_{k}_{image.name}").symlink_to(image.resolve())
            n += 1
    return n


def run_eval(env: dict, data: Path, weights: str, precision: str, batch: int, model: str) -> dict:
    out = Path(tempfile.mkdtemp()) / "report.json"
    cmd = [sys.executable, "-m", "effnet", "eval", str(data), "--model", model, "--weights", weights]
    cmd += ["--backend", "openvino", "--precision", precision, "--batch-size", str(batch)]
    cmd += ["--json", str(out), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):  # 1: random weights are below the reference; still a timing
        raise SystemExit(f"effnet eval failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads(out.read_text())
    return {"img_s": report["throughput"]["images_per_second"], "count": report["count"], "wall_s": wall}


def run_benchmark_app(xml: Path, precision: str, seconds: int, size: int) -> dict:
    tool = Path(sys.executable).with_name("benchmark_app")
    cmd = [str(tool), "-m", str(xml), "-d", "CPU", "-hint", "throughput", "-infer_precision", OV_PRECISION[precision]]
    cmd += ["-shape", f"[1,3,{size},{size}]", "-t", str(seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = re.search(r"Throughput:\s+([\d.]+)\s+FPS", proc.stdout)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"benchmark_app failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    nireq = re.search(r"(\d+) inference requests", proc.stdout)
    streams = re.search(r"NUM_STREAMS: (\S+)", proc.stdout)
    return {
        "img_s": float(found.group(1)),
        "nireq": nireq.group(1) if nireq else "?",
        "streams": streams.group(1) if streams else "?",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet-b5")
    ap.add_argument("--weights", default=None, help="checkpoint (default: random weights, the same compute)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "imagenet" / "sample"), help="JPEG folder")
    ap.add_argument("--copies", type=int, default=3, help="links per sample image (a longer run per eval)")
    ap.add_argument("--images", type=int, default=None, help="use the first N sample images (default: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16, help="eval's --batch-size (its default)")
    ap.add_argument("--seconds", type=int, default=20, help="benchmark_app -t")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=sorted(OV_PRECISION))
    ap.add_argument("--json", default=None, help="write every measurement here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="effnet-bulk-"))
    env = {**os.environ, "EFFNET_HOME": str(work / "home"), "PYTHONPATH": str(REPO / "src")}
    weights = args.weights
    if weights is None:
        torch.manual_seed(0)
        weights = str(work / f"{args.model}-random.pth")
        torch.save(effnet.create_model(args.model).state_dict(), weights)
    data = work / "data"
    images = make_dataset(Path(args.data), data, args.copies, args.images)
    size = resolve_source(args.model, weights, progress=False).preprocess.input_size
    print(f"{args.model}: {images} JPEGs, eval --batch-size {args.batch_size}; {machine_description()}", flush=True)
    for precision in args.precisions:  # exports the IR into the cache, and warms the page cache
        run_eval(env, data, weights, precision, args.batch_size, args.model)
    (xml,) = [p for p in (work / "home").rglob("*.xml") if "int8" not in str(p)]
    print(f"IR: {xml}", flush=True)

    configs = [(kind, p) for p in args.precisions for kind in ("eval", "benchmark_app")]
    rows: dict[tuple[str, str], list[dict]] = {c: [] for c in configs}
    for r in range(args.rounds):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        for kind, precision in order:
            if kind == "eval":
                m = run_eval(env, data, weights, precision, args.batch_size, args.model)
            else:
                m = run_benchmark_app(xml, precision, args.seconds, size)
            rows[(kind, precision)].append(m)
            print(f"round {r + 1} {kind:13s} {precision}: {m['img_s']:.2f} img/s  {m}", flush=True)

    print(
        "\n| precision | effnet eval img/s (end to end) | benchmark_app img/s (inference) | ratio (median per round) |"
    )
    print("|---|---|---|---|")
    summary = {}
    for precision in args.precisions:
        ev = [m["img_s"] for m in rows[("eval", precision)]]
        ba = [m["img_s"] for m in rows[("benchmark_app", precision)]]
        ratios = [e / b for e, b in zip(ev, ba, strict=True)]
        summary[precision] = {"eval": ev, "benchmark_app": ba, "ratios": ratios}
        print(
            f"| {precision} | {statistics.median(ev):.2f} | {statistics.median(ba):.2f} | "
            f"{statistics.median(ratios):.3f}x (rounds: {', '.join(f'{x:.3f}' for x in ratios)}) |"
        )
    print(
        f"benchmark_app: streams {rows[('benchmark_app', args.precisions[0])][0]['streams']}, "
        f"{rows[('benchmark_app', args.precisions[0])][0]['nireq']} requests"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_description(), "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
