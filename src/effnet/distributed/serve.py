"""``effnet serve --engine ray``: the same Starlette app as ``effnet serve``, as a Ray Serve deployment.

Each replica is a Ray actor that builds one backend (``effnet.serve.launch.load_model``) from the weights
the driver resolved and shipped (``effnet.distributed.worker.materialize_weights``), then hands Ray Serve
the app of ``effnet.serve.app.create_app`` (KServe v2, ``/v1/classify``, the page, ``/metrics``; its
batcher batches the requests that reach that replica). Ray Serve's proxy spreads requests over the
replicas, replaces a replica whose process dies, and scales between ``--autoscale MIN:MAX``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import serve

from ..errors import EffnetError
from ..serve.app import create_app
from ..serve.launch import ServerOptions, load_model
from ..source import resolve_source
from .jobs import connected
from .worker import materialize_weights

__all__ = ["RayServeOptions", "EffnetDeployment", "deployment", "run"]


@dataclass(frozen=True)
class RayServeOptions:
    """The Ray side of ``effnet serve --engine ray``: replicas and the resources of each."""

    replicas: int | tuple[int, int] = 1  # N, or (MIN, MAX) to autoscale on ongoing requests
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    address: str | None = None

    def check(self) -> None:
        low, high = self.replicas if isinstance(self.replicas, tuple) else (self.replicas, self.replicas)
        if not 1 <= low <= high:
            raise EffnetError(f"replicas must be N >= 1 or MIN:MAX with 1 <= MIN <= MAX, got {self.replicas}")


@serve.ingress()
class EffnetDeployment:
    """One replica: its model, loaded once, behind the server app (built by ``__serve_build_asgi_app__``)."""

    def __init__(self, options_json: str, weights: dict[str, Any], ref: list[ray.ObjectRef]) -> None:
        path = materialize_weights(
            weights["name"], weights["sha256"], weights["size"], weights["shared_path"], lambda: ray.get(ref[0])
        )
        self.options = dataclasses.replace(ServerOptions.from_json(options_json), weights=str(path))
        self.model = load_model(self.options)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.model, self.options.config)


def deployment(options: ServerOptions, ray_options: RayServeOptions) -> serve.Application:
    """The bound application: weights resolved once here (the driver) and put in the object store."""
    source = resolve_source(options.model, options.weights, progress=False)
    if source.checkpoint is None:
        raise EffnetError("--engine ray needs weights: random-init replicas would answer differently")
    data = Path(source.checkpoint).read_bytes()
    weights = {
        "name": Path(source.checkpoint).name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "shared_path": str(Path(source.checkpoint).resolve()),
    }
    scaling: dict[str, Any]
    if isinstance(ray_options.replicas, tuple):
        low, high = ray_options.replicas
        scaling = {"autoscaling_config": {"min_replicas": low, "max_replicas": high}}
    else:
        scaling = {"num_replicas": ray_options.replicas}
    resources: dict[str, Any] = {"num_cpus": ray_options.cpus_per_replica}
    if ray_options.gpus_per_replica:
        resources["num_gpus"] = ray_options.gpus_per_replica
    deployed: Any = serve.deployment(
        EffnetDeployment,
        name="effnet",
        ray_actor_options=resources,
        # Up to the app's own admission limit per replica: its batcher needs concurrent requests to batch,
        # and it answers 503 beyond max_queue itself.
        max_ongoing_requests=options.config.max_queue,
        **scaling,
    )
    return deployed.bind(options.to_json(), weights, [ray.put(data)])


def run(options: ServerOptions, ray_options: RayServeOptions) -> None:
    """Deploy and serve until SIGINT/SIGTERM, then shut Ray Serve down."""
    ray_options.check()
    with connected(ray_options.address, progress=False) as where:
        serve.start(http_options={"host": options.host, "port": options.port})
        app = deployment(options, ray_options)
        serve.run(app, name="effnet", route_prefix="/", blocking=False)
        replicas = ray_options.replicas
        count = f"{replicas[0]}-{replicas[1]} replicas" if isinstance(replicas, tuple) else f"{replicas} replicas"
        print(
            f"effnet serve: {options.model} as a Ray Serve deployment ({count}, on {where}) on "
            f"http://{options.host}:{options.port}  [page /, KServe v2 /v2, /v1/classify, /metrics]",
            file=sys.stderr,
            flush=True,
        )
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        finally:
            serve.shutdown()
