"""``effnet serve --engine ray``: the same Starlette app as ``effnet serve``, on Ray Serve.

Two deployments, composed (Ray Serve's model composition):

* ``effnet`` — the ingress: the app of ``effnet.serve.app.create_app`` (KServe v2, ``/v1/classify``, the
  page, ``/metrics``) behind ``@serve.ingress``. It admits, reads, validates and decodes requests and
  batches them (``effnet.serve.batcher.DynamicBatcher``); it holds no model.
* ``effnet-model`` — the replicas (``--replicas N`` / ``--autoscale MIN:MAX``): each builds one backend
  (``effnet.serve.launch.load_model``) from the weights the driver resolved and shipped
  (``effnet.distributed.worker.materialize_weights``) and runs the ingress's batches.

Why two: Ray Serve's proxy answers 500 for every request in flight on a replica whose process dies (it
cannot know whether a request may be repeated). A batch of probabilities may: inference has no side
effects. So the ingress sends each batch to a model replica through a ``DeploymentHandle`` and, when that
replica dies under it, sends it again — the handle's router has by then dropped the dead replica and
picks a live one. A client sees its answer; only when no replica answers within ``MODEL_ATTEMPTS`` tries
does it get a 503 with ``Retry-After``, and the app's own ``--timeout`` (504) bounds the whole wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
from prometheus_client import Counter
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

from ..errors import EffnetError
from ..labels import ClassLabel
from ..predict import Prediction, top_k
from ..preprocess import decode_crop
from ..serve.app import create_app
from ..serve.errors import ApiError
from ..serve.launch import ServerOptions, load_model
from ..serve.model import ModelInfo
from ..source import read_checkpoint, resolve_source
from ..weights.preprocessing import Preprocess
from .jobs import connected
from .placement import node_device, size_pool
from .worker import materialize_weights

__all__ = [
    "MODEL_ATTEMPTS",
    "EffnetIngress",
    "EffnetModel",
    "RayServeOptions",
    "RemoteModel",
    "WeightsKeeper",
    "deployment",
    "run",
]

log = logging.getLogger("effnet.distributed.serve")

APP = "effnet"  # the Serve application
INGRESS, MODEL = "effnet", "effnet-model"  # its deployments (actors: ServeReplica:effnet:<name>)
MODEL_ATTEMPTS = 3  # tries of one batch on model replicas before a 503
# A model replica runs one batch at a time (a backend is one model with its own intra-op threads, and not
# every backend may be called from two threads); further batches wait in the handles' routers, which send
# each to the first free replica.
MODEL_ONGOING = 1
# The replica's process died (ActorDiedError), is unreachable for now (ActorUnavailableError), or was
# already gone when picked (ReplicaUnavailableError): the batch did not run to an answer, run it elsewhere.
REPLICA_LOST = (ActorDiedError, ActorUnavailableError, ReplicaUnavailableError)


@dataclass(frozen=True)
class RayServeOptions:
    """The Ray side of ``effnet serve --engine ray``: replicas and the resources of each."""

    replicas: int | tuple[int, int] = 1  # model replicas: N, or (MIN, MAX) to autoscale on ongoing batches
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    ingress_replicas: int = 1  # HTTP + decode replicas (no model); more when decoding is the bottleneck
    cpus_per_ingress: float = 1.0  # reserved by each ingress replica: the cores it decodes on
    address: str | None = None

    def check(self) -> None:
        low, high = self.replicas if isinstance(self.replicas, tuple) else (self.replicas, self.replicas)
        problems = []
        if not 1 <= low <= high:
            problems.append(f"replicas must be N >= 1 or MIN:MAX with 1 <= MIN <= MAX, got {self.replicas}")
        if self.ingress_replicas < 1:
            problems.append(f"ingress replicas must be >= 1, got {self.ingress_replicas}")
        if not self.cpus_per_replica > 0:
            problems.append(f"CPUs per replica must be > 0, got {self.cpus_per_replica}")
        if self.gpus_per_replica < 0:
            problems.append(f"GPUs per replica must be >= 0, got {self.gpus_per_replica}")
        if not self.cpus_per_ingress > 0:
            problems.append(f"CPUs per ingress replica must be > 0, got {self.cpus_per_ingress}")
        if problems:
            raise EffnetError("; ".join(problems))

    @property
    def max_replicas(self) -> int:
        return self.replicas[1] if isinstance(self.replicas, tuple) else self.replicas


class EffnetModel:
    """One model replica: its backend, built once; it runs batches of crops or normalized tensors."""

    def __init__(self, options_json: str, weights: dict[str, Any]) -> None:
        # The bytes come from the weights keeper (a detached actor, alive after the driver exits), and only
        # when this node has no verified copy yet; a restarted replica on a node that had one reads it.
        path = materialize_weights(
            weights["name"], weights["sha256"], weights["size"], weights["shared_path"], lambda: _keeper_bytes(weights)
        )
        options = ServerOptions.from_json(options_json)  # device and backend as asked: resolved here, on the node
        # The replica's share of the cores is its num_cpus, not this machine's core count (the local
        # server's default): a replica with 1 CPU on a 64-core node must not start 64 threads.
        threads = options.threads or max(
            1, math.floor(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
        )
        self.model = load_model(dataclasses.replace(options, weights=str(path), threads=threads))

    def describe(self) -> dict[str, Any]:
        """What the ingress needs to decode, validate and label without the model."""
        clf = self.model.classifier
        return {
            "info": self.model.info,
            "preprocess": clf.preprocess,
            "labels": clf.labels,
            "accepts_tensors": self.model.accepts_tensors,
        }

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return self.model.probabilities(pixels)

    def tensor_probabilities(self, x: np.ndarray) -> np.ndarray:
        return self.model.tensor_probabilities(x)


class RemoteModel:
    """The ingress's model (``effnet.serve.model.ModelEndpoint``): decode and labels here, inference on the
    model replicas, each batch retried on another replica when its replica dies under it."""

    def __init__(
        self,
        handle: Any,
        described: dict[str, Any],
        attempts: int = MODEL_ATTEMPTS,
        on_retry: Callable[[], None] | None = None,
    ) -> None:
        self.handle = handle
        self.on_retry = on_retry
        self.info: ModelInfo = described["info"]
        self.preprocess: Preprocess = described["preprocess"]
        self.labels: tuple[ClassLabel, ...] = tuple(described["labels"])
        self._accepts_tensors: bool = described["accepts_tensors"]
        self.attempts = attempts

    @property
    def accepts_tensors(self) -> bool:
        return self._accepts_tensors

    def crop(self, data: bytes) -> np.ndarray:
        return decode_crop(data, self.preprocess)

    def top_k(self, probs: np.ndarray, k: int) -> list[Prediction]:
        return top_k(probs, self.labels, k)

    async def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return await self._call("probabilities", pixels)

    async def tensor_probabilities(self, x: np.ndarray) -> np.ndarray:
        return await self._call("tensor_probabilities", x)

    async def _call(self, method: str, x: np.ndarray) -> np.ndarray:
        last: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                return await getattr(self.handle, method).remote(x)
            except REPLICA_LOST as e:
                last = e
                if self.on_retry is not None:
                    self.on_retry()
                log.warning(
                    "model replica lost during a batch of %d (try %d of %d): %s",
                    len(x),
                    attempt,
                    self.attempts,
                    type(e).__name__,
                )
                await asyncio.sleep(0.1 * attempt)  # let the router see the replica gone
            except DeploymentUnavailableError as e:
                raise ApiError(503, "no_replica", f"no model replica is available: {e}", {"retry-after": "1"}) from None
        raise ApiError(
            503,
            "no_replica",
            f"no model replica answered in {self.attempts} tries (last: {type(last).__name__}); retry later",
            {"retry-after": "1"},
        )


@serve.ingress()
class EffnetIngress:
    """The HTTP app (built by ``__serve_build_asgi_app__`` once the model replicas describe the model)."""

    def __init__(self, model: Any, options_json: str, max_concurrent_batches: int) -> None:
        self.handle = model
        self.options = ServerOptions.from_json(options_json)
        self.max_concurrent_batches = max_concurrent_batches

    async def __serve_build_asgi_app__(self) -> Any:
        described = await self.handle.describe.remote()
        self.model = RemoteModel(self.handle, described)
        app = create_app(self.model, self.options.config, max_concurrent_batches=self.max_concurrent_batches)
        retried = Counter(
            "effnet_model_retries",
            "Batches sent again to another model replica after theirs died",
            registry=app.state.metrics.registry,
        )
        self.model.on_retry = retried.inc
        return app


KEEPER_NAMESPACE = "effnet"  # where the weights keepers live (a detached actor needs a namespace)


class WeightsKeeper:
    """Holds one weights file's bytes for the replicas of a Serve app, owned by no driver.

    An object the driver ``ray.put`` s is owned by the driver and lost when it exits; Serve restarts a
    replica long after that. A detached actor outlives its creator: a replica that starts on a node with no
    verified copy (a restart, an autoscaled replica, a new node) asks this actor for the bytes. It is
    killed when the app is taken down (``_take_down``).
    """

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data


def keeper_name(sha256: str) -> str:
    return f"effnet-weights-{sha256[:16]}"


def _keeper_bytes(weights: dict[str, Any]) -> bytes:
    try:
        keeper = ray.get_actor(keeper_name(weights["sha256"]), namespace=KEEPER_NAMESPACE)
    except ValueError:
        raise EffnetError(
            f"the weights keeper of {weights['name']} is gone and this node has no verified copy: "
            "deploy the app again (effnet serve --engine ray)"
        ) from None
    data: bytes = ray.get(keeper.read.remote())  # type: ignore[assignment]
    return data


def _start_keeper(data: bytes, sha256: str) -> Any:
    """The app's weights keeper: an existing one for the same file (a redeploy), else a new one."""
    name = keeper_name(sha256)
    try:
        return ray.get_actor(name, namespace=KEEPER_NAMESPACE)
    except ValueError:
        pass
    actor: Any = ray.remote(num_cpus=0)(WeightsKeeper)
    keeper = actor.options(name=name, namespace=KEEPER_NAMESPACE, lifetime="detached", get_if_exists=True).remote(data)
    ray.get(keeper.read.remote())  # constructed (so the driver's copy may go)
    return keeper


