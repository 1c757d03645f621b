"""The evaluation report: accuracy, per-class results, confusions, failures; JSON that tools can read."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EffnetError
from ..fileio import atomic_write
from ..labels import ClassLabel
from ..weights.records import Preprocess, ReferenceMetrics
from .datasets import Layout

__all__ = [
    "REPORT_SCHEMA",
    "TOP_K",
    "Progress",
    "ClassResult",
    "Confusion",
    "Failure",
    "ImageOutcome",
    "EvalReport",
]

REPORT_SCHEMA = "effnet.eval/1"
TOP_K = 5


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
    dataset_size: int = 0  # images in the dataset before --limit
    unmatched_annotations: int = 0
    # --decode gpu: images decoded by nvJPEG and by the Pillow path (gpu_decode.DecodeCounts.to_dict); None: Pillow
    decode: Mapping[str, Any] | None = None
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
            },
            "decode": dict(self.decode) if self.decode is not None else {"decoder": "pillow"},
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
