#!/usr/bin/env python
"""What a Ray read or decode worker pays to import effnet before its first block: CPU seconds and modules.

A Ray worker that runs a task unpickles the task's function, which imports the function's module, and with
it ``effnet/__init__.py`` and that module's own imports. Every worker process pays that once (and again
for a worker Ray restarts). This measures it without Ray: each role is one fresh process that imports what
such a worker has anyway (``ray``, ``ray.data``: Ray Data's task code), then the effnet modules the role's
function lives in, and reports

  - ``import_cpu_s``: CPU seconds (``time.process_time``) of the effnet imports alone;
  - ``process_cpu_s``: the whole process's CPU seconds (``getrusage``, user + system), interpreter start and
    Ray's imports included;
  - ``modules``: modules the effnet imports added, and which heavy packages among them (torch...).

Roles (``--role NAME=MODULE[,MODULE...]``; defaults as the code is laid out now):
``read`` = ``effnet.distributed.inputs`` (``_read_local``, ``_read_listed``), ``decode`` =
``effnet.distributed.decode`` (the decode tasks' function; before issue 33's cause 2 it was
``effnet.distributed.data._decode``). ``--src NAME=DIR`` measures another copy of the code (its ``src``
folder) in the same rounds, interleaved, so two versions compare on the same machine:

    python benchmarks/bench_task_imports.py --rounds 3 --src before=/work/main/src \
        --role decode=effnet.distributed.decode --role before:decode=effnet.distributed.data

``--importtime`` prints each role's slowest imports (``python -X importtime``, cumulative microseconds).
``--cli 'ARGS'`` also times ``python -m effnet ARGS`` per copy of the code (CPU and wall seconds of the whole
process): the command line's own start must not get slower.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnxruntime", "openvino", "tensorflow", "keras", "captum", "matplotlib", "scipy", "nncf")
DEFAULT_ROLES = {"read": ["effnet.distributed.inputs"], "decode": ["effnet.distributed.decode"]}

# The child: the worker's own imports first (not effnet's cost), then the role's modules, timed alone.
CHILD = """
import importlib, json, resource, sys, time
import ray, ray.data
before = set(sys.modules)
start = time.process_time()
for name in sys.argv[1].split(","):
    importlib.import_module(name)
spent = time.process_time() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
added = sorted(set(sys.modules) - before)
heavy = sorted({m.split(".")[0] for m in added} & set(sys.argv[2].split(",")))
print(json.dumps({"import_cpu_s": spent, "process_cpu_s": usage.ru_utime + usage.ru_stime,
                  "modules": len(added), "heavy": heavy, "top_level": sorted({m.split(".")[0] for m in added})}))
"""


def measure_cli(args: list[str], src: str) -> dict:
    """``python -m effnet ARGS`` in a fresh process: its CPU seconds (user + system) and wall seconds."""
    env = {**os.environ, "PYTHONPATH": src}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "effnet", *args], env=env, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"process_cpu_s": cpu, "wall_s": wall}


def measure(modules: list[str], src: str) -> dict:
    if modules[0] == "-m effnet":  # a --cli role
        return measure_cli(modules[1:], src)
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, ",".join(modules), ",".join(HEAVY)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def importtime(modules: list[str], src: str, top: int) -> list[str]:
    """The role's slowest imports by cumulative time, after Ray's (imported first, so not counted again)."""
    code = "import ray, ray.data\n" + "".join(f"import {m}\n" for m in modules)
    env = {**os.environ, "PYTHONPATH": src}
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True)
    lines = [line.removeprefix("import time:").split("|", 2) for line in err.stderr.splitlines()]
    lines = [parts for parts in lines if len(parts) == 3 and parts[1].strip().isdigit()]
    # The role's imports: after ray.data's top-level line, up to its own modules' (what follows is exit's).
    start = max(i for i, (_, _, name) in enumerate(lines) if name.strip() == "ray.data") + 1
    end = max(i for i, (_, _, name) in enumerate(lines) if name.strip() in modules) + 1
    rows = [(int(cumulative), name.rstrip()) for _, cumulative, name in lines[start:end]]  # indented by depth
    rows.sort(reverse=True)
    return [f"{us / 1e6:7.3f} s  {name}" for us, name in rows[:top]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--src", action="append", default=[], help="NAME=DIR: another copy of src, measured too")
    ap.add_argument("--role", action="append", default=[], help="[SRC:]ROLE=MODULE[,MODULE]: what a role imports")
    ap.add_argument("--importtime", type=int, default=0, metavar="N", help="print each role's N slowest imports")
    ap.add_argument("--cli", action="append", default=[], help="'ARGS': also time `python -m effnet ARGS`")
    args = ap.parse_args()
    sources = {"this": str(REPO / "src"), **dict(s.split("=", 1) for s in args.src)}
    roles: dict[tuple[str, str], list[str]] = {(s, r): m for s in sources for r, m in DEFAULT_ROLES.items()}
    roles.update({(s, f"effnet {c}"): ["-m effnet", *shlex.split(c)] for s in sources for c in args.cli})
    for spec in args.role:
        key, modules = spec.split("=", 1)
        src, _, role = key.rpartition(":")
        for s in [src] if src else list(sources):
            roles[(s, role)] = modules.split(",")
    load = os.getloadavg()
    print(f"# load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs", flush=True)
    runs: dict[tuple[str, str], list[dict]] = {key: [] for key in roles}
    keys = list(roles)
    for r in range(args.rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:  # interleaved, alternating order
            runs[key].append(measure(roles[key], sources[key[0]]))
    for (src, role), results in runs.items():
        summary: dict = {"src": src, "role": role}
        for key in ("import_cpu_s", "process_cpu_s", "wall_s"):
            if key in results[0]:
                summary[key] = [round(x[key], 3) for x in results]
                summary[f"{key}_median"] = round(statistics.median(x[key] for x in results), 3)
        if "modules" in results[-1]:
            summary.update(
                modules_imported=roles[(src, role)],
                modules_added=results[-1]["modules"],
                heavy=results[-1]["heavy"],
                top_level_added=results[-1]["top_level"],
            )
        print(json.dumps(summary), flush=True)
        if args.importtime and "modules" in results[-1]:
            for line in importtime(roles[(src, role)], sources[src], args.importtime):
                print(f"#   {src} {role}: {line}")
    load = os.getloadavg()
    print(f"# load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
