"""Inference backends behind one small protocol.

A backend takes a batch of center-cropped RGB pixels (uint8, NHWC, exactly what
the weights record's resize and crop produce) and returns class probabilities.
Each backend applies the input convention of its own artifact: the PyTorch model
and the ONNX export take normalized RGB, the OpenVINO IR takes raw BGR pixels
with mean/scale folded in. Preprocessing up to the crop is therefore shared by
all of them, and cannot drift.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import EffnetError, UnknownNameError
from ..weights.records import Preprocess, WeightsRecord


class Backend(Protocol):
    name: str
    precision: str  # what actually runs ("fp32", "bf16", ...), never a silent default

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] RGB -> float32 [N, num_classes] probabilities."""
        ...

    def infer_normalized(self, x: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] normalized input (what the PyTorch model takes) -> probabilities.

        The KServe v2 tensor API feeds this; each backend converts to its own input convention.
        """
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


# Fastest measured CPU path per precision (docs/performance.md: B5, batch 1, 2 threads, one interleaved
# run): fp32 openvino 70 ms < onnxruntime 75 < torch compiled 91 < torch fast 111 < torch eager 129;
# bf16 openvino 40 < torch compiled 54 < torch 73; int8 openvino 33 (the only int8 path). Each entry
# falls back to the next when its package is missing; compiled torch paths are left out because their
# first call compiles for 10-30 s. `--backend auto` (the CLI default) picks from here.
FASTEST: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "fp32": (("openvino", {"precision": "fp32"}), ("onnxruntime", {}), ("torch", {"fast": True})),
    "bf16": (("openvino", {"precision": "bf16"}), ("torch", {"precision": "bf16"})),
    "int8": (("openvino", {"precision": "int8"}),),
}


def resolve_auto(precision: str | None = None) -> tuple[str, dict[str, Any]]:
    """(backend, options) of the fastest installed path for ``precision`` (default fp32)."""
    precision = precision or "fp32"
    if precision not in FASTEST:
        raise EffnetError(f"precision must be one of {', '.join(FASTEST)}, got {precision!r}")
    for backend, options in FASTEST[precision]:
        if importlib.util.find_spec(backend) is not None:
            return backend, dict(options)
    raise EffnetError(f"no installed backend runs {precision}: pip install 'effnet[openvino]'")


def create_backend(name: str, source: ModelSource, **options) -> Backend:
    """Build backend ``name`` (or ``"auto"``: the fastest installed one for ``options["precision"]``)."""
    if name == "auto":
        name, chosen = resolve_auto(options.pop("precision", None))
        options = {**chosen, **options}
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
