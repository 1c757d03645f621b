"""Batch inference with Ray Data: decode tasks over file bytes, then an actor pool of backends.

    file bytes --map_batches (CPU tasks)--> uint8 crops --map_batches (actors, one backend each)--> rows

Decoding is stateless and runs as Ray tasks wherever there are CPUs; inference runs in a fixed pool
(or an autoscaling range) of actors that each build their backend once. The weights file is resolved
and verified once, by the driver, and reaches the actors through the object store (``ray.put``) or a
path they share, never by a download of their own. Actors are restarted when their process dies
(``max_restarts``) and the batch they held is run again (``max_task_retries``): Ray Data re-executes a
map task from its input block, so every input still gives exactly one row.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data

from ..backends import resolve_auto, workload_options
from ..errors import EffnetError
from ..factory import Pretrained
from ..predict import ImageResult
from ..source import ModelSource, resolve_source
from ..weights.records import Preprocess
from .io import BLOCK_ROWS, RESULT_SCHEMA, TASK_ARGS, read_inputs, small_blocks
from .worker import InferenceSpec, decode_rows, result_columns

__all__ = ["DECODE_BATCH", "PipelineOptions", "build_pipeline", "classify", "actor_backend", "default_workers"]

DECODE_BATCH = BLOCK_ROWS  # images per decode call: one block (io.BLOCK_ROWS), so memory stays flat


def actor_backend(backend: str, precision: str | None, cpus_per_worker: float | None) -> tuple[str, dict[str, Any]]:
    """(backend, options) an inference actor builds: ``auto`` resolved here, once, for every actor.

    An actor runs its backend's throughput configuration (:func:`effnet.backends.workload_options`; OpenVINO:
    ``mode="throughput"``, as many streams as the
    plugin finds best for the actor's cores, each call's batch split over them), measured faster here for
    many images than LATENCY's one stream (B5 fp32, batch 8, 2 vCPUs: 1.12x; docs/distributed.md,
    benchmarks/bench_ray_node.py). ``cpus_per_worker``, when given, also caps the inference threads, so
    several actors sharing a node do not oversubscribe it.
    """
    options: dict[str, Any] = {}
    if backend == "auto":
        backend, options = resolve_auto(precision)
    elif precision is not None:
        options["precision"] = precision
    options = workload_options(backend, "throughput", options)  # a Ray job is a bulk job
    if cpus_per_worker is not None:
        options["threads"] = max(1, int(cpus_per_worker))
    return backend, options


def _decode(batch: dict[str, np.ndarray], preprocess: Preprocess) -> dict[str, np.ndarray]:
    return decode_rows(list(batch["path"]), list(batch["bytes"]), list(batch["error"]), preprocess)


class InferenceActor:
    """One backend per actor process, built once from the shipped weights; ``__call__`` runs one batch."""

    def __init__(self, spec: InferenceSpec, weights: list[ray.ObjectRef]) -> None:
        # The ref travels inside a list so Ray does not fetch the bytes unless this node needs them.
        self.classifier = spec.build(lambda: ray.get(weights[0]))
        self.spec = spec

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        errors = batch["error"]
        ok = np.asarray([not e for e in errors], dtype=bool)
        probs = iter(self.classifier.probabilities(batch["crop"][ok]) if ok.any() else [])
        results = [
            ImageResult(str(path), self.classifier.top_k(next(probs), self.spec.top_k))
            if good
            else ImageResult(str(path), error=str(error))
            for path, error, good in zip(batch["path"], errors, ok, strict=True)
        ]
        return pa.Table.from_pydict(result_columns(results), schema=RESULT_SCHEMA)


@dataclass(frozen=True)
class PipelineOptions:
    """How the pipeline runs: see :func:`classify`."""

    backend: str = "auto"
    precision: str | None = None
    top_k: int = 5
    batch_size: int = 8
    workers: int | tuple[int, int] | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 0.0
    decode_cpus: float = 1.0

    def check(self) -> None:
        problems = []
        if self.top_k < 1 or self.batch_size < 1:
            problems.append(f"top_k and batch_size must be >= 1, got {self.top_k} and {self.batch_size}")
        low, high = self.workers if isinstance(self.workers, tuple) else (self.workers or 1, self.workers or 1)
        if not 1 <= low <= high:
            problems.append(f"workers must be N >= 1 or (MIN, MAX) with 1 <= MIN <= MAX, got {self.workers}")
        if (self.cpus_per_worker is not None and self.cpus_per_worker <= 0) or self.gpus_per_worker < 0:
            problems.append("cpus per worker must be > 0 and gpus per worker >= 0")
        if problems:
            raise EffnetError("; ".join(problems))


def default_workers(cpus_per_worker: float | None, decode_cpus: float = 1.0) -> int:
    """One inference actor per alive node (each actor's backend uses its node's cores), leaving the cluster
    the CPUs of one decode task: actors holding every CPU would leave no CPU to decode their input."""
    need = cpus_per_worker or 1.0
    alive = [n for n in ray.nodes() if n.get("Alive")]
    nodes = [n for n in alive if n.get("Resources", {}).get("CPU", 0) >= need]
    spare = (sum(n.get("Resources", {}).get("CPU", 0) for n in alive) - decode_cpus) // need
    return int(max(1, min(len(nodes), spare)))


@dataclass(frozen=True)
class ShippedWeights:
    """The driver's verified weights file, put once into the object store."""

    spec: InferenceSpec
    ref: ray.ObjectRef
    source: ModelSource  # as the driver resolved it: the record's preprocessing and labels

    @property
    def preprocess(self) -> Preprocess:
        return self.source.preprocess


