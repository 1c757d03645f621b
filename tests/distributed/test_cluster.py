"""Which processes a local Ray effnet started may stop: only those the cluster launched, never a user's
process that merely reads its logs (no Ray needed: the rule on fake process records, then on real ones)."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from effnet.distributed.cluster import OwnedCluster, ProcessFacts, launched_by

GCS, RAYLET = (100, 1000.0), (101, 1000.5)
STARTED = (GCS, RAYLET)


def test_only_processes_the_cluster_launched_after_it_started_are_its_own():
    shell = (50, 10.0)
    # A worker under the raylet; its child re-parented to PID 1 but carrying RAY_RAYLET_PID.
    assert launched_by(ProcessFacts(1001.0, (RAYLET, (1, 1.0)), 101), STARTED)
    assert launched_by(ProcessFacts(1002.0, ((1, 1.0),), 101), STARTED)
    # A user's `tail -f .../raylet.out` or a log shipper: started from a shell, no raylet in its environment.
    assert not launched_by(ProcessFacts(1003.0, (shell, (1, 1.0)), None), STARTED)
    # Another cluster's raylet, or a PID equal to a recorded one but from another process (other start time).
    assert not launched_by(ProcessFacts(1003.0, ((101, 5.0), (1, 1.0)), 999), STARTED)
    # Older than the cluster: never its own, whatever its environment says.
    assert not launched_by(ProcessFacts(999.0, (RAYLET,), 101), STARTED)
    assert not launched_by(ProcessFacts(1003.0, (RAYLET,), 101), ())


def test_a_reader_of_the_session_logs_is_not_stopped_but_what_the_raylet_launched_is(tmp_path):
    log = tmp_path / "logs" / "worker-1.out"
    log.parent.mkdir()
    log.write_text("")
    reader = subprocess.Popen(["tail", "-f", str(log)], stdout=subprocess.DEVNULL)
    time.sleep(0.05)  # a fake "raylet" started after the reader, whose child holds the log as its stdout
    raylet = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen(['sleep', '60'], stdout=open(sys.argv[1], 'a')); "
            "time.sleep(60)",
            str(log),
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(raylet.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        (worker,) = psutil.Process(raylet.pid).children()
        owned = OwnedCluster(str(tmp_path) + "/", ((raylet.pid, psutil.Process(raylet.pid).create_time()),))
        assert sorted(p.pid for p in owned.alive()) == sorted([raylet.pid, worker.pid])
    finally:
        for p in psutil.Process(raylet.pid).children():
            p.kill()
        for p in (raylet, reader):
            p.kill()
            p.wait()
