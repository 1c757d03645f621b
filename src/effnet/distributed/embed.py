"""``effnet audit --engine ray``: the audit's embedding pass on a Ray cluster; everything else stays on the driver.

    driver: hash, cache look-up --(the misses' paths)--> read (inputs.read_paths) --> decode tasks -->
    embedding actors (one network each) --(path, embedding, error rows)--> driver: cache, probe, cleanlab, faiss

The inputs are read as ``classify --engine ray`` reads them (:func:`effnet.distributed.inputs.read_paths`):
local files stream from read tasks pinned to the driver's node with bounded driver memory, or with
``--shared-inputs`` every node reads them itself. The weights reach the actors as in classify: the driver's
verified bytes in the object store, used only after their sha256 matches
(:func:`effnet.distributed.worker.materialize_weights`). Each actor embeds with :func:`effnet.audit.embed.embed_crops`,
the function the local pass runs, on the driver's resolved :class:`~effnet.source.ModelSource`, so the rows
are the local rows (tests/distributed/test_ray_audit.py). The embedding cache stays on the driver: only its
misses are sent, and an audit whose images are all cached never connects to Ray.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import ray
import ray.data

from ..audit.embed import Embedded, embed_crops
from ..errors import EffnetError
from ..files import absolute
from ..source import ModelSource, read_checkpoint
from .data import PipelineOptions, pool_size, pool_strategy
from .decode import decode_batch
from .inputs import BLOCK_ROWS, TASK_ARGS, read_paths
from .jobs import connected
from .worker import materialize_weights

__all__ = ["EmbedSpec", "EmbedActor", "RayEmbedding"]


@dataclass(frozen=True)
class EmbedSpec:
    """What an embedding actor builds its network from (small, picklable): the driver's source, whose
    checkpoint path is replaced by the node's verified copy of the same bytes."""

    source: ModelSource
    weights_name: str
    weights_sha256: str
    weights_size: int
    taps: tuple[int | None, ...]
    device: str  # "cpu", or "cuda" for an actor that reserved a GPU (Ray's CUDA_VISIBLE_DEVICES)
    threads: int | None  # --cpus-per-worker caps the actor's torch threads, as it caps an inference actor's


class EmbedActor:
    """One network per actor process; ``__call__`` embeds a batch of crops (NaN rows where decoding failed)."""

    def __init__(self, spec: EmbedSpec, weights: list[ray.ObjectRef]) -> None:
        import torch

        if spec.threads is not None:
            torch.set_num_threads(spec.threads)
        shared = str(spec.source.checkpoint) if spec.source.checkpoint is not None else None
        # The ref travels inside a list so Ray does not fetch the bytes unless this node needs them.
        path = materialize_weights(
            spec.weights_name, spec.weights_sha256, spec.weights_size, shared, lambda: ray.get(weights[0])
        )
        self.source = replace(spec.source, checkpoint=path, sha256=None)  # verified just now (materialize_weights)
        self.net = self.source.build_model().eval().to(spec.device)
        self.spec = spec
        # The widths as effnet.train.passes.probe_taps counts them (None: the head convolution's).
        channels = self.net.plan.stage_channels
        self.width = sum(self.net.num_features if t is None else channels[t] for t in spec.taps)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors = batch["error"]
        ok = np.asarray([not e for e in errors], dtype=bool)
        rows = np.full((len(errors), self.width), np.nan, dtype=np.float32)
        if ok.any():
            rows[ok] = embed_crops(self.net, batch["crop"][ok], self.source.preprocess, self.spec.taps)
        return {"path": batch["path"], "embedding": rows, "error": errors}


@dataclass(frozen=True)
class RayEmbedding:
    """An :data:`effnet.audit.embed.EmbedEngine` on a Ray cluster (joined or started per call, as
    ``classify --engine ray`` does: :func:`effnet.distributed.jobs.connected`)."""

    address: str | None = None
    shared_inputs: bool = False
    batch_size: int = 32
    workers: int | tuple[int, int] | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 0.0

    def options(self) -> PipelineOptions:
        options = PipelineOptions(
            batch_size=self.batch_size,
            workers=self.workers,
            cpus_per_worker=self.cpus_per_worker,
            gpus_per_worker=self.gpus_per_worker,
        )
        options.check()  # bad numbers fail before Ray starts
        return options.placed()

    def __call__(self, paths: Sequence[Path], source: ModelSource, taps: tuple[int | None, ...]) -> Iterator[Embedded]:
        options = self.options()
        if source.checkpoint is None:
            raise EffnetError("--engine ray needs weights: random-init models would differ in every actor")
        position = {absolute(p): k for k, p in enumerate(paths)}
        seen: set[int] = set()
        started = time.perf_counter()
        with connected(self.address, progress=False) as where:
            pool = pool_size(options)
            data, digest = read_checkpoint(source)  # checked against the digest the source was resolved with
            spec = EmbedSpec(
                source=replace(source, checkpoint=Path(source.checkpoint).resolve()),
                weights_name=Path(source.checkpoint).name,
                weights_sha256=digest,
                weights_size=len(data),
                taps=tuple(taps),
                device="cpu" if options.device == "cpu" else "cuda",
                threads=None if options.cpus_per_worker is None else max(1, int(options.cpus_per_worker)),
            )
            ref = ray.put(data)
            del data
            inputs = read_paths(list(position), shared=self.shared_inputs)
            crops = inputs.dataset.map_batches(
                partial(decode_batch, preprocess=source.preprocess),
                batch_size=BLOCK_ROWS,
                batch_format="numpy",
                **{**TASK_ARGS, "num_cpus": options.decode_cpus},  # inputs.TASK_ARGS: as classify's decode tasks
            )
            rows = crops.map_batches(
                EmbedActor,
                fn_constructor_kwargs={"spec": spec, "weights": [ref]},
                batch_size=options.batch_size,
                batch_format="numpy",
                compute=pool_strategy(pool),
                num_cpus=options.cpus_per_worker or 1.0,
                num_gpus=options.gpus_per_worker or None,
            )  # a dead actor is recreated and its batch run again (Ray Data's actor-pool defaults, as classify's)
            for batch in rows.iter_batches(batch_size=None, batch_format="numpy"):
                good: list[int] = []
                errors: dict[int, str] = {}
                for j, (path, error) in enumerate(zip(batch["path"], batch["error"], strict=True)):
                    k = position[str(path)]
                    if k in seen:
                        raise EffnetError(f"the cluster returned two rows for {path}: the embeddings are not used")
                    seen.add(k)
                    if error:  # the report names the path once
                        errors[k] = str(error).removeprefix(f"{path}: ")
                    else:
                        good.append(j)
                yield Embedded([position[str(batch["path"][j])] for j in good], batch["embedding"][good], errors)
        if len(seen) != len(paths):
            raise EffnetError(f"the cluster returned rows for {len(seen):,} of {len(paths):,} images")
        print(
            f"effnet: {len(paths):,} images embedded on Ray in {time.perf_counter() - started:.1f} s "
            f"({pool.describe()} workers on {where}; {inputs.shipped:,} local inputs read on the driver's node)",
            file=sys.stderr,
            flush=True,
        )
