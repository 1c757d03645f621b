"""What the ONNX and OpenVINO exports share: tensor names, the source, safe writes, the metadata they carry."""

from __future__ import annotations

import json
from typing import Literal

from .._version import __version__
from ..errors import EffnetError
from ..factory import Pretrained
from ..model import EfficientNet
from ..source import ModelSource, resolve_source, weights_label

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


def metadata(source: ModelSource) -> dict[str, str]:
    """What every exported artifact says about itself: model, weights, preprocessing and labels."""
    p = source.preprocess
    labels = source.labels
    return {
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
    }
