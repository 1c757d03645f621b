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

``--cpu`` adds each job's CPU seconds by process role (the driver; Ray's daemons by program; its workers by
the task or actor their process title named most often), read from ``/proc`` at every PSS sample: where
Ray's extra work goes, per image. ``--variant`` adds a named run to the rotation: an engine, extra
command-line arguments, and optionally another copy of ``src`` (its ``PYTHONPATH``; Ray's workers get the
driver's ``sys.path``), so two versions of the code are compared interleaved on the same machine:

    python benchmarks/bench_ray_scale.py --images /tmp/e33/s2000 --engines ray \
        --variant '{"name": "before", "engine": "ray", "src": "/tmp/before/src"}' --rounds 3 --cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
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


def _title(p: psutil.Process, driver: int) -> str:
    """A process's role: the driver; a Ray worker's title (``ray::MapWorker(...)``, ``ray::IDLE``); else
    the program (``raylet``, ``gcs_server``, a daemon's script name)."""
    if p.pid == driver:
        return "driver"
    cmd = p.cmdline()
    if not cmd:
        return p.name()
    if cmd[0].startswith("ray::"):
        return cmd[0].split(" ")[0]
    script = next((Path(a).name for a in cmd[1:] if a.endswith(".py")), None)
    return script or Path(cmd[0]).name


def _cpu_by_role(cpu: dict[int, float], titles: dict[int, Counter]) -> dict[str, float]:
    """CPU seconds summed by role; a worker's role is the non-idle title it showed most often."""
    roles: dict[str, float] = {}
    for pid, seconds in cpu.items():
        role = _role(titles[pid])
        roles[role] = roles.get(role, 0.0) + seconds
    return {k: round(v, 1) for k, v in sorted(roles.items(), key=lambda kv: -kv[1])}


def _role(seen: Counter) -> str:
    busy = [t for t, _ in seen.most_common() if t != "ray::IDLE"]
    return busy[0] if busy else "ray::IDLE"


def _processes_by_role(cpu: dict[int, float], titles: dict[int, Counter]) -> dict[str, int]:
    """How many processes each role of :func:`_cpu_by_role` summed (CPU per process of a role)."""
    return dict(Counter(_role(titles[pid]) for pid in cpu).most_common())


def run(cmd: list[str], pss_every: float, env: dict[str, str] | None = None) -> dict:
    """Run ``cmd``; sample the driver's VmHWM, the tree's PSS and each process's CPU time until it exits."""
    seen: set[int] = set()
    cpu: dict[int, float] = {}
    titles: dict[int, Counter] = {}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
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
                    times = p.cpu_times()
                    cpu[p.pid] = times.user + times.system
                    titles.setdefault(p.pid, Counter())[_title(p, proc.pid)] += 1
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
        "cpu_seconds": round(sum(cpu.values()), 1),
        "cpu_by_role": _cpu_by_role(cpu, titles),
        "processes_by_role": _processes_by_role(cpu, titles),
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
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help='JSON {"name", "engine", "args": [...], "src": DIR}: one more run per round (see above)',
    )
    ap.add_argument("--cpu", action="store_true", help="print CPU seconds by process role")
    args = ap.parse_args()
    variants = {v["name"]: v for v in map(json.loads, args.variant)}
    names = [*args.engines, *variants]
    env_note = os.getloadavg()
    print(f"# load average at start: {env_note[0]:.2f} {env_note[1]:.2f} {env_note[2]:.2f}", flush=True)
    results = []
    for images in args.images:
        count = sum(1 for _ in Path(images).iterdir())
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                variant = variants.get(name, {"engine": name})
                engine = variant["engine"]
                env = dict(os.environ)
                if variant.get("src"):
                    env["PYTHONPATH"] = variant["src"]
                with tempfile.TemporaryDirectory(prefix="bench-ray-scale-") as tmp:
                    load = os.getloadavg()[0]
                    cmd = command(engine, args.job, images, args.model, Path(tmp)) + list(variant.get("args", []))
                    res = run(cmd, args.pss_every, env)
                    if args.job == "eval" and res["rc"] == 0:
                        report = json.loads((Path(tmp) / f"{engine}.json").read_text())
                        res["top1"] = report.get("top1_correct")
                        res["ece"] = report.get("calibration", {}).get("ece")
                        speed = report.get("throughput", {})  # the run as the report timed it (no start-up)
                        for key in ("seconds", "inference_seconds", "decode_wait_seconds"):
                            res[f"report_{key}"] = round(speed.get(key) or 0.0, 1)
                res.update(engine=name, images=count, round=r, load_1min=round(load, 2))
                if not args.cpu:
                    res.pop("cpu_by_role")
                    res.pop("processes_by_role")
                print(json.dumps(res), flush=True)
                results.append(res)
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
