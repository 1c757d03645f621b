"""The keys of the export cache: what makes one artifact differ from another (weights content, model,
preprocessing, options, versions), and where the cache is."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._optional import require
from ..errors import EffnetError
from ..source import ModelSource
from ..weights.digest import file_sha256
from ._common import ExportKind
from .code_version import code_fingerprint

__all__ = [
    "exports_dir",
    "KEY_SCHEMA",
    "weights_key",
    "cache_key",
    "key_digest",
    "DEFAULT_OPTIONS",
    "int8_cache_key",
    "calibration_record",
]


def exports_dir() -> Path:
    """``$EFFNET_HOME/exports`` (or the platform cache directory's ``exports``)."""
    from ..weights.download import default_cache_dir

    return default_cache_dir() / "exports"


# 1 (no "schema" field): keyed by record name or by path + size + mtime, never by content. 2: by content, with
# effnet's version string (the same in every commit). 3: by content and the code's fingerprint.
KEY_SCHEMA = 3


def weights_key(source: ModelSource) -> dict[str, Any]:
    """What identifies the weights of ``source``: the sha256 of the checkpoint's bytes (from the sha256 index).

    Never the record's name or published digest alone (an effnet-native file's record is ``file:NAME``,
    and every fine-tuning run writes ``RUN/model.safetensors``), never the path or mtime (a checkpoint
    rewritten in place keeps them). A copy of the same file under another name has the same key.
    """
    if source.checkpoint is None:
        raise ValueError("random-init sources have no cache key: their weights differ on every run")
    # checked: a file changed since the source was resolved is refused, not exported under the old name
    return {"sha256": source.checked_sha256(), "size": source.checkpoint.stat().st_size}


def cache_key(kind: ExportKind, source: ModelSource, options: dict[str, Any]) -> dict[str, Any]:
    """Everything that makes an artifact differ: the weights' content, the model and how it is built for
    them (classes, padding, BN eps, key names), the preprocessing folded into it, the export options and
    the versions of the tools that wrote it."""
    record = source.record
    graph: dict[str, Any] = {
        "num_classes": source.num_classes,
        "labels": "imagenet-1k" if record is None else record.labels,
        **{k: v for k, v in source.build_kwargs().items() if k in ("padding", "bn_eps")},
        "embedding_stage": record.embedding_stage if record is not None else None,
        "key_format": record.key_format if record is not None else None,
        # folded into the classifier at load (effnet train's calibration); also in the file's bytes, said here
        "temperature": record.temperature if record is not None else 1.0,
    }
    # The bytes of the code that writes the artifact (effnet.export.code_version), not the version string,
    # which stays "0.1.0" across commits that change an export.
    versions = {"effnet_code": code_fingerprint(), "torch": torch.__version__}
    if kind == "onnx":
        versions["onnx"] = require("onnx", "onnx", "the ONNX export").__version__
    if kind == "openvino":
        versions["openvino"] = require("openvino", "openvino", "the openvino backend").__version__
    return {
        "schema": KEY_SCHEMA,
        "kind": kind,
        "model": source.model,
        "weights": weights_key(source),
        "graph": graph,
        "preprocess": source.preprocess.to_dict(),
        "options": options,
        "versions": versions,
    }


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


# The options a cached export is built with unless the caller says otherwise. Backends feed batches of any
# size: the cached exports have a dynamic batch (the user-facing exports default to the card's static
# batch 1). Filled in before keying, so that `fp16=False` and no fp16 option are one entry, not two.
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "onnx": {"batch_size": None},
    "openvino": {"batch_size": None, "fp16": False},
}


def int8_cache_key(source: ModelSource) -> dict[str, Any]:
    """The key of the INT8 IR of ``source`` (the fp32 IR's key with ``int8`` among the options)."""
    if source.checkpoint is None:
        raise EffnetError(
            "an INT8 model of random-init weights has no cache entry: pass a checkpoint file "
            "(--weights FILE), or an output directory for the quantized IR"
        )
    return cache_key("openvino", source, {**DEFAULT_OPTIONS["openvino"], "int8": True})


def calibration_record(images: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Which images calibrated an int8 artifact: their count and one sha256 over their sorted file digests.

    Recorded in the entry, not keyed on: ``--precision int8`` must find the entry without a calibration set,
    so there is one int8 entry per weights and code, and a re-quantization with other images replaces it.
    """
    digests = sorted(file_sha256(Path(p)) for p in images)
    return {"images": len(digests), "sha256": hashlib.sha256("\n".join(digests).encode()).hexdigest()}
