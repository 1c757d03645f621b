"""The evaluation loop: run a :class:`~effnet.predict.Classifier` over a dataset through the one pipeline.

Preprocessing is the classifier's (that is, the weights record's): nothing here resizes or normalizes.
Images are decoded ahead of the model by :func:`effnet.pipeline.iter_batches`. An image that cannot be
decoded is recorded as a failure with its error, never dropped: the accuracy is over the images that could
be decoded, and the report says how many could not. This module computes and returns; printing belongs to
the CLI.
"""

from __future__ import annotations

import os
import time
from array import array
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EffnetError
from ..labels import ClassLabel
from ..pipeline import default_workers, iter_batches
from ..source import ModelSource, weights_label
from .datasets import Dataset, DatasetError, Sample, find_dataset
from .report import MAX_K, TOP_K, Calibration, ClassResult, Confusion, EvalReport, Failure, ImageOutcome, Progress
from .terms import ImageTerms, image_terms

if TYPE_CHECKING:  # pragma: no cover
    from ..predict import Classifier

__all__ = ["Tally", "build_report", "evaluate"]


def _path(sample: Sample) -> os.PathLike:
    return sample.path


def _name(sample: Sample) -> str:
    return str(sample.path)


class Tally:
    """Per-class hit counts, top-1 confusions and per-image outcomes, accumulated batch by batch.

    Public so that other engines (``effnet eval --engine ray``) fill the same report from their rows.
    """

    def __init__(self, labels: Sequence[ClassLabel], k: int) -> None:
        self.labels, self.k = labels, k
        self.counts = np.zeros(len(labels), dtype=np.int64)
        self.hits1 = np.zeros(len(labels), dtype=np.int64)
        self.hits5 = np.zeros(len(labels), dtype=np.int64)
        self.confusion: Counter[tuple[int, int]] = Counter()
        self.outcomes: list[ImageOutcome] = []
        # Per image (add, add_terms): top-1 probability, p(true), sum of p^2, rank of the truth (terms.ImageTerms),
        # and where given its place in the dataset's order. Packed arrays, 8 or 4 bytes an image, not Python
        # lists of floats (32 bytes each): a 50,000-image run holds them all until the report.
        self._confidence, self._p_true, self._sum_sq = array("d"), array("d"), array("d")
        self._rank, self._position = array("i"), array("q")
        # One int object per class, shared by every outcome's top-k tuple: an index above 256 is otherwise a
        # 28-byte object of its own, 5 an image (~7 MB at 50,000 images).
        self._class_ints = list(range(len(labels)))

    def add(self, samples: Sequence[Sample], probs: np.ndarray) -> None:
        """Add images by their full probability rows [n, classes]."""
        self.add_terms(samples, image_terms(probs, [s.label for s in samples], self.k))

    def add_terms(self, samples: Sequence[Sample], terms: ImageTerms, positions: Sequence[int] | None = None) -> None:
        """Add images by their terms (:func:`effnet.evaluate.terms.image_terms` of their probability rows).

        ``positions``: each image's index in the dataset's sample order, from an engine whose rows arrive in
        another order (Ray). The calibration's sums then run in the order the local eval adds the images in,
        so that both give the same numbers to the last bit (a float sum depends on its order).
        """
        if len(terms) != len(samples) or (positions is not None and len(positions) != len(samples)):
            given = "no" if positions is None else len(positions)
            raise EffnetError(f"{len(samples)} samples but {len(terms)} rows of terms and {given} positions")
        if len(self._rank) and (positions is not None) != bool(self._position):
            raise EffnetError("a tally takes images with positions or without, not both")
        self._add_top(samples, terms.top.tolist())
        self._confidence.frombytes(np.ascontiguousarray(terms.confidence, np.float64).tobytes())
        self._p_true.frombytes(np.ascontiguousarray(terms.p_true, np.float64).tobytes())
        self._sum_sq.frombytes(np.ascontiguousarray(terms.sum_sq, np.float64).tobytes())
        self._rank.frombytes(np.ascontiguousarray(terms.rank, np.int32).tobytes())
        if positions is not None:
            self._position.frombytes(np.ascontiguousarray(positions, np.int64).tobytes())

    def _terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """confidence, p_true, sum_sq, rank of every image added, in the dataset's order where known."""
        columns = (
            np.frombuffer(self._confidence, np.float64),
            np.frombuffer(self._p_true, np.float64),
            np.frombuffer(self._sum_sq, np.float64),
            np.frombuffer(self._rank, np.int32),
        )
        if len(self._position):
            order = np.argsort(np.frombuffer(self._position, np.int64), kind="stable")
            confidence, p_true, sum_sq, rank = (c[order] for c in columns)
            return confidence, p_true, sum_sq, rank
        return columns

    def ordered_outcomes(self) -> list[ImageOutcome]:
        """The per-image outcomes in the dataset's order where positions were given (else as added)."""
        if not len(self._position):
            return self.outcomes
        return [self.outcomes[i] for i in np.argsort(np.frombuffer(self._position, np.int64), kind="stable")]

    def calibration(self) -> Calibration | None:
        if not self._confidence:
            return None
        confidence, p_true, sum_sq, rank = self._terms()
        return Calibration.from_arrays(confidence, rank == 0, p_true, sum_sq)

    def topk_accuracy(self) -> tuple[float, ...]:
        """Percent of images whose true class is among the top k, k = 1..min(MAX_K, classes)."""
        if not self._rank:
            return ()
        rank = np.frombuffer(self._rank, np.int32)
        return tuple(100.0 * float((rank < k).mean()) for k in range(1, min(MAX_K, len(self.labels)) + 1))

    def _add_top(self, samples: Sequence[Sample], top: Sequence[Sequence[int]]) -> None:
        """Count images by their top-k class indices, best first (what ``predict.top_k`` gives)."""
        for sample, row in zip(samples, top, strict=True):
            row = [self._class_ints[int(j)] for j in row[: self.k]]
            y = sample.label
            self.counts[y] += 1
            self.hits1[y] += row[0] == y
            self.hits5[y] += y in row
            if row[0] != y:
                self.confusion[(y, row[0])] += 1
            self.outcomes.append(ImageOutcome(str(sample.path), y, tuple(row)))

    def per_class(self) -> tuple[ClassResult, ...]:
        labels = self.labels
        return tuple(
            ClassResult(
                i, labels[i].synset, labels[i].label, int(self.counts[i]), int(self.hits1[i]), int(self.hits5[i])
            )
            for i in np.flatnonzero(self.counts).tolist()
        )

    def progress(self, failed: int, total: int, start: float) -> Progress:
        """Running totals for a progress callback: ``failed`` images so far of ``total``, since ``start``."""
        return Progress(
            done=len(self.outcomes) + failed,
            total=total,
            evaluated=len(self.outcomes),
            failed=failed,
            top1_correct=int(self.hits1.sum()),
            top5_correct=int(self.hits5.sum()),
            elapsed_s=time.perf_counter() - start,
        )

    def most_confused(self, n: int) -> tuple[Confusion, ...]:
        ranked = sorted(self.confusion.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return tuple(Confusion(self.labels[t], self.labels[p], count) for (t, p), count in ranked)


def evaluate(
    classifier: Classifier,
    dataset: Dataset | str | os.PathLike,
    *,
    batch_size: int = 16,
    workers: int | None = None,
    limit: int | None = None,
    max_confused: int = 20,
    progress: Callable[[Progress], None] | None = None,
) -> EvalReport:
    """Classify every image of ``dataset`` (a :class:`Dataset` or a folder) and measure top-1 / top-5.

    ``limit`` evaluates the first ``limit`` samples (a class-interleaved subset, see :class:`Dataset`).
    ``workers`` decoding threads (default: ``min(4, cpu count)``) run ahead of the model.
    ``progress`` is called with running totals after every batch. Raises :class:`DatasetError`
    when no image at all could be decoded.
    """
    if batch_size < 1:
        raise EffnetError(f"batch size must be >= 1, got {batch_size}")
    if workers is not None and workers < 1:
        raise EffnetError(f"workers must be >= 1, got {workers}")
    if limit is not None and limit < 1:
        raise EffnetError(f"limit must be >= 1, got {limit}")
    if not isinstance(dataset, Dataset):
        dataset = find_dataset(dataset, labels=classifier.labels)
    labels = classifier.labels
    if tuple(c.synset for c in dataset.labels) != tuple(c.synset for c in labels):
        raise DatasetError(
            "the dataset was labelled with a different class list than the classifier's "
            f"({len(dataset.labels):,} vs {len(labels):,} classes)"
        )
    workers = workers or default_workers()
    samples = dataset.samples[:limit] if limit else dataset.samples
    num_classes = len(labels)
    k = min(TOP_K, num_classes)

    tally = Tally(labels, k)
    failures: list[Failure] = []
    decode_counts = getattr(classifier, "decode_counts", None)
    decoded_before = decode_counts() if callable(decode_counts) else None  # --decode gpu
    inference_s = wait_s = 0.0
    start = time.perf_counter()
    # closing(): on an error or Ctrl-C the decoding threads stop now, not when the generator is collected.
    batches = iter_batches(
        samples,
        classifier.preprocess,
        batch_size=batch_size,
        workers=workers,
        image_of=_path,
        name_of=_name,
        decode=getattr(classifier, "decoder", None),  # --decode gpu; default: the exact Pillow path
    )
    # classifier.iter_probabilities keeps several batches in flight where the backend can (OpenVINO's async
    # queue): the time inside the stream, less the decode wait it passed on, is the inference time.
    stream = classifier.iter_probabilities(batches)
    with closing(batches), closing(stream):
        while True:
            t0 = time.perf_counter()
            waited_before = wait_s
            item = next(stream, None)
            if item is None:
                break
            batch, probs = item
            wait_s += batch.wait_s
            inference_s += time.perf_counter() - t0 - (wait_s - waited_before)
            failures.extend(Failure(d.name, d.item.label, d.error or "") for d in batch.failed)
            good = batch.good
            if good:
                if probs.shape != (len(good), num_classes):
                    raise EffnetError(
                        f"backend {classifier.backend.name!r} returned shape {tuple(probs.shape)}, "
                        f"expected ({len(good)}, {num_classes})"
                    )
                tally.add([d.item for d in good], probs)
            if progress is not None:
                progress(tally.progress(len(failures), len(samples), start))
    seconds = time.perf_counter() - start
    decode = None
    if decoded_before is not None and callable(decode_counts):
        decode = decode_counts().minus(decoded_before).to_dict()  # this run's images only

    return build_report(
        classifier.source,
        dataset,
        samples,
        tally,
        failures,
        backend=classifier.backend.name,
        precision=classifier.backend.precision,
        seconds=seconds,
        inference_seconds=inference_s,
        decode_wait_seconds=wait_s,
        batch_size=batch_size,
        workers=workers,
        limit=limit,
        max_confused=max_confused,
        decode=decode,
    )


def build_report(
    source: ModelSource,
    dataset: Dataset,
    samples: Sequence[Sample],
    tally: Tally,
    failures: Sequence[Failure],
    *,
    backend: str,
    precision: str,
    seconds: float,
    inference_seconds: float,
    decode_wait_seconds: float,
    batch_size: int,
    workers: int,
    limit: int | None,
    max_confused: int = 20,
    decode: Mapping[str, Any] | None = None,
    workers_are: str = "decoding threads",
) -> EvalReport:
    """The :class:`EvalReport` of a finished run; raises :class:`DatasetError` when nothing could be decoded."""
    if not tally.outcomes:
        first = failures[0].error if failures else "no images"
        raise DatasetError(
            f"none of the {len(samples):,} images in {dataset.root} could be decoded; first error: {first}"
        )
    record = source.record
    return EvalReport(
        model=source.model,
        weights=weights_label(source),
        backend=backend,
        precision=precision,
        dataset=str(dataset.root),
        layout=dataset.layout,
        preprocess=source.preprocess,
        total=len(samples),
        count=len(tally.outcomes),
        failed=len(failures),
        top1_correct=int(tally.hits1.sum()),
        top5_correct=int(tally.hits5.sum()),
        per_class=tally.per_class(),
        confused=tally.most_confused(max_confused),
        failures=tuple(failures),
        images=tuple(tally.ordered_outcomes()),
        reference=record.metrics if record else None,
        seconds=seconds,
        inference_seconds=inference_seconds,
        decode_wait_seconds=decode_wait_seconds,
        batch_size=batch_size,
        workers=workers,
        workers_are=workers_are,
        limit=limit,
        dataset_size=len(dataset),
        unmatched_annotations=dataset.unmatched_annotations,
        decode=decode,
        calibration=tally.calibration(),
        topk_accuracy=tally.topk_accuracy(),
    )
