"""ImageNet evaluation: find the labels of a dataset folder (:mod:`.datasets`), run a classifier over it
through the one pipeline (:mod:`.run`), and report accuracy (:mod:`.report`)."""

from .datasets import LAYOUTS, Dataset, DatasetError, Layout, Sample, find_dataset, read_annotations
from .report import (
    REPORT_SCHEMA,
    TOP_K,
    Calibration,
    ClassResult,
    Confusion,
    EvalReport,
    Failure,
    ImageOutcome,
    Progress,
)
from .run import evaluate

__all__ = [
    "Layout",
    "LAYOUTS",
    "DatasetError",
    "Sample",
    "Dataset",
    "find_dataset",
    "read_annotations",
    "Progress",
    "ClassResult",
    "Confusion",
    "Failure",
    "ImageOutcome",
    "EvalReport",
    "evaluate",
    "REPORT_SCHEMA",
    "TOP_K",
    "Calibration",
]
