"""``effnet eval --engine ray``: the accuracy report of ``effnet eval``, with the images classified on Ray.

The driver finds the dataset and its labels (:func:`effnet.evaluate.find_dataset`: a labelled folder),
the cluster reads, decodes and classifies (the pipeline of ``effnet.distributed.data``), and the rows
stream back into the same :class:`~effnet.evaluate.run.Tally` and :func:`~effnet.evaluate.run.build_report`
the local loop fills: one report format, one set of numbers. The time split is measured in the actors:
``inference_seconds`` is the time their backends spent on batches, ``decode_wait_seconds`` the time they
sat idle waiting for decoded input, each summed over the actors (which run side by side). The backend,
precision and device are what the actors built on their nodes, as they reported them in their rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from ..evaluate import TOP_K, Dataset, DatasetError, EvalReport, Failure, Progress
from ..evaluate.run import Tally, build_report
from .data import PipelineOptions, build_pipeline, pool_size, ship_weights
from .inputs import read_paths
from .jobs import connected

__all__ = ["EvalJob", "RayEvalResult", "run_eval"]


@dataclass(frozen=True)
class EvalJob:
    dataset: Dataset
    model: str = "efficientnet-b5"
    weights: str | None = None
    limit: int | None = None
    address: str | None = None
    options: PipelineOptions = field(default_factory=PipelineOptions)
    shared_inputs: bool = False  # the dataset is on a filesystem every node sees (inputs.read_inputs)
    progress: bool = True
    max_confused: int = 20


@dataclass(frozen=True)
class RayEvalResult:
    """The report, and what ran where: the device(s) the actors ran on, as they reported them."""

    report: EvalReport
    device: str  # "cpu", "cuda:0", or e.g. "cpu, cuda:0" when actors differed
    nodes: int  # nodes whose actors classified images


def run_eval(job: EvalJob, progress: Callable[[Progress], None] | None = None) -> RayEvalResult:
    """Evaluate ``job.dataset`` on the cluster; ``progress`` gets running totals as rows arrive.

    Every sample counts: an unreadable image is a failure row in the report (``failed``, and the
    denominator of ``total``), and a sample with no row at all is an error, never a smaller denominator.
    """
    job.options.check()
    dataset = job.dataset
    samples = dataset.samples[: job.limit] if job.limit else dataset.samples
    by_path = {os.path.abspath(s.path): s for s in samples}
    with connected(job.address, progress=job.progress):
        options = job.options.placed()
        pool = pool_size(options)
        shipped = ship_weights(job.model, job.weights, options, progress=job.progress)
        labels = shipped.source.labels
        if tuple(c.synset for c in dataset.labels) != tuple(c.synset for c in labels):
            raise DatasetError(
                "the dataset was labelled with a different class list than the model's "
                f"({len(dataset.labels):,} vs {len(labels):,} classes)"
            )
        # every class's probability comes back (top_k = all, best first), so that the report's calibration
        # and top-k curve are computed as the local engine computes them: ~10 KB per row for 1,000 classes
        options = replace(options, top_k=len(labels))
        shipped = replace(shipped, spec=replace(shipped.spec, top_k=len(labels)))  # the actors' k
        inputs = read_paths(list(by_path), shared=job.shared_inputs)
        tally = Tally(labels, min(TOP_K, len(labels)))
        failures: list[Failure] = []
        seen: set[str] = set()
        infer = wait = 0.0
        built: set[tuple[str, str, str]] = set()
        nodes: set[str] = set()
        start = time.perf_counter()
        rows = build_pipeline(inputs.dataset, shipped, options, pool, timings=True).iter_rows()
        for row in rows:
            path = row["path"]
            if path in seen:
                raise DatasetError(f"the cluster returned two rows for {path}: the run is not counted")
            seen.add(path)
            sample = by_path[path]
            if row["error"] is not None:
                failures.append(Failure(str(sample.path), sample.label, str(row["error"])))
            else:
                probs = np.zeros((1, len(labels)), np.float32)
                probs[0, np.asarray(row["class_index"], np.int64)] = row["probability"]
                tally.add([sample], probs)
                built.add((row["backend"], row["precision"], row["device"]))
                nodes.add(row["node"])
            infer += row["infer_seconds"] or 0.0
            wait += row["wait_seconds"] or 0.0
            if progress is not None:
                progress(tally.progress(len(failures), len(samples), start))
        seconds = time.perf_counter() - start
    if len(seen) != len(samples):
        lost = len(samples) - len(seen)
        raise DatasetError(f"the cluster returned rows for {len(seen):,} of {len(samples):,} images ({lost:,} lost)")
    backends = sorted({b for b, _, _ in built}) or [options.backend]
    precisions = sorted({p for _, p, _ in built}) or [options.precision or "fp32"]
    devices = sorted({d for _, _, d in built}) or [options.device]
    report = build_report(
        shipped.source,
        dataset,
        samples,
        tally,
        failures,
        backend=f"{', '.join(backends)} on Ray",
        precision=", ".join(precisions),
        seconds=seconds,
        # Summed over the actors (they run side by side: with N actors the sums can reach N x seconds).
        inference_seconds=infer,
        decode_wait_seconds=wait,
        batch_size=options.batch_size or 0,
        workers=pool.high if pool.high is not None else pool.initial,
        limit=job.limit,
        max_confused=job.max_confused,
    )
    return RayEvalResult(report, ", ".join(devices), len(nodes))
