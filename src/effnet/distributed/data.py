"""Batch inference with Ray Data: decode tasks over file bytes, then an actor pool of backends.

    file bytes --map_batches (CPU tasks)--> uint8 crops --map_batches (actors, one backend each)--> rows

Decoding is stateless and runs as Ray tasks wherever there are CPUs; inference runs in a fixed pool
(or an autoscaling range) of actors that each build their backend once. The model source is resolved
(the weights file downloaded if needed and verified) once, on the driver, by the caller (the CLI, or
:func:`classify`); it reaches the actors as it was resolved, with the file through the object store
(``ray.put``) or a path they share, never by a download or a resolution of their own. Actors are
restarted when their process dies (``max_restarts``) and the batch they held is run again
(``max_task_retries``): Ray Data re-executes a map task from its input block, so every input still gives
exactly one row.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import ray.data

from ..errors import EffnetError
from ..evaluate.report import TOP_K
from ..evaluate.terms import ImageTerms, image_terms
from ..factory import Pretrained
from ..predict import ImageResult
from ..source import ModelSource, read_checkpoint, resolve_source
from ..weights.records import Preprocess
from .decode import decode_batch
from .inputs import BLOCK_ROWS, TASK_ARGS, read_inputs, small_blocks
from .outputs import RESULT_SCHEMA
from .placement import PoolSize, batch_default, node_device, size_pool
from .worker import InferenceSpec, describe_backend, result_columns, streamed_probabilities

__all__ = [
    "DECODE_BATCH",
    "EVAL_COLUMNS",
    "PipelineOptions",
    "build_pipeline",
    "classify",
    "pool_size",
    "pool_strategy",
]

DECODE_BATCH = BLOCK_ROWS  # images per decode call: one block (inputs.BLOCK_ROWS), so memory stays flat

# The rows of ``effnet eval --engine ray`` (``eval_rows``): what the report needs and nothing else.
# - path, error: which image ('' = classified), as the driver listed it.
# - The image's terms (evaluate.terms.ImageTerms, TERM_COLUMNS), computed by the actor from its backend's
#   probabilities and the label that came with the image (the input rows' ``label``), by the function the
#   local eval's Tally uses, so the numbers are the same bit for bit: top (int32 [k]: class indices, best
#   first), confidence, p_true, sum_sq (float64) and rank (int32); zeros on error rows. Bytes a row (Arrow,
#   bench_ray_rows.py, 1,000 classes, 57-character paths): 4,104 with every class's float32 probability
#   (issue 33's first cut; top-k lists with synset and label strings were ~52 KiB), 152 with the terms (61
#   of them the path): 27x fewer object-store bytes for the driver to read, and to hold in its RSS as pages.
# - infer_seconds, wait_seconds: the first row of each call carries the call's seconds in the backend and
#   the seconds the actor had waited for that batch since its previous call ended (or since it was built);
#   the others 0, so column sums are totals.
# - backend, precision, device, node: what the actor built and where, on that first row only ('' elsewhere).
TERM_COLUMNS = tuple(f.name for f in fields(ImageTerms))
EVAL_COLUMNS = (
    "path",
    *TERM_COLUMNS,
    "error",
    "infer_seconds",
    "wait_seconds",
    "backend",
    "precision",
    "device",
    "node",
)


class InferenceActor:
    """One backend per actor process, built once from the shipped weights; ``__call__`` runs one batch."""

    def __init__(self, spec: InferenceSpec, weights: list[ray.ObjectRef], eval_rows: bool = False) -> None:
        # The ref travels inside a list so Ray does not fetch the bytes unless this node needs them.
        self.classifier = spec.build(lambda: ray.get(weights[0]))
        self.spec = spec
        self.eval_rows = eval_rows
        self.built = describe_backend(self.classifier)
        self.node = ray.util.get_node_ip_address()
        self.idle_since = time.perf_counter()

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table | dict[str, np.ndarray]:
        started = time.perf_counter()
        errors = batch["error"]
        ok = np.asarray([not e for e in errors], dtype=bool)
        if self.eval_rows and "label" not in batch:
            raise EffnetError("eval rows need each input's label: read the inputs with read_paths(labels=...)")
        probs = streamed_probabilities(self.classifier, batch["crop"][ok]) if ok.any() else None
        inferred = time.perf_counter()
        if self.eval_rows:
            took, waited = inferred - started, started - self.idle_since
            rows = self._eval_rows(batch["path"], errors, ok, probs, batch["label"], took, waited)
            self.idle_since = time.perf_counter()
            return rows
        good = iter(probs if probs is not None else [])
        results = [
            ImageResult(str(path), self.classifier.top_k(next(good), self.spec.top_k))
            if fine
            else ImageResult(str(path), error=str(error))
            for path, error, fine in zip(batch["path"], errors, ok, strict=True)
        ]
        self.idle_since = time.perf_counter()
        return pa.Table.from_pydict(result_columns(results), schema=RESULT_SCHEMA)

    def _eval_rows(
        self,
        paths: np.ndarray,
        errors: np.ndarray,
        ok: np.ndarray,
        probs: np.ndarray | None,
        labels: np.ndarray,
        infer: float,
        wait: float,
    ) -> dict[str, np.ndarray]:
        """The rows of :data:`EVAL_COLUMNS` for one call: ``probs`` are those of the ``ok`` rows."""
        n = len(paths)
        k = min(TOP_K, len(self.classifier.labels))  # the driver's Tally keeps as many
        terms: dict[str, np.ndarray] = {
            "top": np.zeros((n, k), np.int32),
            "confidence": np.zeros(n, np.float64),
            "p_true": np.zeros(n, np.float64),
            "sum_sq": np.zeros(n, np.float64),
            "rank": np.zeros(n, np.int32),
        }
        if probs is not None:
            computed = image_terms(probs, np.asarray(labels)[ok], k)
            for name in TERM_COLUMNS:
                terms[name][ok] = getattr(computed, name)
        first = np.zeros(n, np.float64)
        infer_col, wait_col = first.copy(), first.copy()
        infer_col[0], wait_col[0] = infer, wait
        said = {key: np.asarray([value] + [""] * (n - 1), dtype=object) for key, value in self.built.items()}
        return {
            "path": paths,
            **terms,
            "error": errors,
            "infer_seconds": infer_col,
            "wait_seconds": wait_col,
            **said,
            "node": np.asarray([self.node] + [""] * (n - 1), dtype=object),
        }


@dataclass(frozen=True)
class PipelineOptions:
    """How the pipeline runs: see :func:`classify`. ``device`` and ``backend`` are the user's request
    (``"auto"`` stays ``"auto"``): each actor resolves them on its node (``placement``)."""

    backend: str = "auto"
    precision: str | None = None
    device: str = "cpu"
    top_k: int = 5
    batch_size: int | None = None  # None: 8 on CPU actors, 64 on GPU actors (placement.batch_default)
    workers: int | tuple[int, int] | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 0.0
    decode_cpus: float = 1.0

    def check(self) -> None:
        problems = []
        if self.top_k < 1 or (self.batch_size is not None and self.batch_size < 1):
            problems.append(f"top_k and batch_size must be >= 1, got {self.top_k} and {self.batch_size}")
        low, high = self.workers if isinstance(self.workers, tuple) else (self.workers or 1, self.workers or 1)
        if not 1 <= low <= high:
            problems.append(f"workers must be N >= 1 or (MIN, MAX) with 1 <= MIN <= MAX, got {self.workers}")
        if (self.cpus_per_worker is not None and self.cpus_per_worker <= 0) or self.gpus_per_worker < 0:
            problems.append("cpus per worker must be > 0 and gpus per worker >= 0")
        if problems:
            raise EffnetError("; ".join(problems))
        node_device(self.device, self.gpus_per_worker)  # cuda:N is refused before anything starts

    def placed(self) -> PipelineOptions:
        """These options with the request made explicit: GPUs imply CUDA (and CUDA a GPU), the batch size
        defaulted from the device kind the actors will have. No hardware of this process is consulted."""
        device, gpus = node_device(self.device, self.gpus_per_worker)
        batch = self.batch_size or batch_default(device, gpus)
        return replace(self, device=device, gpus_per_worker=gpus, batch_size=batch)


def pool_size(options: PipelineOptions) -> PoolSize:
    """The actor pool for ``options`` on the connected cluster, as it is now (``placement.size_pool``)."""
    return size_pool(
        options.workers,
        ray.nodes(),
        cpus_per_worker=options.cpus_per_worker,
        gpus_per_worker=options.gpus_per_worker,
        decode_cpus=options.decode_cpus,
    )


@dataclass(frozen=True)
class ShippedWeights:
    """The driver's verified weights file, put once into the object store."""

    spec: InferenceSpec
    ref: ray.ObjectRef
    source: ModelSource  # as the driver resolved it: the record's preprocessing and labels

    @property
    def preprocess(self) -> Preprocess:
        return self.source.preprocess


