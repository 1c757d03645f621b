"""Inference backends behind one small protocol.

A backend takes a batch of center-cropped RGB pixels (uint8, NHWC, exactly what
the weights record's resize and crop produce) and returns class probabilities.
Each backend applies the input convention of its own artifact: the PyTorch model
and the ONNX export take normalized RGB, the OpenVINO IR takes raw BGR pixels
with mean/scale folded in. Preprocessing up to the crop is therefore shared by
all of them, and cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ..errors import UnknownNameError
from ..weights.records import Preprocess, WeightsRecord


class Backend(Protocol):
    name: str
    precision: str  # what actually runs ("fp32", "bf16", ...), never a silent default

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] RGB -> float32 [N, num_classes] probabilities."""
        ...


@dataclass(frozen=True)
class ModelSource:
    """What a backend needs to build its artifact."""

    model: str  # effnet model name
    record: WeightsRecord | None  # the weights record, when the weights are a known checkpoint
    checkpoint: Path | None  # the local weights file (None: random init, for tests)
    preprocess: Preprocess


BackendFactory = Callable[..., Backend]
_FACTORIES: dict[str, Callable[[], BackendFactory]] = {}


def register(name: str, loader: Callable[[], BackendFactory]) -> None:
    """Register a backend; ``loader`` imports lazily so optional packages stay optional."""
    _FACTORIES[name] = loader


def available_backends() -> tuple[str, ...]:
    return tuple(_FACTORIES)


def create_backend(name: str, source: ModelSource, **options) -> Backend:
    try:
        loader = _FACTORIES[name]
    except KeyError:
        raise UnknownNameError(f"unknown backend {name!r}; available: {', '.join(_FACTORIES)}") from None
    return loader()(source, **options)


def _torch() -> BackendFactory:
    from .torch_backend import TorchBackend

    return TorchBackend


register("torch", _torch)


def _onnxruntime() -> BackendFactory:
    from .onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend


def _openvino() -> BackendFactory:
    from .openvino_backend import OpenVINOBackend

    return OpenVINOBackend


register("onnxruntime", _onnxruntime)
register("openvino", _openvino)
