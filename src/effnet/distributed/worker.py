"""What one Ray inference worker does, without Ray: run a batch of crops through a backend, and its rows.

Kept free of ``import ray`` so the same code is timed by ``benchmarks/bench_ray_node.py`` and
unit-tested without a cluster. Ray only moves the batches (``effnet.distributed.data``).

Rows cross the object store as plain columns: the decode tasks (:mod:`effnet.distributed.decode`) emit
``path``, ``crop`` (uint8 HWC, 4x fewer bytes than the float tensor the model takes) and ``error``; the
inference actors emit the output schema of :data:`RESULT_COLUMNS`, built from :meth:`Classifier.top_k`, so
a row is exactly an :class:`effnet.predict.ImageResult`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EffnetError
from ..fileio import atomic_write
from ..predict import Classifier, ImageResult, Prediction
from ..source import ModelSource

__all__ = [
    "RESULT_COLUMNS",
    "InferenceSpec",
    "describe_backend",
    "materialize_weights",
    "node_backend",
    "result_columns",
    "result_from_row",
    "streamed_probabilities",
]

# Output columns, in order: one row per input image. Lists are empty on error rows, error is None otherwise.
RESULT_COLUMNS = ("path", "class_index", "synset", "label", "probability", "error")


def result_columns(results: Sequence[ImageResult]) -> dict[str, list]:
    """:class:`ImageResult` s -> the columns of :data:`RESULT_COLUMNS` (what Parquet stores)."""
    columns: dict[str, list] = {name: [] for name in RESULT_COLUMNS}
    for r in results:
        columns["path"].append(r.path)
        columns["class_index"].append([p.class_index for p in r.predictions])
        columns["synset"].append([p.synset for p in r.predictions])
        columns["label"].append([p.label for p in r.predictions])
        columns["probability"].append([p.probability for p in r.predictions])
        columns["error"].append(r.error)
    return columns


def result_from_row(row: dict[str, Any]) -> ImageResult:
    """One output row -> the :class:`ImageResult` it was made from (its ``to_dict`` is the ``--json`` line)."""
    if row.get("error") is not None:
        return ImageResult(str(row["path"]), error=str(row["error"]))
    predictions = [
        Prediction(int(i), str(s), str(label), float(p))
        for i, s, label, p in zip(row["class_index"], row["synset"], row["label"], row["probability"], strict=True)
    ]
    return ImageResult(str(row["path"]), predictions)


# Rows per job of an actor's call through the backend's stream (streamed_probabilities): small enough that
# the next rows are converted (uint8 HWC -> the backend's layout) while the streams run the last ones.
STREAM_JOB_ROWS = 4


def streamed_probabilities(classifier: Classifier, crops: np.ndarray) -> np.ndarray:
    """One actor call's probabilities through the backend's stream (:func:`effnet.backends.infer_stream`), the
    path the local eval and classify take: OpenVINO runs each image as one request of its asynchronous
    queue, so its streams stay fed while the next rows are converted, instead of idling during the
    conversion and while the slower half of a batch split in two finishes (``OpenVINOBackend._infer``).
    Same numbers: each image is computed alone either way. A backend without a stream of its own (torch,
    ONNX Runtime, a static batch) gets the whole batch in one call, as before.
    """
    from ..backends import infer_stream

    backend = classifier.backend
    own_stream = getattr(backend, "infer_stream", None) is not None
    rows = STREAM_JOB_ROWS if own_stream and getattr(backend, "static_batch", None) is None else len(crops)
    jobs = ((start, crops[start : start + rows]) for start in range(0, len(crops), max(rows, 1)))
    parts = [probs for _, probs in infer_stream(backend, jobs) if len(probs)]
    return np.concatenate(parts) if parts else np.empty((0, len(classifier.labels)), np.float32)


# ------------------------------------------------------------------------------------------- weights


def materialize_weights(
    name: str, sha256: str, size: int, shared_path: str | None, fetch_bytes: Callable[[], bytes]
) -> Path:
    """A local, verified copy of the driver's weights file on this node, fetched at most once per node.

    Every file used is checked against the driver's sha256 first, never by size alone: a node's file at the
    driver's path may be another checkpoint of the same size (an older export, a different node image).
    ``shared_path`` is the driver's own path: used as is when this node holds a file there whose sha256
    matches (a shared filesystem, or the driver's node). Else the node's cache,
    ``$EFFNET_HOME/ray-weights/<sha256>/<name>``, if its file matches; else the bytes come from
    ``fetch_bytes`` (the object store, or the serve app's weights keeper), are checked, and land in that
    cache (a temporary name, then a rename), so later actors and restarted replicas on this node read the
    cache, and the export cache, keyed by the file, stays valid. Nothing is downloaded from the weights'
    origin here.
    """
    from ..weights.download import default_cache_dir, sha256_file

    folder = default_cache_dir() / "ray-weights" / sha256
    target = folder / name
    for candidate in ([Path(shared_path)] if shared_path is not None else []) + [target]:
        if candidate.is_file() and candidate.stat().st_size == size and sha256_file(candidate) == sha256:
            return candidate
    data = fetch_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise EffnetError(f"weights {name} arrived with sha256 {digest[:12]}..., the driver sent {sha256[:12]}...")
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write(target, lambda tmp: tmp.write_bytes(data), "the shipped weights")


def node_backend(
    backend: str, precision: str | None, cpus_per_worker: float | None, device: str = "cpu"
) -> tuple[str, dict[str, Any]]:
    """(backend, options) an inference actor builds, decided in the actor: ``auto`` resolved from this
    node's packages and devices (``device`` is the request, ``auto`` included; see ``placement``).

    An OpenVINO actor runs the THROUGHPUT configuration (``mode="throughput"``: as many streams as the
    plugin finds best for the actor's cores, each call's batch split over them), measured faster here for
    many images than LATENCY's one stream (B5 fp32, batch 8, 2 vCPUs: 1.12x; docs/distributed.md,
    benchmarks/bench_ray_node.py). ``cpus_per_worker``, when given, also caps the inference threads, so
    several actors sharing a node do not oversubscribe it.
    """
    from ..backends import resolve_auto, workload_options

    options: dict[str, Any] = {}
    if backend == "auto":
        backend, options = resolve_auto(precision, device)
    elif precision is not None:
        options["precision"] = precision
    options = workload_options(backend, "throughput", options)  # a Ray job is a bulk job
    if cpus_per_worker is not None:
        options["threads"] = max(1, int(cpus_per_worker))
    return backend, options


def describe_backend(classifier: Classifier) -> dict[str, str]:
    """What an actor built, as a report names it: backend, precision, device (``cuda:0`` is the actor's GPU)."""
    backend = classifier.backend
    return {
        "backend": str(getattr(backend, "name", type(backend).__name__)),
        "precision": str(getattr(backend, "precision", "fp32")),
        "device": str(getattr(backend, "device", "cpu")),
    }


@dataclass(frozen=True)
class InferenceSpec:
    """Everything an inference actor needs to build its classifier once (picklable, small). It carries
    the user's request (``backend`` and ``device`` may be ``"auto"``); the actor decides the rest.

    ``source`` is the model source as the driver resolved it (model, record, preprocessing, labels, output
    kind; its checkpoint is the driver's path): the actor swaps in its node's verified copy of the file and
    never resolves the source again, so every actor answers with the driver's record and labels."""

    source: ModelSource
    weights_sha256: str
    weights_size: int
    backend: str = "auto"
    precision: str | None = None
    device: str = "cpu"  # cpu, cuda or auto (placement.node_device: never cuda:N on Ray)
    cpus_per_worker: float | None = None
    batch_size: int = 8  # rows per call: a CUDA fast path prepares this shape
    top_k: int = 5

    def build(self, fetch_bytes: Callable[[], bytes]) -> Classifier:
        driver = self.source.checkpoint
        if driver is None:  # ship_weights refuses random init: a spec without a file was not made by it
            raise EffnetError("an inference actor needs the driver's weights file; the spec names none")
        path = materialize_weights(driver.name, self.weights_sha256, self.weights_size, str(driver), fetch_bytes)
        backend, options = node_backend(self.backend, self.precision, self.cpus_per_worker, self.device)
        return Classifier(
            # The node's copy was just verified against the driver's digest: no second check through the
            # node's sha256 index (sha256=None), which would also leave entries there.
            replace(self.source, checkpoint=path, sha256=None),
            backend=backend,
            device=self.device,
            batch_hint=self.batch_size,
            **options,
        )