def check_fits(source: ModelSource) -> None:
    """Build the model once on the driver, before Ray starts, so that weights which do not fit it fail with
    the local one-line error instead of in every actor's constructor. Building it is the one correct check
    (key conversions, strict load), and cheap next to a Ray run: B5 from a random-init .pth, 1.0 s on the
    2-vCPU dev machine (load ~1.6)."""
    if source.checkpoint is not None:
        source.build_model()


def ship_weights(source: ModelSource, options: PipelineOptions) -> ShippedWeights:
    """Put the bytes of ``source``'s weights file (resolved, and for a record downloaded and verified, once
    by the caller: :func:`effnet.source.resolve_source`) into the object store, with the source itself.

    Nothing is resolved here or in the actors: the backend, device and their options are the actors' to decide.
    """
    options = options.placed()
    if source.checkpoint is None:
        raise EffnetError("--engine ray needs weights: random-init models would differ in every actor")
    data, digest = read_checkpoint(source)  # one read, checked against the digest the source was resolved with
    spec = InferenceSpec(
        source=replace(source, checkpoint=Path(source.checkpoint).resolve()),  # the path a shared filesystem shows
        weights_sha256=digest,
        weights_size=len(data),
        backend=options.backend,
        precision=options.precision,
        device=options.device,
        cpus_per_worker=options.cpus_per_worker,
        batch_size=options.batch_size or batch_default(options.device, options.gpus_per_worker),
        top_k=options.top_k,
    )
    return ShippedWeights(spec, ray.put(data), source)


