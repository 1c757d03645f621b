#!/usr/bin/env python
"""Ray vs local at scale on one node: wall time, the driver's peak RSS, and the peak total PSS of the job.

Runs the command line as a user does, one process per job, in interleaved order (local, ray, local, ray...)
so that a machine shared with other work loads both engines alike:

  - local: ``effnet eval DIR`` (or ``effnet classify --json DIR``, output to /dev/null);
  - ray:   the same with ``--engine ray --ray-address local`` (a local Ray started and owned by the job;
           ``classify`` writes ``--output OUT.parquet``).

While a job runs, its process tree (the driver and, for Ray, every process of the cluster it started:
GCS, raylet, workers) is sampled: the driver's peak RSS is its ``VmHWM``; the total PSS is the sum of the
tree's PSS (shared pages split between the processes that map them), its peak over the samples. After
the job, any process of its tree still alive is counted as left running.

    python benchmarks/bench_ray_scale.py --images /tmp/e33/s1000 /tmp/e33/s10000 --job eval --rounds 1

Make the folders with symlinks to the sample (names ``<synset>_..._rN.JPEG`` keep eval's labels).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(cmd: list[str], pss_every: float) -> dict:
    """Run ``cmd``; sample the driver's VmHWM and the tree's PSS until it exits."""
    seen: set[int] = set()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak_rss = peak_pss = 0.0
    last_pss = 0.0
    while proc.poll() is None:
        peak_rss = max(peak_rss, _hwm_mb(proc.pid))
        if time.perf_counter() - last_pss >= pss_every:
            last_pss = time.perf_counter()
            total = 0.0
            for p in _tree(root):
                seen.add(p.pid)
                try:
                    total += p.memory_full_info().pss / 2**20
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak_pss = max(peak_pss, total)
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    stderr = proc.stderr.read() if proc.stderr else ""
    time.sleep(2.0)
    alive = [p for p in seen if psutil.pid_exists(p) and p != proc.pid]
    left = []
    for pid in alive:
        try:
            left.append(f"{pid} {' '.join(psutil.Process(pid).cmdline())[:80]}")
        except psutil.NoSuchProcess:
            pass
    return {
        "rc": proc.returncode,
        "seconds": round(seconds, 1),
        "driver_peak_rss_mb": round(peak_rss),
        "peak_total_pss_mb": round(peak_pss),
        "left_running": left,
        "stderr_tail": stderr.strip().splitlines()[-3:],
    }


def command(engine: str, job: str, images: str, model: str, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "effnet", job, images, "--model", model]
    if job == "eval":
        cmd += ["--no-progress", "--json", str(out / f"{engine}.json")]
    elif engine == "local":
        cmd += ["--json"]
    if engine == "ray":
        cmd += ["--engine", "ray", "--ray-address", "local"]
        if job == "classify":
            cmd += ["--output", str(out / "ray.parquet")]
    return cmd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", required=True, help="folders, smallest first")
    ap.add_argument("--job", choices=("eval", "classify"), default="eval")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--engines", nargs="+", default=["local", "ray"])
    ap.add_argument("--pss-every", type=float, default=2.0, help="seconds between PSS samples (reading smaps costs)")
    args = ap.parse_args()
    env_note = os.getloadavg()
    print(f"# load average at start: {env_note[0]:.2f} {env_note[1]:.2f} {env_note[2]:.2f}", flush=True)
    results = []
    for images in args.images:
        count = sum(1 for _ in Path(images).iterdir())
        for r in range(args.rounds):
            order = args.engines if r % 2 == 0 else args.engines[::-1]
            for engine in order:
                with tempfile.TemporaryDirectory(prefix="bench-ray-scale-") as tmp:
                    load = os.getloadavg()[0]
                    res = run(command(engine, args.job, images, args.model, Path(tmp)), args.pss_every)
                    if args.job == "eval" and res["rc"] == 0:
                        report = json.loads((Path(tmp) / f"{engine}.json").read_text())
                        res["top1"] = report.get("top1_correct")
                        res["ece"] = report.get("calibration", {}).get("ece")
                res.update(engine=engine, images=count, round=r, load_1min=round(load, 2))
                print(json.dumps(res), flush=True)
                results.append(res)
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