def ship_weights(model: str, weights: Pretrained | None, options: PipelineOptions, *, progress: bool) -> ShippedWeights:
    """Resolve (and, for a record, download and verify) the weights once, in the driver; put the bytes."""
    source = resolve_source(model, weights, progress=progress)
    if source.checkpoint is None:
        raise EffnetError("--engine ray needs weights: random-init models would differ in every actor")
    data = Path(source.checkpoint).read_bytes()
    backend, backend_options = actor_backend(options.backend, options.precision, options.cpus_per_worker)
    spec = InferenceSpec(
        model=source.model,
        weights_name=Path(source.checkpoint).name,
        weights_sha256=hashlib.sha256(data).hexdigest(),
        weights_size=len(data),
        shared_path=str(Path(source.checkpoint).resolve()),
        backend=backend,
        backend_options=backend_options,
        top_k=options.top_k,
    )
    return ShippedWeights(spec, ray.put(data), source)


def build_pipeline(inputs: ray.data.Dataset, shipped: ShippedWeights, options: PipelineOptions) -> ray.data.Dataset:
    """``inputs`` (path, bytes, error) -> result rows (``effnet.distributed.io.RESULT_SCHEMA``)."""
    crops = inputs.map_batches(
        partial(_decode, preprocess=shipped.preprocess),
        batch_size=DECODE_BATCH,
        batch_format="numpy",
        **{**TASK_ARGS, "num_cpus": options.decode_cpus},  # io.TASK_ARGS: why these, and why equal to the reads'
    )
    workers = options.workers or default_workers(options.cpus_per_worker, options.decode_cpus)
    pool = (
        ray.data.ActorPoolStrategy(min_size=workers[0], max_size=workers[1])
        if isinstance(workers, tuple)
        else ray.data.ActorPoolStrategy(size=workers)
    )
    return crops.map_batches(
        InferenceActor,
        fn_constructor_kwargs={"spec": shipped.spec, "weights": [shipped.ref]},
        batch_size=options.batch_size,
        batch_format="numpy",
        compute=pool,
        num_cpus=options.cpus_per_worker or 1.0,
        num_gpus=options.gpus_per_worker or None,
        # Exactly-once output rests on Ray Data's actor-pool defaults, max_restarts=-1 and max_task_retries=-1
        # (ActorPoolMapOperator._apply_default_remote_args; passing them is deprecated in Ray 2.60): a dead
        # actor is recreated and the batch it held runs again. tests/distributed kills an actor to check it.
    )


def classify(
    paths_or_dataset: str | os.PathLike | Sequence[str | os.PathLike] | ray.data.Dataset,
    model: str = "efficientnet-b5",
    weights: Pretrained | None = None,
    *,
    from_list: Sequence[str | os.PathLike] = (),
    backend: str = "auto",
    precision: str | None = None,
    top_k: int = 5,
    batch_size: int = 8,
    workers: int | tuple[int, int] | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float = 0.0,
    progress: bool = True,
) -> ray.data.Dataset:
    """Classify images on the current Ray cluster (``ray.init`` first, or Ray starts a local one).

    ``paths_or_dataset``: image files, folders or URIs pyarrow reads (``s3://``, ``gs://``, ``file://``),
    or a ``ray.data.Dataset`` with ``path`` and ``bytes`` columns (``read_binary_files(..., include_paths=True)``).
    Returns a lazy dataset of one row per image: ``path``, ``class_index``, ``synset``, ``label``,
    ``probability`` (lists, best first; empty on error) and ``error`` (None when classified). Compose it
    with your own Ray pipeline, or write it: ``.write_parquet(...)``.

    ``workers``: inference actors (N, or (MIN, MAX) to autoscale; default one per node);
    ``cpus_per_worker`` / ``gpus_per_worker``: resources each actor reserves (and its inference threads).
    """
    options = PipelineOptions(
        backend=backend,
        precision=precision,
        top_k=top_k,
        batch_size=batch_size,
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
    )
    options.check()
    shipped = ship_weights(model, weights, options, progress=progress)
    if isinstance(paths_or_dataset, ray.data.Dataset):
        inputs = small_blocks(paths_or_dataset)
        if "error" not in inputs.columns():
            inputs = inputs.map_batches(
                lambda b: {"path": b["path"], "bytes": b["bytes"], "error": np.full(len(b["path"]), "", dtype=object)}
            )
    else:
        items = [paths_or_dataset] if isinstance(paths_or_dataset, (str, os.PathLike)) else list(paths_or_dataset)
        inputs = read_inputs(items, from_list)
    return build_pipeline(inputs, shipped, options)