def pool_strategy(pool: PoolSize) -> ray.data.ActorPoolStrategy:
    """Ray Data's actor pool for ``pool``: a fixed size, or one that grows from ``initial`` to ``high`` while
    blocks wait (classify's and eval's inference actors, the video actors, audit's embedding actors)."""
    if pool.high == pool.low:
        return ray.data.ActorPoolStrategy(size=pool.low)
    return ray.data.ActorPoolStrategy(min_size=pool.low, max_size=pool.high, initial_size=pool.initial)


def build_pipeline(
    inputs: ray.data.Dataset,
    shipped: ShippedWeights,
    options: PipelineOptions,
    pool: PoolSize | None = None,
    *,
    eval_rows: bool = False,
) -> ray.data.Dataset:
    """``inputs`` (path, bytes, error) -> result rows (``effnet.distributed.outputs.RESULT_SCHEMA``), or with
    ``eval_rows`` the rows of :data:`EVAL_COLUMNS`."""
    options = options.placed()
    crops = inputs.map_batches(
        partial(decode_batch, preprocess=shipped.preprocess),
        batch_size=DECODE_BATCH,
        batch_format="numpy",
        **{**TASK_ARGS, "num_cpus": options.decode_cpus},  # inputs.TASK_ARGS: why these, and why equal to the reads'
    )
    pool = pool or pool_size(options)
    strategy = pool_strategy(pool)
    return crops.map_batches(
        InferenceActor,
        fn_constructor_kwargs={"spec": shipped.spec, "weights": [shipped.ref], "eval_rows": eval_rows},
        batch_size=options.batch_size,
        batch_format="numpy",
        compute=strategy,
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
    shared_inputs: bool = False,
    backend: str = "auto",
    precision: str | None = None,
    device: str = "cpu",
    top_k: int = 5,
    batch_size: int | None = None,
    workers: int | tuple[int, int] | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float = 0.0,
    progress: bool = True,
) -> ray.data.Dataset:
    """Classify images on the current Ray cluster (``ray.init`` first, or Ray starts a local one).

    ``paths_or_dataset``: image files, folders or URIs pyarrow reads (``s3://``, ``gs://``, ``file://``),
    or a ``ray.data.Dataset`` with ``path`` and ``bytes`` columns (``read_binary_files(..., include_paths=True)``).
    Local files are read here and shipped through the object store, unless ``shared_inputs`` says every
    node sees them (``effnet.distributed.inputs.read_inputs``).
    Returns a lazy dataset of one row per image: ``path``, ``class_index``, ``synset``, ``label``,
    ``probability`` (lists, best first; empty on error) and ``error`` (None when classified). Compose it
    with your own Ray pipeline, or write it: ``.write_parquet(...)``.

    ``backend`` / ``device``: what each actor builds, resolved on its node (``"auto"`` included);
    ``gpus_per_worker`` > 0 runs the actors on CUDA. ``batch_size``: rows per call (default 8 on CPU
    actors, 64 on GPU actors). ``workers``: inference actors (N, or (MIN, MAX) to autoscale; default: as
    many as fit now, growing with the cluster); ``cpus_per_worker`` / ``gpus_per_worker``: resources each
    actor reserves (CPUs also cap its inference threads).
    """
    options = PipelineOptions(
        backend=backend,
        precision=precision,
        device=device,
        top_k=top_k,
        batch_size=batch_size,
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
    )
    options.check()
    shipped = ship_weights(resolve_source(model, weights, progress=progress), options)  # resolved once, here
    if isinstance(paths_or_dataset, ray.data.Dataset):
        inputs = small_blocks(paths_or_dataset)
        if "error" not in inputs.columns():
            inputs = inputs.map_batches(
                lambda b: {"path": b["path"], "bytes": b["bytes"], "error": np.full(len(b["path"]), "", dtype=object)}
            )
    else:
        items = [paths_or_dataset] if isinstance(paths_or_dataset, (str, os.PathLike)) else list(paths_or_dataset)
        inputs = read_inputs(items, from_list, shared=shared_inputs).dataset
    return build_pipeline(inputs, shipped, options)
