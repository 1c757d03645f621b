"""Weights: records of published checkpoints, download, conversion and strict loading."""

from .records import (
    DEFAULT_WEIGHTS,
    RECORDS,
    Preprocess,
    ReferenceMetrics,
    WeightsRecord,
    default_record,
    fetch,
    get_record,
    records_for,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "RECORDS",
    "Preprocess",
    "ReferenceMetrics",
    "WeightsRecord",
    "default_record",
    "fetch",
    "get_record",
    "records_for",
]
