"""What ``effnet classify --engine ray`` runs after parsing: connect, build the pipeline, write, summarize.

Cluster: ``--ray-address ADDR`` (``auto``, ``ray://host:10001``, ``host:6379``, or ``local`` for a fresh
local Ray); without it, ``RAY_ADDRESS`` or a running cluster on this machine (``ray start``) is joined,
else a local Ray is started for the run and stopped at its end, with any of its processes that outlive
``ray.shutdown()`` reported and stopped (``effnet.distributed.cluster``). Within a job SIGTERM is Ctrl-C
(``effnet.signals``), so a ``kill`` stops it the same clean way; an address where nothing answers fails in
seconds (:func:`check_reachable`), not after Ray's own retries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
import ray.data

from ..errors import EffnetError
from ..signals import sigterm_as_ctrl_c
from ..source import ModelSource
from .cluster import OwnedCluster
from .data import PipelineOptions, build_pipeline, check_fits, pool_size, ship_weights
from .inputs import list_inputs, read_inputs
from .outputs import OutputSpec, WriteSummary, output_spec, staging, write_results

__all__ = [
    "CheckedJob",
    "ClassifyJob",
    "actor_failure",
    "check_classify",
    "check_reachable",
    "connected",
    "connect_reason",
    "run_classify",
]

log = logging.getLogger("effnet.distributed")

# How long a cluster address gets to accept a TCP connection: a live head answers a connect in milliseconds
# (a refused one fails as fast); this bounds a host that drops packets. Ray alone (2.60) was still retrying a
# GCS address where nothing listens after 400 s, printing a warning every few seconds (by its code 20 tries of
# ~41 s: ~14 min), and a ray:// one for 30 s.
REACH_SECONDS = 5.0


def connect_reason(e: BaseException) -> str:
    """``e`` and the causes it was raised from, on one line: Ray says "Failed to connect to Ray cluster at
    ADDR" and keeps why (a refused token: ``InvalidAuthToken``...) in ``__cause__``; a traceback quoted in a
    message is cut to its last line, the error itself."""
    parts: list[str] = []
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = str(cause)
        head, mark, trace = text.partition("Traceback (most recent call last):")
        if mark:  # Ray puts a whole traceback in some messages ("Last connection error: Traceback..."): its last line
            text = head + ([line for line in trace.splitlines() if line.strip()] or [""])[-1]
        text = " ".join(text.split()) or type(cause).__name__
        if not any(text in p for p in parts):
            parts.append(text)
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return ": ".join(parts)


def actor_failure(e: BaseException) -> EffnetError | None:
    """One line for an actor that died (in its constructor: weights that do not fit, a backend that cannot be
    built): the actor's own error message, found in ``e`` or what it was raised from, instead of Ray's
    hundreds of lines; None when ``e`` is not an actor's death."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ray.exceptions.RayActorError):
            text = str(cause)
            # The actor's traceback ends with "effnet.errors.CheckpointError: <message, maybe several lines>"
            found = list(re.finditer(r"(?:effnet\.errors\.)?\w*Error: ", text))
            message = text[found[-1].end() :] if found else text
            message = " ".join(message.split())
            return EffnetError(f"a Ray actor failed to start: {message[:500]}")
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return None


def _stop_data_executors() -> None:
    """Stop Ray Data's executor threads before ``ray.shutdown()``.

    Ray Data runs a dataset on a thread of its own, which a Ctrl-C in the driver's thread does not stop.
    Left running across ``ray.shutdown()``, its next Ray call goes through Ray's auto-connect and calls
    ``ray.init()`` again ("Connecting to existing Ray cluster..."), which for a cluster effnet started could
    start a new, unrecorded local Ray. The executor is a ``threading.Thread`` (no public API lists them).
    """
    try:
        from ray.data._internal.execution.streaming_executor import StreamingExecutor
    except ImportError:  # another Ray layout: nothing to stop here, the re-init check below still holds
        return
    for thread in threading.enumerate():
        if isinstance(thread, StreamingExecutor) and thread.is_alive():
            with contextlib.suppress(Exception):  # shutting down: a failure to stop it must not hide the cause
                thread.shutdown(force=True)
            thread.join(timeout=5.0)


