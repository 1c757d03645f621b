"""Where a Ray job's work runs, decided from what the user asked and the cluster's resources, never from
the driver's own hardware or packages. Free of Ray (unit-tested without a cluster).

Facts this rests on:

- Ray sets ``CUDA_VISIBLE_DEVICES`` in every worker process to the GPUs it reserved for that actor or
  task, and to the empty string when it reserved none (``num_gpus=0``). So an actor sees a GPU exactly
  when it reserved one, and that GPU is its ``cuda`` (index 0), whichever physical GPU it is.
- The driver may have no GPU and other packages than the nodes (a CPU-only head, a laptop with Ray
  Client): it passes the request (``"auto"`` stays ``"auto"``); each actor or replica resolves it
  (``effnet.device.resolve_device``, ``effnet.backends.resolve_auto``) from its own packages and devices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..device import parse_device
from ..errors import EffnetError

__all__ = ["DEFAULT_BATCH", "PoolSize", "batch_default", "device_kind_on_ray", "node_device", "size_pool"]

# Rows per inference call when --batch-size is not given, by the kind of device the actors run on. On the
# CPU a forward pass costs about the same per image at any batch size; a GPU's throughput keeps rising
# far beyond 8 (issue 11's H200 run of B5: about 80 img/s eager at batch 1, 1,600 img/s at batch 256).
# The same figures as `effnet serve`'s batching defaults (cli/serve.py BATCHING_DEFAULTS).
DEFAULT_BATCH = {"cpu": 8, "cuda": 64}


def node_device(device: str | None, gpus: float, flag: str = "--gpus-per-worker") -> tuple[str, float]:
    """(device each actor asks for, GPUs each reserves) from the user's ``--device`` and GPU flag.

    - GPUs reserved imply CUDA there: ``cpu`` (the CLI's default) becomes ``cuda``; ``auto`` stays ``auto``
      and is resolved on the node (where the reserved GPU is visible).
    - ``cuda`` without GPUs reserves one per actor: without a reservation Ray hides every GPU from it.
    - ``cuda:N`` is refused: the GPU is the one Ray assigns to each actor, always its ``cuda``.
    """
    requested = parse_device(device or "cpu")
    if gpus < 0:
        raise EffnetError(f"{flag} must be >= 0, got {gpus:g}")
    if requested.startswith("cuda:"):
        raise EffnetError(
            f"--device {requested}: on Ray each actor uses the GPU Ray reserved for it (its CUDA_VISIBLE_DEVICES); "
            f"use --device cuda (with {flag} F to choose how much of a GPU each one reserves)"
        )
    if requested == "cuda" and gpus == 0:
        gpus = 1.0
    if gpus > 0 and requested == "cpu":
        requested = "cuda"
    return requested, gpus


def device_kind_on_ray(device: str | None, gpus: float) -> str:
    """``"cuda"`` or ``"cpu"``: what an actor with this request will run on (see the module's facts)."""
    requested, gpus = node_device(device, gpus)
    return "cuda" if gpus > 0 else "cpu"


def batch_default(device: str | None, gpus: float) -> int:
    """Rows per inference call when the user gave none, from the request (not the driver's hardware)."""
    return DEFAULT_BATCH[device_kind_on_ray(device, gpus)]


@dataclass(frozen=True)
class PoolSize:
    """An inference actor pool: Ray Data's ``ActorPoolStrategy(min_size, max_size, initial_size)``.

    ``high=None`` is unbounded: Ray Data adds actors while blocks wait and the cluster has room, so a pool
    grows with an autoscaling cluster instead of staying at the count seen when the job started.
    """

    low: int
    initial: int
    high: int | None

    def describe(self) -> str:
        if self.high == self.low:
            return str(self.low)
        return f"{self.low}-{self.high if self.high is not None else 'any'} (started {self.initial})"


def _resources(nodes: Sequence[Mapping], name: str) -> list[float]:
    return [float(n.get("Resources", {}).get(name, 0)) for n in nodes if n.get("Alive")]


def size_pool(
    workers: int | tuple[int, int] | None,
    nodes: Sequence[Mapping],
    *,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float = 0.0,
    decode_cpus: float = 1.0,
    names: tuple[str, str] = ("--workers", "inference actors"),
) -> PoolSize:
    """The actor pool for ``--workers`` on a cluster whose nodes are ``nodes`` (``ray.nodes()``).

    An actor lives on one node, so capacity is counted per node: ``floor(GPUs / gpus_per_worker)`` when GPUs
    are requested, else ``floor(CPUs / cpus_per_worker)`` less the CPUs of one decode task (actors holding
    every CPU would leave none to decode their input). A pool that cannot start now is an error, never a
    wait: Ray would otherwise keep the job pending until resources appear, which may be never.
    Default (no ``--workers``): start at what fits now, at least 1, and autoscale without an upper bound
    when each actor is bounded by what it reserves (GPUs, or ``--cpus-per-worker``); else one actor per node.
    """
    cpu_need = cpus_per_worker or 1.0
    cpus = _resources(nodes, "CPU")
    if gpus_per_worker > 0:
        gpus = _resources(nodes, "GPU")
        fits = sum(math.floor(g / gpus_per_worker + 1e-9) for g, c in zip(gpus, cpus, strict=True) if c >= cpu_need)
        have = ", ".join(f"{g:g}" for g in gpus) or "no"
        what = f"{gpus_per_worker:g} GPU each; the cluster's nodes have {have} GPUs"
    else:
        per_node = sum(math.floor(c / cpu_need + 1e-9) for c in cpus)
        spare = math.floor((sum(cpus) - decode_cpus) / cpu_need + 1e-9)
        fits = max(0, min(per_node, spare))  # what Ray can place
        if workers is None and cpus_per_worker is None:
            # Without --cpus-per-worker an actor's backend uses every core of its node: by default one
            # actor per node (a second one there would halve both).
            fits = min(fits, sum(1 for c in cpus if c >= cpu_need))
        what = (
            f"{cpu_need:g} CPU each plus {decode_cpus:g} CPU to decode; the cluster's nodes have "
            f"{', '.join(f'{c:g}' for c in cpus) or 'no'} CPUs"
        )
    flag, noun = names
    if workers is None:
        if fits < 1:
            raise EffnetError(f"none of the {noun} fits on the cluster now ({what})")
        # Unbounded when each actor uses only what it reserves (GPUs, or --cpus-per-worker caps its threads);
        # an uncapped CPU actor uses its whole node, and a second one there would halve both.
        grows = gpus_per_worker > 0 or cpus_per_worker is not None
        return PoolSize(1, fits, None if grows else fits)
    low, high = workers if isinstance(workers, tuple) else (workers, workers)
    if low > fits:
        flag = flag if not isinstance(workers, tuple) else f"{flag} MIN:MAX (MIN)"
        raise EffnetError(
            f"{flag} {low} needs {low} {noun}, but {fits} fit on the cluster now ({what}); "
            "ask for fewer, or add nodes first"
        )
    return PoolSize(low, low if low == high else min(high, fits), high)
