"""What the ONNX and OpenVINO exports share: tensor names, the source, safe writes, the metadata they carry."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from .._version import __version__
from ..artifact import ARTIFACT_FORMAT
from ..errors import EffnetError
from ..factory import Pretrained
from ..model import EfficientNet
from ..source import ModelSource, resolve_source, weights_label
from ..weights.digest import file_sha256
from ..weights.native import NativeInfo
from .code_version import code_fingerprint

INPUT_NAME = "data"
OUTPUT_NAME = "prob"
LOGITS_NAME = "logits"
# 17 is read by every current runtime (ORT, OpenVINO, TensorRT >= 8.6). 13 is the lowest the
# graph is written for (Softmax over one axis; Max on int64 in the dynamic pads).
DEFAULT_OPSET = 17
MIN_OPSET = 13

ExportKind = Literal["onnx", "openvino", "tflite"]


def resolve(source: ModelSource | str, weights: Pretrained | None, progress: bool) -> ModelSource:
    """A model name (+ weights) or a ready :class:`ModelSource` -> the source to export."""
    if isinstance(source, ModelSource):
        if weights is not None:
            raise EffnetError("pass weights inside the ModelSource, not both")
        return source
    return resolve_source(source, weights, progress=progress)


def load_model(source: ModelSource) -> EfficientNet:
    """The network, built for the record's input size: static SAME pads are frozen at that size."""
    return source.build_model()


def check_batch(batch_size: int | None) -> None:
    if batch_size is not None and batch_size < 1:
        raise EffnetError(f"batch size must be >= 1 (or None for a dynamic batch), got {batch_size}")


def describe(source: ModelSource, *, output: str, artifact: str) -> dict[str, Any]:
    """The one description every artifact carries (``effnet`` key, JSON), read back by :mod:`effnet.artifact`:
    the model and how it is built, the preprocessing, the labels (and their digest), what the output is
    (``prob`` or ``logits``), the weights' sha256 and the code that wrote it."""
    record = source.record
    info = NativeInfo(
        model=source.model,
        preprocess=source.preprocess,
        labels=record.labels if record is not None else "imagenet-1k",
        num_classes=source.num_classes,
        padding=record.padding if record is not None else "same",
        bn_eps=record.bn_eps if record is not None else 1e-3,
        source=weights_label(source),
        weights_sha256=record.weights_sha256 if record is not None else "",
        temperature=record.temperature if record is not None else 1.0,
        embedding_stage=record.embedding_stage if record is not None else None,
    )
    names = [c.label for c in source.labels]
    return {
        **info.to_json(),
        "format": ARTIFACT_FORMAT,
        "artifact": artifact,
        "output": output,
        "labels_sha256": hashlib.sha256(json.dumps(names).encode()).hexdigest(),
        # the checkpoint file's bytes, as `--weights FILE` and the export cache identify it
        "weights_file_sha256": None if source.checkpoint is None else file_sha256(source.checkpoint),
        "code_version": code_fingerprint(),
        "effnet_version": __version__,
    }


def metadata(source: ModelSource, *, output: str = OUTPUT_NAME, artifact: str = "onnx") -> dict[str, str]:
    """What every exported artifact says about itself: model, weights, preprocessing and labels (flat keys for
    other readers), and under ``effnet`` the whole description (:func:`describe`) that effnet reads back."""
    p = source.preprocess
    labels = source.labels
    return {
        "effnet": json.dumps(describe(source, output=output, artifact=artifact), sort_keys=True),
        "output_kind": output,
        "model": source.model,
        "weights": weights_label(source),
        "input": INPUT_NAME,
        "layout": "NCHW",
        "mean": json.dumps(list(p.mean)),
        "std": json.dumps(list(p.std)),
        "input_size": str(p.input_size),
        "resize_size": str(p.resize_size),
        "interpolation": p.interpolation,
        "labels": json.dumps([c.label for c in labels]),
        "synsets": json.dumps([c.synset for c in labels]),
        "effnet_version": __version__,
        "code_version": code_fingerprint(),
    }
