"""A Ray job ends cleanly however it is stopped, and a dead address fails in seconds (issue 33, item 3).

SIGTERM (``kill``, systemd, Kubernetes, ``timeout``) is Ctrl-C inside every Ray job
(``effnet.distributed.jobs.connected``): exit 130 with one line, the staged output removed, and the local
Ray the job started shut down with nothing of it left running. A ``--ray-address`` or ``RAY_ADDRESS`` where
nothing listens is one line naming it, within seconds (Ray itself retries a dead GCS address for ~14 min).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tests.distributed.ray_fixtures import LITE0, free_port
from tests.testutils import REPO, run_cli

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'effnet[ray]')")


def test_a_dead_ray_address_is_one_line_naming_it_and_nothing_is_written(sample_images, tmp_path):
    port = free_port()  # bound, then closed: nothing listens on it
    out = tmp_path / "rows.parquet"
    job = ("classify", "--engine", "ray", "--no-progress", "--model", LITE0, "--output", str(out))
    job += (str(sample_images[0]),)
    for address, args, env in (
        (f"127.0.0.1:{port}", ("--ray-address", f"127.0.0.1:{port}"), {}),  # a GCS address
        (f"ray://127.0.0.1:{port}", (), {"RAY_ADDRESS": f"ray://127.0.0.1:{port}"}),  # Ray Client, from the env
    ):
        r = run_cli(*job, *args, env=env, timeout=60)  # Ray alone: ~14 min (GCS), 30 s (ray://)
        assert r.returncode == 1, r.stderr[-2000:]
        errors = [line for line in r.stderr.splitlines() if line.startswith("effnet: error:")]
        assert len(errors) == 1 and f"cannot connect to the Ray cluster at {address}: " in errors[0], r.stderr
        assert "Connection refused" in errors[0] and "Traceback" not in r.stderr, r.stderr
        assert list(tmp_path.iterdir()) == []


SIGTERM_IN_A_JOB = textwrap.dedent(
    """
    import os, signal, threading, time
    import ray
    from effnet.distributed import jobs

    ray.is_initialized = lambda: True  # "the current Ray session": the handler without starting a cluster
    before = signal.getsignal(signal.SIGTERM)
    try:
        with jobs.connected(None, progress=False):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted")
    print("restored", signal.getsignal(signal.SIGTERM) is before)
    seen = []

    def job():  # another thread cannot set handlers: the job runs, SIGTERM's handler untouched
        with jobs.connected(None, progress=False) as where:
            seen.append((where, signal.getsignal(signal.SIGTERM) is before))

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    print("thread", seen)
    """
)


def test_sigterm_is_ctrl_c_inside_a_job_on_the_main_thread_and_other_threads_still_run_jobs():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run(
        [sys.executable, "-c", SIGTERM_IN_A_JOB], capture_output=True, text=True, timeout=120, env=env, cwd=REPO
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines() == [
        "interrupted",
        "restored True",
        "thread [('the current Ray session', True)]",
    ], r.stdout + r.stderr[-3000:]


def _holding_files_under(folder: Path) -> list:
    """This user's processes with a file open under ``folder`` (a Ray worker's logs, a raylet's sockets' folder)."""
    import psutil

    found = []
    for q in psutil.process_iter():
        try:
            if q.uids().real == os.getuid() and any(f.path.startswith(str(folder)) for f in q.open_files()):
                found.append(q)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("when", ["running", "starting"])
def test_sigterm_stops_a_job_on_the_local_ray_it_started_leaving_no_process_and_no_output(when, sample_dir, tmp_path):
    # running: the job is on Ray (its handler set); starting: ray.init is starting the local Ray (Ray's handler)
    import psutil

    from effnet.distributed.cluster import OwnedCluster

    # A Ray temp folder of this test's own (short: Ray's socket paths must fit 107 bytes): the one session
    # in it is this job's cluster, and anything holding a file in it is this job's, whatever else runs here.
    ray_tmp = Path(tempfile.mkdtemp(prefix="effnet-ray-", dir="/tmp"))
    out = tmp_path / "out" / "rows.parquet"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "effnet", "classify", "--engine", "ray", "--ray-address", "local", "--no-progress"]
    cmd += ["--model", LITE0, "--workers", "1", "--batch-size", "1", "--output", str(out), str(sample_dir)]
    # running: the output's staging folder is made once Ray is up and connected() has yielded, its handler
    # set; starting: Ray's session folder is made while ray.init starts the cluster.
    ready = (out.parent, f".{out.name}.*") if when == "running" else (ray_tmp, "*/session_2*")
    tree: list[tuple[int, float]] = []
    try:
        with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
            deadline = time.monotonic() + 240
            while not list(ready[0].glob(ready[1])):
                if p.poll() is not None or time.monotonic() > deadline:
                    p.kill()
                    pytest.fail(f"the job did not reach Ray (exit {p.poll()}): {p.communicate()[1][-3000:]}")
                time.sleep(0.05)
            # The cluster's processes, by descent from the driver (GCS, raylet, workers, agents), recorded
            # before the signal: after it, some would be re-parented and no longer found this way.
            for child in psutil.Process(p.pid).children(recursive=True):
                try:
                    tree.append((child.pid, child.create_time()))
                except psutil.Error:
                    continue
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=120)
        assert p.returncode == 130, err[-3000:]
        assert "effnet: interrupted" in err.splitlines() and "Traceback" not in err, err[-3000:]
        assert list(out.parent.iterdir()) == [], "a staged or partial output was left behind"
        assert len(tree) >= (3 if when == "running" else 1), tree  # GCS, raylet, workers: something to check
        (session,) = ray_tmp.rglob("session_2*")
        cluster = OwnedCluster(str(session.resolve()) + os.sep, tuple(tree))
        grace = time.monotonic() + 10  # what is still exiting gets a moment, as effnet's own grace period
        while (left := cluster.alive() + _holding_files_under(ray_tmp)) and time.monotonic() < grace:
            time.sleep(0.25)
        assert left == [], [(q.pid, q.cmdline()[:3]) for q in left]
    finally:
        for q in _holding_files_under(ray_tmp):  # nothing of it outlives the test, even when it failed
            q.kill()
        for pid, created in tree:
            try:
                q = psutil.Process(pid)
                if q.create_time() == created:
                    q.kill()
            except psutil.Error:
                continue
        shutil.rmtree(ray_tmp, ignore_errors=True)
