"""ONNX Runtime backend: the static ONNX export, fed normalized RGB like the PyTorch model."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import EffnetError
from ..export.cache import exported_artifact
from ..pipeline import check_crops
from ..preprocess import normalize
from ..source import ModelSource

INSTALL_EXTRA = "onnx"


class OnnxRuntimeBackend:
    """``effnet export onnx`` (static size, dynamic batch) in an ONNX Runtime CPU session.

    Options: ``threads`` (intra-op threads; default: ONNX Runtime's choice),
    ``cache_dir`` (where exports are cached; default ``$EFFNET_HOME/exports``), ``model_path`` (an existing
    ONNX file of the same convention, e.g. from ``effnet export onnx``, instead of the cached export).
    """

    name = "onnxruntime"

    def __init__(
        self,
        source: ModelSource,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        model_path: str | os.PathLike | None = None,
    ) -> None:
        ort = require("onnxruntime", INSTALL_EXTRA, "the onnxruntime backend")
        if precision != "fp32":
            raise EffnetError(f"the onnxruntime backend runs fp32 only, got precision {precision!r}")
        if threads is not None and threads < 1:
            raise EffnetError(f"threads must be >= 1, got {threads}")
        self.precision = precision
        self.preprocess = source.preprocess
        self._source = source  # as_probabilities: a file whose output is logits is soft-maxed
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
        state = ort.capi.onnxruntime_pybind11_state
        self._errors: tuple[type[BaseException], ...] = (RuntimeError,) + tuple(
            getattr(state, n)
            for n in ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "RuntimeException")
            if hasattr(state, n)
        )
        artifact: Any = (
            nullcontext(Path(model_path))
            if model_path is not None
            else exported_artifact("onnx", source, cache_dir=Path(cache_dir) if cache_dir else None)
        )
        with artifact as path:
            if not Path(path).is_file():
                raise EffnetError(f"onnxruntime backend: no ONNX model at {path}")
            self.model_path = path
            # The session reads the whole file now, so a temporary export may go away after this block.
            try:
                self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except self._errors as e:
                fix = "" if model_path is not None else f"; delete {Path(path).parent} to export it again"
                raise EffnetError(f"onnxruntime backend: cannot load {path} ({e}){fix}") from None
            source.check_outputs(self.session.get_outputs()[0].shape[-1], path, given=model_path is not None)
        first = self.session.get_inputs()[0]
        self._input = first.name
        size = self.preprocess.input_size
        if len(first.shape) != 4 or any(isinstance(d, int) and d != size for d in first.shape[2:]):
            raise EffnetError(
                f"onnxruntime backend: {self.model_path} takes input {first.shape}; this model's preprocessing "
                f"makes [N, 3, {size}, {size}] crops"
            )
        # `effnet export onnx` writes a static batch of 1 by default (the card's shape): feed such a file
        # batches of its own size.
        self._static_batch = first.shape[0] if isinstance(first.shape[0], int) else None

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = check_crops(pixels, self.preprocess.input_size, self.name)
        return self.infer_normalized(normalize(pixels, self.preprocess))

    def infer_normalized(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW normalized input (the ONNX graph's own convention) -> probabilities."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = self._static_batch
        if step is not None and len(x) != step:
            if len(x) % step:
                raise EffnetError(
                    f"onnxruntime backend: {self.model_path} takes batches of {step}, got {len(x)} images"
                )
            return np.concatenate([self.infer_normalized(x[i : i + step]) for i in range(0, len(x), step)])
        try:
            (probs,) = self.session.run(None, {self._input: x})
        except self._errors as e:  # e.g. InvalidArgument on a shape the graph does not take
            raise EffnetError(f"onnxruntime backend: inference on input {list(x.shape)} failed: {e}") from None
        return self._source.as_probabilities(np.asarray(probs, dtype=np.float32))
