"""The evaluation report: accuracy, per-class results, confusions, failures; JSON that tools can read."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EffnetError
from ..fileio import atomic_write
from ..labels import ClassLabel
from ..weights.records import Preprocess, ReferenceMetrics
from .datasets import Layout

__all__ = [
    "REPORT_SCHEMA",
    "TOP_K",
    "MAX_K",
    "ECE_BINS",
    "ReliabilityBin",
    "Calibration",
    "Progress",
    "ClassResult",
    "Confusion",
    "Failure",
    "ImageOutcome",
    "EvalReport",
    "RAY_WORKERS",
]

REPORT_SCHEMA = "effnet.eval/1"
TOP_K = 5
MAX_K = 10  # top-k accuracy is reported for k = 1..MAX_K
RAY_WORKERS = "inference actors"  # EvalReport.workers_are of a Ray eval
ECE_BINS = 15  # Guo et al. (2017), "On Calibration of Modern Neural Networks": 15 equal-width bins


@dataclass(frozen=True)
class ReliabilityBin:
    """Images whose top-1 probability lies in (lower, upper] (the first bin also takes 0)."""

    lower: float
    upper: float
    count: int
    confidence: float  # mean top-1 probability in the bin (0-1); 0 when empty
    accuracy: float  # share of top-1 hits in the bin (0-1); 0 when empty

    def to_dict(self) -> dict:
        return {
            "lower": self.lower,
            "upper": self.upper,
            "count": self.count,
            "confidence": self.confidence,
            "accuracy": self.accuracy,
        }


@dataclass(frozen=True)
class Calibration:
    """How far the probabilities can be trusted: ECE, NLL and Brier score over the evaluated images.

    - ECE (expected calibration error, Naeini et al. 2015; Guo et al. 2017): over ``ECE_BINS`` equal-width bins
      of top-1 probability, the image-weighted mean of |accuracy - mean confidence| (0-1).
    - NLL: mean of -ln p(true class), p clipped at ``NLL_FLOOR`` (a float32 softmax can round to 0).
    - Brier score (Brier 1950, multi-class form): mean over images of sum_j (p_j - [j = true])^2 (0-2).
    """

    ece: float
    nll: float
    brier: float
    bins: tuple[ReliabilityBin, ...]

    NLL_FLOOR = 1e-12

    @classmethod
    def from_arrays(
        cls, confidence: np.ndarray, correct: np.ndarray, p_true: np.ndarray, sum_sq: np.ndarray, bins: int = ECE_BINS
    ) -> Calibration:
        """From per-image top-1 probability, top-1 hit, probability of the true class and sum of p^2."""
        conf = np.asarray(confidence, np.float64)
        hit = np.asarray(correct, np.float64)
        n = len(conf)
        if n == 0:
            raise EffnetError("calibration needs at least one evaluated image")
        # bin b holds (b/B, (b+1)/B]: ceil(conf * B) - 1, with 0 in the first bin
        index = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
        table, ece = [], 0.0
        for b in range(bins):
            mask = index == b
            count = int(mask.sum())
            c = float(conf[mask].mean()) if count else 0.0
            a = float(hit[mask].mean()) if count else 0.0
            ece += count / n * abs(a - c)
            table.append(ReliabilityBin(b / bins, (b + 1) / bins, count, c, a))
        p = np.asarray(p_true, np.float64)
        nll = float(-np.log(np.clip(p, cls.NLL_FLOOR, None)).mean())
        brier = float((np.asarray(sum_sq, np.float64) - 2 * p + 1).mean())
        return cls(ece=float(ece), nll=nll, brier=brier, bins=tuple(table))

    def to_dict(self) -> dict:
        return {
            "ece": self.ece,
            "ece_bins": len(self.bins),
            "nll": self.nll,
            "brier": self.brier,
            "reliability": [b.to_dict() for b in self.bins],
        }


@dataclass(frozen=True)
class Progress:
    """Running totals, passed to the ``progress`` callback after every batch."""

    done: int  # images processed (evaluated + failed)
    total: int
    evaluated: int
    failed: int
    top1_correct: int
    top5_correct: int
    elapsed_s: float

    @property
    def top1(self) -> float:
        return 100.0 * self.top1_correct / self.evaluated if self.evaluated else 0.0

    @property
    def top5(self) -> float:
        return 100.0 * self.top5_correct / self.evaluated if self.evaluated else 0.0


@dataclass(frozen=True)
class ClassResult:
    index: int
    synset: str
    label: str
    count: int
    top1_correct: int
    top5_correct: int

    @property
    def top1(self) -> float:
        return 100.0 * self.top1_correct / self.count

    @property
    def top5(self) -> float:
        return 100.0 * self.top5_correct / self.count

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "synset": self.synset,
            "label": self.label,
            "count": self.count,
            "top1": self.top1,
            "top5": self.top5,
        }


@dataclass(frozen=True)
class Confusion:
    """``count`` images of class ``true`` whose top-1 prediction was ``predicted``."""

    true: ClassLabel
    predicted: ClassLabel
    count: int

    def to_dict(self) -> dict:
        return {
            "true": {"index": self.true.index, "synset": self.true.synset, "label": self.true.label},
            "predicted": {
                "index": self.predicted.index,
                "synset": self.predicted.synset,
                "label": self.predicted.label,
            },
            "count": self.count,
        }


@dataclass(frozen=True)
class Failure:
    path: str
    label: int
    error: str

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "error": self.error}


@dataclass(frozen=True)
class ImageOutcome:
    """One evaluated image: its label and the top-5 class indices, best first."""

    path: str
    label: int
    top5: tuple[int, ...]

    @property
    def top1_correct(self) -> bool:
        return self.top5[0] == self.label

    @property
    def top5_correct(self) -> bool:
        return self.label in self.top5

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "top5": list(self.top5)}


@dataclass(frozen=True)
class EvalReport:
    """Accuracy of one model + weights + backend + precision on one dataset. Percentages are 0-100."""

    model: str
    weights: str  # record name, checkpoint file, or "random init"
    backend: str
    precision: str
    dataset: str
    layout: Layout
    preprocess: Preprocess
    total: int  # images the run was asked to evaluate (after --limit)
    count: int  # images evaluated (decoded and classified)
    failed: int
    top1_correct: int
    top5_correct: int
    per_class: tuple[ClassResult, ...]
    confused: tuple[Confusion, ...]  # most frequent top-1 mistakes, most frequent first
    failures: tuple[Failure, ...]
    images: tuple[ImageOutcome, ...]
    reference: ReferenceMetrics | None
    seconds: float  # wall time of the loop (model loading excluded)
    inference_seconds: float  # time spent inside the backend
    decode_wait_seconds: float  # time the model waited for decoded images
    batch_size: int
    workers: int
    limit: int | None = None
    # What ``workers`` counts and what ``seconds`` covers: locally decoding threads, the loop only; on Ray
    # ("inference actors") the actors, and ``seconds`` includes their start-up (each builds its backend).
    workers_are: str = "decoding threads"
    dataset_size: int = 0  # images in the dataset before --limit
    unmatched_annotations: int = 0
    # --decode gpu: images decoded by nvJPEG and by the Pillow path (gpu_decode.DecodeCounts.to_dict); None: Pillow
    decode: Mapping[str, Any] | None = None
    calibration: Calibration | None = None  # None when the engine gave top-k rows only
    topk_accuracy: tuple[float, ...] = ()  # percent, k = 1..len (up to MAX_K)
    schema: str = field(default=REPORT_SCHEMA)

    @property
    def top1(self) -> float:
        return 100.0 * self.top1_correct / self.count

    @property
    def top5(self) -> float:
        return 100.0 * self.top5_correct / self.count

    @property
    def images_per_second(self) -> float:
        return (self.count + self.failed) / self.seconds if self.seconds > 0 else float("nan")

    @property
    def delta_top1(self) -> float | None:
        """top-1 minus the record's published top-1 (points); None without a reference."""
        return None if self.reference is None else self.top1 - self.reference.top1

    @property
    def delta_top5(self) -> float | None:
        if self.reference is None or self.reference.top5 is None:
            return None
        return self.top5 - self.reference.top5

    def to_dict(self) -> dict:
        ref = self.reference
        return {
            "schema": self.schema,
            "model": self.model,
            "weights": self.weights,
            "backend": self.backend,
            "precision": self.precision,
            "dataset": {
                "path": self.dataset,
                "layout": self.layout,
                "size": self.dataset_size,
                "limit": self.limit,
                "unmatched_annotations": self.unmatched_annotations,
            },
            "preprocess": self.preprocess.to_dict(),
            "total": self.total,
            "count": self.count,
            "failed": self.failed,
            "top1": self.top1,
            "top5": self.top5,
            "top1_correct": self.top1_correct,
            "top5_correct": self.top5_correct,
            "reference": None
            if ref is None
            else {"top1": ref.top1, "top5": ref.top5, "dataset": ref.dataset, "source": ref.source},
            "delta_top1": self.delta_top1,
            "delta_top5": self.delta_top5,
            "throughput": {
                "images_per_second": self.images_per_second,
                "seconds": self.seconds,
                "inference_seconds": self.inference_seconds,
                "decode_wait_seconds": self.decode_wait_seconds,
                "batch_size": self.batch_size,
                "workers": self.workers,
                "workers_are": self.workers_are,
            },
            "decode": dict(self.decode) if self.decode is not None else {"decoder": "pillow"},
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "topk_accuracy": {str(k): acc for k, acc in enumerate(self.topk_accuracy, start=1)},
            "per_class": [c.to_dict() for c in self.per_class],
            "most_confused": [c.to_dict() for c in self.confused],
            "failures": [f.to_dict() for f in self.failures],
            "images": [i.to_dict() for i in self.images],
        }

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` to ``path`` atomically: the file is either absent, the old one, or complete."""
        path = Path(path)
        folder = path.parent
        if not folder.is_dir():
            raise EffnetError(f"cannot write the report to {path}: folder {folder} does not exist")
        text = json.dumps(self.to_dict(), indent=1) + "\n"
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), "the report to")
        return path
