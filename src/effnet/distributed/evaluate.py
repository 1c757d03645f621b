"""``effnet eval --engine ray``: the accuracy report of ``effnet eval``, with the images classified on Ray.

The driver finds the dataset and its labels (:func:`effnet.evaluate.find_dataset`: a labelled folder),
the cluster reads, decodes and classifies (the pipeline of ``effnet.distributed.data``), and the rows
stream back into the same :class:`~effnet.evaluate.run.Tally` and :func:`~effnet.evaluate.run.build_report`
the local loop fills: one report format, one set of numbers. The split of time between the model and
decoding is not measured on Ray (both happen in other processes): the report gives 0 for both parts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from ..evaluate import TOP_K, Dataset, DatasetError, EvalReport, Failure, Progress
from ..evaluate.run import Tally, build_report
from .data import PipelineOptions, build_pipeline, default_workers, ship_weights
from .io import read_paths
from .jobs import connected

__all__ = ["EvalJob", "run_eval"]


@dataclass(frozen=True)
class EvalJob:
    dataset: Dataset
    model: str = "efficientnet-b5"
    weights: str | None = None
    limit: int | None = None
    address: str | None = None
    options: PipelineOptions = field(default_factory=PipelineOptions)
    progress: bool = True
    max_confused: int = 20


def run_eval(job: EvalJob, progress: Callable[[Progress], None] | None = None) -> EvalReport:
    """Evaluate ``job.dataset`` on the cluster; ``progress`` gets running totals as rows arrive."""
    job.options.check()
    dataset = job.dataset
    samples = dataset.samples[: job.limit] if job.limit else dataset.samples
    by_path = {os.path.abspath(s.path): s for s in samples}
    with connected(job.address, progress=job.progress):
        shipped = ship_weights(job.model, job.weights, job.options, progress=job.progress)
        labels = shipped.source.labels
        if tuple(c.synset for c in dataset.labels) != tuple(c.synset for c in labels):
            raise DatasetError(
                "the dataset was labelled with a different class list than the model's "
                f"({len(dataset.labels):,} vs {len(labels):,} classes)"
            )
        workers = job.options.workers or default_workers(job.options.cpus_per_worker, job.options.decode_cpus)
        # every class's probability comes back (top_k = all, best first), so that the report's calibration
        # and top-k curve are computed as the local engine computes them: ~10 KB per row for 1,000 classes
        options = replace(job.options, workers=workers, top_k=len(labels))
        shipped = replace(shipped, spec=replace(shipped.spec, top_k=len(labels)))  # the actors' k
        tally = Tally(labels, min(TOP_K, len(labels)))
        failures: list[Failure] = []
        start = time.perf_counter()
        for row in build_pipeline(read_paths(list(by_path)), shipped, options).iter_rows():
            sample = by_path[row["path"]]
            if row["error"] is not None:
                failures.append(Failure(str(sample.path), sample.label, str(row["error"])))
            else:
                probs = np.zeros((1, len(labels)), np.float32)
                probs[0, np.asarray(row["class_index"], np.int64)] = row["probability"]
                tally.add([sample], probs)
            if progress is not None:
                progress(tally.progress(len(failures), len(samples), start))
        seconds = time.perf_counter() - start
    pool = workers if isinstance(workers, int) else workers[1]
    return build_report(
        shipped.source,
        dataset,
        samples,
        tally,
        failures,
        backend=f"{shipped.spec.backend} on Ray",
        precision=str(shipped.spec.backend_options.get("precision", job.options.precision or "fp32")),
        seconds=seconds,
        inference_seconds=0.0,
        decode_wait_seconds=0.0,
        batch_size=options.batch_size,
        workers=pool,
        limit=job.limit,
        max_confused=job.max_confused,
    )
