"""A local Ray cluster effnet started: what it was, and making sure nothing of it outlives the run.

``ray.shutdown()`` stops the processes of a local cluster the driver started, but a worker can hang in
Ray's own exit path (seen with Ray 2.60: a ``MapWorker(InferenceActor)`` process of 452 MB, parent PID 1,
9 minutes after effnet exited 0, stuck in ``CoreWorkerProcessImpl``'s destructor). So, when effnet
started the cluster, it records at start what identifies its processes, and after ``ray.shutdown()``
waits a grace period, then reports and stops whatever of that cluster is still alive.

A process belongs to the cluster when it is one the start recorded (GCS, raylet, dashboard, monitors:
their PID and creation time, so a reused PID is not taken), or when all of these hold: it runs as this
user, it holds a file open under the cluster's own session folder (every Ray worker writes its stdout and
stderr to ``<session>/logs/worker-*.out|err``), it started no earlier than the cluster's first process,
and it was launched by the cluster: a recorded process is among its ancestors, or its environment's
``RAY_RAYLET_PID`` (which the raylet sets for every process it spawns, and which its children inherit
even once reparented to PID 1) names the recorded raylet. A worker renames its process title, so names
say nothing and are never used; a user's ``tail -f`` of a Ray log or a log shipper holds those files too
but was not launched by the cluster, so it is never touched. Nor is anything of a cluster joined by
address: that one is not effnet's to stop.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["GRACE_SECONDS", "OwnedCluster", "ProcessFacts", "launched_by"]

# How long the processes of a cluster get to exit after ray.shutdown() before effnet stops them. Ray's own
# shutdown sends SIGTERM and waits up to a few seconds per process; workers exit when their raylet goes.
GRACE_SECONDS = 10.0


def _holds_file_under(pid: int, folder: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or another user's process: not ours to judge
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(folder):
                return True
        except OSError:
            continue
    return False


@dataclass(frozen=True)
class ProcessFacts:
    """What the ownership rule looks at for one process that holds a file under the session folder."""

    created: float  # its creation time (psutil, seconds since the epoch)
    ancestors: tuple[tuple[int, float], ...]  # (PID, creation time) of its parent, grandparent, ...
    raylet_pid: int | None  # RAY_RAYLET_PID in its environment, if any


def launched_by(facts: ProcessFacts, started: tuple[tuple[int, float], ...]) -> bool:
    """Whether a process holding a file under the session folder was launched by the cluster whose start
    launched ``started``: never one older than the cluster's first process; else a recorded process is
    among its ancestors, or the raylet that spawned it (``RAY_RAYLET_PID``) is a recorded one."""
    if not started or facts.created < min(created for _, created in started):
        return False
    if any(a in started for a in facts.ancestors):
        return True
    return facts.raylet_pid is not None and facts.raylet_pid in {pid for pid, _ in started}


def _facts(p: psutil.Process) -> ProcessFacts:
    ancestors = []
    for a in p.parents():
        try:
            ancestors.append((a.pid, a.create_time()))
        except psutil.Error:
            continue
    try:
        raylet = p.environ().get("RAY_RAYLET_PID")
    except psutil.Error:
        raylet = None
    return ProcessFacts(p.create_time(), tuple(ancestors), int(raylet) if raylet and raylet.isdigit() else None)


@dataclass(frozen=True)
class OwnedCluster:
    """What identifies the processes of a local Ray this process started (see the module's docstring)."""

    session_dir: str  # e.g. /tmp/ray/session_2026-12-07_15-45-45_842164_6975: unique to the cluster
    started: tuple[tuple[int, float], ...]  # (PID, creation time) of the processes Ray's start launched

    @classmethod
    def record(cls) -> OwnedCluster | None:
        """The cluster this process has just started with ``ray.init``; None if Ray does not say."""
        import ray._private.worker as ray_worker  # no public API names a started node's processes

        node = getattr(ray_worker, "_global_node", None)
        if node is None:
            return None
        session = str(Path(node.get_session_dir_path()).resolve()) + os.sep
        started = []
        for infos in node.all_processes.values():
            for info in infos:
                pid = getattr(info.process, "pid", None)
                if pid is None:
                    continue
                try:
                    started.append((pid, psutil.Process(pid).create_time()))
                except psutil.Error:
                    continue
        return cls(session, tuple(started))

    def alive(self) -> list[psutil.Process]:
        """Processes of this cluster still running (this process excluded)."""
        found: dict[int, psutil.Process] = {}
        for pid, created in self.started:
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    found[pid] = p
            except psutil.Error:
                continue
        me = os.getpid()
        for p in psutil.process_iter():
            if p.pid == me or p.pid in found:
                continue
            try:
                if (
                    p.uids().real == os.getuid()
                    and _holds_file_under(p.pid, self.session_dir)
                    and launched_by(_facts(p), self.started)
                ):
                    found[p.pid] = p
            except psutil.Error:
                continue
        return list(found.values())

    def stop_stragglers(self, grace: float = GRACE_SECONDS) -> list[str]:
        """After ``ray.shutdown()``: wait up to ``grace`` seconds for the cluster's processes to exit, then
        report (stderr, one line) and stop those still there. Returns what was stopped, ``PID NAME``."""
        deadline = time.monotonic() + grace
        left = self.alive()
        while left and time.monotonic() < deadline:
            time.sleep(0.25)
            left = self.alive()
        if not left:
            return []
        named = []
        for p in left:
            try:
                named.append(f"{p.pid} {p.name()} ({p.status()})")
            except psutil.Error:
                named.append(str(p.pid))
        print(
            f"effnet: {len(left)} process(es) of the local Ray this run started were still running {grace:.0f} s "
            f"after it shut down ({', '.join(named)}); stopping them",
            file=sys.stderr,
            flush=True,
        )
        for p in left:  # SIGTERM first; SIGCONT so a stopped process can act on it
            for sig in (signal.SIGTERM, signal.SIGCONT):
                try:
                    p.send_signal(sig)
                except psutil.Error:
                    pass
        _, still = psutil.wait_procs(left, timeout=3.0)
        for p in still:  # a process deadlocked in its exit path ignores SIGTERM
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(still, timeout=3.0)
        return named