def deployment(options: ServerOptions, ray_options: RayServeOptions) -> serve.Application:
    """The bound application (:func:`deploy_parts`)."""
    return deploy_parts(options, ray_options)[0]


def deploy_parts(options: ServerOptions, ray_options: RayServeOptions) -> tuple[serve.Application, str]:
    """(the bound application, the sha256 of its weights, which names its keeper): weights resolved once
    here (the driver) and handed to a detached keeper.

    The device is passed as asked (``auto`` stays ``auto``), made explicit only by the request itself:
    ``--gpus-per-replica`` implies CUDA and ``--device cuda`` one GPU per replica (``placement.node_device``).
    Nothing here looks at this machine's GPUs or packages: each replica resolves its own.
    """
    ray_options.check()
    device, gpus = node_device(options.device, ray_options.gpus_per_replica, "--gpus-per-replica")
    options = dataclasses.replace(options, device=device)
    # Replicas that cannot be placed now would leave the deployment pending forever: say so instead.
    size_pool(
        ray_options.replicas,
        ray.nodes(),
        cpus_per_worker=ray_options.cpus_per_replica,
        gpus_per_worker=gpus,
        decode_cpus=ray_options.cpus_per_ingress * ray_options.ingress_replicas,
        names=("--replicas", "model replicas"),
    )
    source = resolve_source(options.model, options.weights, progress=False)
    if source.checkpoint is None:
        raise EffnetError("--engine ray needs weights: random-init replicas would answer differently")
    data, digest = read_checkpoint(source)  # checked against the digest the source was resolved with
    weights: dict[str, Any] = {
        "name": Path(source.checkpoint).name,
        "sha256": digest,
        "size": len(data),
        "shared_path": str(Path(source.checkpoint).resolve()),
    }
    _start_keeper(data, weights["sha256"])
    scaling: dict[str, Any]
    if isinstance(ray_options.replicas, tuple):
        low, high = ray_options.replicas
        # One batch per replica at a time, so "ongoing" is 1 when busy: scale up when batches queue.
        scaling = {"autoscaling_config": {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": 1}}
    else:
        scaling = {"num_replicas": ray_options.replicas}
    resources: dict[str, Any] = {"num_cpus": ray_options.cpus_per_replica}
    if gpus:
        resources["num_gpus"] = gpus
    model: Any = serve.deployment(
        EffnetModel, name=MODEL, ray_actor_options=resources, max_ongoing_requests=MODEL_ONGOING, **scaling
    )
    ingress: Any = serve.deployment(
        EffnetIngress,
        name=INGRESS,
        num_replicas=ray_options.ingress_replicas,
        # It decodes every request (Pillow, in its decode threads): reserve the cores it decodes on, so the
        # scheduler does not give them to model replicas too.
        ray_actor_options={"num_cpus": ray_options.cpus_per_ingress},
        # Up to the app's own admission limit: it answers 503 beyond max_queue itself.
        max_ongoing_requests=options.config.max_queue,
    )
    # Each ingress keeps every model replica busy: one batch in flight per replica at most (the handles'
    # routers spread them), and one more so a replica's next batch is on its way while it computes.
    in_flight = ray_options.max_replicas * MODEL_ONGOING + 1
    return ingress.bind(model.bind(options.to_json(), weights), options.to_json(), in_flight), weights["sha256"]


def run(options: ServerOptions, ray_options: RayServeOptions) -> None:
    """Deploy and serve until SIGINT/SIGTERM, then take the app down (Ctrl-C while deploying, too)."""
    ray_options.check()
    with connected(ray_options.address, progress=False) as where:
        sha256: str | None = None
        try:
            app, sha256 = deploy_parts(options, ray_options)  # first: a replica that cannot be placed fails here
            serve.start(http_options={"host": options.host, "port": options.port})
            serve.run(app, name=APP, route_prefix="/", blocking=False)
            replicas = ray_options.replicas
            count = f"{replicas[0]}-{replicas[1]}" if isinstance(replicas, tuple) else f"{replicas}"
            print(
                f"effnet serve: {options.model} on Ray Serve ({count} model replicas, "
                f"{ray_options.ingress_replicas} ingress, on {where}) on "
                f"http://{options.host}:{options.port}  [page /, KServe v2 /v2, /v1/classify, /metrics]",
                file=sys.stderr,
                flush=True,
            )
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            while not stop.wait(0.5):
                pass
        finally:
            _take_down(sha256)


def _take_down(sha256: str | None = None) -> None:
    """Delete this app and its weights keeper; stop Ray Serve only if no other app is left on the cluster
    (it may be shared)."""
    with contextlib.suppress(Exception):  # nothing deployed yet, or Serve already gone
        serve.delete(APP)
    if sha256 is not None:
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(keeper_name(sha256), namespace=KEEPER_NAMESPACE))
    with contextlib.suppress(Exception):
        if not serve.status().applications:
            serve.shutdown()