def check_reachable(address: str) -> None:
    """Raise a one-line :class:`EffnetError` naming ``address`` (``host:port`` or ``ray://host:port``) when
    nothing accepts a TCP connection there within :data:`REACH_SECONDS`. Other forms (``auto``, ``local``,
    another scheme) are left to ``ray.init``. A connect, not a Ray setting: no documented ``ray.init``
    option bounds the wait; its tries (``RAY_NUM_REDIS_GET_RETRIES``, read when Ray is imported) are ~41 s
    each against a dead GCS, so even one try is slow; and fewer tries would also fail a live cluster that is
    slow to answer (a head restarting). A refused or unanswered connect means the same on every Ray."""
    rest = address.removeprefix("ray://")
    if "://" in rest:
        return
    host, sep, port = rest.split("/", 1)[0].rpartition(":")
    if not sep or not host or not port.isdigit():
        return  # not host:port: ray.init says what is wrong with it
    if not 0 < int(port) < 65536:  # the resolver would wrap 99999 to another port, which might answer
        raise EffnetError(f"cannot connect to the Ray cluster at {address}: {port} is not a TCP port (1-65535)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_SECONDS):
            pass
    except OSError as e:
        why = f"no answer within {REACH_SECONDS:.0f} s" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise EffnetError(
            f"cannot connect to the Ray cluster at {address}: nothing accepts a TCP connection there ({why}); "
            "check the host and port (ray start prints them: GCS host:6379 by default, Ray Client ray://host:10001)"
        ) from None


@contextlib.contextmanager
def _one_line_actor_failures() -> Iterator[None]:
    try:
        yield
    except Exception as e:
        if (failure := actor_failure(e)) is None:
            raise
        raise failure from None


@contextlib.contextmanager
def connected(address: str | None, *, progress: bool = True) -> Iterator[str]:
    """Joined to (or started) a Ray cluster for the block; yields a description of where.

    Within the block SIGTERM raises KeyboardInterrupt (main thread only, set once ``ray.init`` has put its
    own handler in place), so a ``kill`` stops a job as Ctrl-C does: outputs staged are removed, Ray is shut
    down and, for a local Ray it started, its stragglers stopped; the CLI exits 130 with one line."""
    ray.data.DataContext.get_current().enable_progress_bars = progress
    # Ray Data's INFO lines (plans, per-operator logs) would bury the summary; its progress bars stay.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        with sigterm_as_ctrl_c(), _one_line_actor_failures():
            yield "the current Ray session"
        return
    common: dict[str, Any] = {"logging_level": logging.WARNING}
    owned: OwnedCluster | None = None
    if address is not None and not address.strip():
        raise EffnetError("--ray-address is empty: give host:port, ray://host:port, auto or local")
    # The address Ray will use: with "auto" (or none) Ray takes RAY_ADDRESS first, when it is set.
    target = os.environ.get("RAY_ADDRESS") if address in (None, "auto") else address
    target = target or address
    if target:  # a dead address fails now: Ray would retry it for minutes
        check_reachable(target)
    try:
        # address="local" (not None): Ray would otherwise join RAY_ADDRESS or the cluster named in
        # /tmp/ray/ray_current_cluster, and "a local Ray started for this run" would be someone else's.
        if address == "local":
            ray.init(address="local", include_dashboard=False, **common)
            where, owned = "a local Ray started for this run", OwnedCluster.record()
        elif address is None and not os.environ.get("RAY_ADDRESS"):
            try:
                ray.init(address="auto", **common)
                where = "the Ray cluster running on this machine"
            except ConnectionError:
                ray.init(address="local", include_dashboard=False, **common)
                where, owned = "a local Ray started for this run", OwnedCluster.record()
        else:
            ray.init(address=address, **common)  # None: RAY_ADDRESS
            where = f"the Ray cluster at {address or os.environ['RAY_ADDRESS']}"
    except SystemExit as e:  # a SIGTERM while ray.init runs: Ray's own handler there exits with the signal number
        if e.code != signal.SIGTERM:
            raise
        # What it had started so far is this run's: recorded now (ray.init did not return, so `owned` is unset),
        # shut down, and what outlives that stopped. Ray names its node only once the node's processes are all
        # up: a SIGTERM before that (5.5 s into a run here) finds nothing to record, and the raylet's dashboard
        # and runtime-env agents outlive the run until Ray's own cleanup ends them (within a minute, measured).
        # Joining a cluster starts no process here: its record lists none, and nothing is stopped.
        starting = None
        with contextlib.suppress(Exception):  # a node half set up may not say yet: then Ray's reaper is all
            starting = OwnedCluster.record()
        with contextlib.suppress(Exception):
            ray.shutdown()
        if starting is not None:
            starting.stop_stragglers()
        raise KeyboardInterrupt from None  # as within the job: one line, exit 130
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise EffnetError(f"cannot connect to the Ray cluster at {target}: {connect_reason(e)}") from None
    except Exception as e:  # Ray raises a bare Exception when the node it starts times out during startup
        if "timed out" not in str(e):
            raise
        raise EffnetError(
            f"Ray did not start in time ({connect_reason(e)}): join a running cluster with --ray-address ADDR, "
            "or run on a less loaded machine"
        ) from None
    try:
        with sigterm_as_ctrl_c(), _one_line_actor_failures():
            yield where
    finally:
        _stop_data_executors()
        ray.shutdown()
        if ray.is_initialized():  # something still auto-connected in between: that session goes too
            ray.shutdown()
        # Only a cluster this run started is its to stop: a joined one (by address, or the machine's
        # running cluster) keeps running for its other users.
        if owned is not None:
            owned.stop_stragglers()


@dataclass(frozen=True)
class ClassifyJob:
    """``effnet classify --engine ray`` after parsing; the model source is resolved by the caller, once."""

    paths: Sequence[str]
    output: str
    from_list: Sequence[str] = ()
    address: str | None = None
    options: PipelineOptions = field(default_factory=PipelineOptions)
    shared_inputs: bool = False  # local paths are on a filesystem every node sees (inputs.read_inputs)
    progress: bool = True


@dataclass(frozen=True)
class CheckedJob:
    """What :func:`check_classify` found on the driver: the output's spec and the listed inputs."""

    spec: OutputSpec
    listed: list[str]


def check_classify(job: ClassifyJob) -> CheckedJob:
    """The checks made before the model is resolved and before Ray starts, each failing in a second: the
    options, the output, and the inputs listed (folders expanded) on the driver."""
    job.options.check()
    spec = output_spec(job.output)  # a bad --output fails now, not after the run
    return CheckedJob(spec, list_inputs(job.paths, job.from_list))  # no images: an error now


def run_classify(job: ClassifyJob, source: ModelSource, checked: CheckedJob | None = None) -> WriteSummary:
    """Classify ``job.paths`` with ``source`` (resolved once by the caller) into ``job.output``; prints one
    summary line on stderr.

    Before Ray starts: :func:`check_classify` (unless the caller made it already, before resolving the
    source: ``checked``). Before any inference: the output location is checked from every node, the actor
    pool is sized on the cluster as it is (an error, not a wait, when it cannot start), the source's weights
    are shipped (:func:`~effnet.distributed.data.ship_weights`), and the inputs (unless shared) are
    streamed from the driver's node. After: the rows written must be one per input.
    """
    checked = checked or check_classify(job)
    check_fits(source)  # weights that do not fit the model: the local error, before Ray starts
    with connected(job.address, progress=job.progress) as where, staging(checked.spec) as parts:
        started = time.perf_counter()
        options = job.options.placed()
        pool = pool_size(options)
        shipped = ship_weights(source, options)
        inputs = read_inputs(job.paths, job.from_list, shared=job.shared_inputs, listed=checked.listed)
        results = build_pipeline(inputs.dataset, shipped, options, pool)
        summary = write_results(results, checked.spec, parts, expected=inputs.count)
        seconds = time.perf_counter() - started
    rate = summary.rows / seconds if seconds > 0 else float("nan")
    local = inputs.shipped_bytes / 2**20
    sent = f", {local:.1f} MB of local inputs read on the driver's node" if inputs.shipped else ""
    print(
        f"effnet: {summary.rows:,} images, {summary.errors:,} errors, {rate:.1f} images/s, {pool.describe()} workers "
        f"(backend {options.backend} on {options.device}, decided on each node; {seconds:.1f} s on {where}"
        f"{sent}) -> {summary.path}",
        file=sys.stderr,
        flush=True,
    )
    return summary
