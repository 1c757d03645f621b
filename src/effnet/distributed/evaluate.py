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

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..evaluate import TOP_K, Dataset, DatasetError, EvalReport, Failure, Progress, Sample
from ..evaluate.report import RAY_WORKERS
from ..evaluate.run import Tally, build_report
from ..evaluate.terms import ImageTerms
from ..files import absolute
from ..source import ModelSource
from .data import TERM_COLUMNS, PipelineOptions, build_pipeline, check_fits, pool_size, ship_weights
from .inputs import read_paths
from .jobs import connected

__all__ = ["EvalJob", "NodeRun", "RayEvalResult", "run_eval"]


@dataclass(frozen=True)
class EvalJob:
    dataset: Dataset
    source: ModelSource  # resolved once by the caller (the CLI), shipped as is
    limit: int | None = None
    address: str | None = None
    options: PipelineOptions = field(default_factory=PipelineOptions)
    shared_inputs: bool = False  # the dataset is on a filesystem every node sees (inputs.read_inputs)
    progress: bool = True
    max_confused: int = 20


NODE_COLUMNS = ("node", "backend", "precision", "device")


@dataclass(frozen=True, order=True)
class NodeRun:
    """What the actors of one node built, as they reported it (a node may hold several kinds)."""

    node: str  # its IP address, as Ray names it
    backend: str
    precision: str
    device: str

    def describe(self) -> str:
        return f"node {self.node}: {self.backend} {self.precision} on {self.device}"


@dataclass(frozen=True)
class RayEvalResult:
    """The report, and what ran where: the device(s) the actors ran on, as they reported them."""

    report: EvalReport
    device: str  # "cpu", "cuda:0", or e.g. "cpu, cuda:0" when actors differed
    nodes: int  # nodes whose actors classified images
    runs: tuple[NodeRun, ...] = ()  # per node: the backend, precision and device its actors built


def as_given(error: str, path: str, sample: Sample) -> str:
    """An actor's error names the absolute path it read; say the path as the dataset gave it, as locally."""
    return str(sample.path) + error[len(path) :] if error.startswith(path) else error


def run_eval(job: EvalJob, progress: Callable[[Progress], None] | None = None) -> RayEvalResult:
    """Evaluate ``job.dataset`` on the cluster; ``progress`` gets running totals as rows arrive.

    Every sample counts: an unreadable image is a failure row in the report (``failed``, and the
    denominator of ``total``), and a sample with no row at all is an error, never a smaller denominator.
    """
    job.options.check()
    dataset = job.dataset
    samples = dataset.samples[: job.limit] if job.limit else dataset.samples
    # Each sample's index by the path its row names. Per image the driver holds this entry, a bit in `seen`,
    # its outcome and its packed terms (Tally): no second string of the path, no Python float.
    index = {absolute(s.path): i for i, s in enumerate(samples)}
    check_fits(job.source)  # weights that do not fit the model: the local error, before Ray starts
    with connected(job.address, progress=job.progress):
        options = job.options.placed()
        pool = pool_size(options)
        shipped = ship_weights(job.source, options)
        labels = shipped.source.labels
        if tuple(c.synset for c in dataset.labels) != tuple(c.synset for c in labels):
            raise DatasetError(
                "the dataset was labelled with a different class list than the model's "
                f"({len(dataset.labels):,} vs {len(labels):,} classes)"
            )
        # Each label rides with its image to the actor, which sends back the image's terms (data.EVAL_COLUMNS):
        # computed there by the function the local Tally uses, from the same probabilities, so the report's
        # calibration and top-k curve are the local engine's numbers.
        inputs = read_paths(list(index), shared=job.shared_inputs, labels=[samples[i].label for i in index.values()])
        tally = Tally(labels, min(TOP_K, len(labels)))
        failures: list[tuple[int, Failure]] = []  # with each image's place: listed in the dataset's order
        seen = np.zeros(len(samples), bool)
        infer = wait = 0.0
        per_node: set[NodeRun] = set()
        start = time.perf_counter()
        batches = build_pipeline(inputs.dataset, shipped, options, pool, eval_rows=True).iter_batches(
            batch_size=None, batch_format="numpy"
        )
        for batch in batches:
            good: list[int] = []
            at = [index[path] for path in batch["path"]]  # each row's sample
            for i, (path, error) in enumerate(zip(batch["path"], batch["error"], strict=True)):
                if seen[at[i]]:
                    raise DatasetError(f"the cluster returned two rows for {path}: the run is not counted")
                seen[at[i]] = True
                if error:
                    sample = samples[at[i]]
                    failure = Failure(str(sample.path), sample.label, as_given(str(error), path, sample))
                    failures.append((at[i], failure))
                else:
                    good.append(i)
                if batch["node"][i]:  # the first row of an actor's call says what it ran and where
                    per_node.add(NodeRun(*(str(batch[c][i]) for c in NODE_COLUMNS)))
            if good:
                terms = ImageTerms(*(batch[c][good] for c in TERM_COLUMNS))
                # positions: the report's sums run in the samples' order, as locally (rows arrive in any order)
                tally.add_terms([samples[at[i]] for i in good], terms, positions=[at[i] for i in good])
            infer += float(batch["infer_seconds"].sum())
            wait += float(batch["wait_seconds"].sum())
            if progress is not None:
                progress(tally.progress(len(failures), len(samples), start))
        seconds = time.perf_counter() - start
    returned = int(seen.sum())
    if returned != len(samples):
        lost = len(samples) - returned
        raise DatasetError(f"the cluster returned rows for {returned:,} of {len(samples):,} images ({lost:,} lost)")
    built = {(r.backend, r.precision, r.device) for r in per_node}
    backends = sorted({b for b, _, _ in built}) or [options.backend]
    precisions = sorted({p for _, p, _ in built}) or [options.precision or "fp32"]
    devices = sorted({d for _, _, d in built}) or [options.device]
    report = build_report(
        shipped.source,
        dataset,
        samples,
        tally,
        [failure for _, failure in sorted(failures, key=lambda pair: pair[0])],
        backend=f"{', '.join(backends)} on Ray",
        precision=", ".join(precisions),
        seconds=seconds,
        # Summed over the actors (they run side by side: with N actors the sums can reach N x seconds).
        inference_seconds=infer,
        decode_wait_seconds=wait,
        batch_size=options.batch_size or 0,
        workers=pool.high if pool.high is not None else pool.initial,
        workers_are=RAY_WORKERS,  # and `seconds` includes their start-up: they start as the rows are pulled
        limit=job.limit,
        max_confused=job.max_confused,
    )
    runs = tuple(sorted(per_node))
    return RayEvalResult(report, ", ".join(devices), len({r.node for r in runs}), runs)
