"""ONNX Runtime backend: the static ONNX export, fed normalized RGB like the PyTorch model."""

from __future__ import annotations

from pathlib import Path

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
    ``cache_dir`` (where exports are cached; default ``$EFFNET_HOME/exports``).
    """

    name = "onnxruntime"

    def __init__(
        self,
        source: ModelSource,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        ort = require("onnxruntime", INSTALL_EXTRA, "the onnxruntime backend")
        if precision != "fp32":
            raise EffnetError(f"the onnxruntime backend runs fp32 only, got precision {precision!r}")
        if threads is not None and threads < 1:
            raise EffnetError(f"threads must be >= 1, got {threads}")
        self.precision = precision
        self.preprocess = source.preprocess
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
        with exported_artifact("onnx", source, cache_dir=Path(cache_dir) if cache_dir else None) as path:
            self.model_path = path
            # The session reads the whole file now, so a temporary export may go away after this block.
            try:
                self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except self._errors as e:
                raise EffnetError(
                    f"onnxruntime backend: cannot load {path} ({e}); delete {path.parent} to export it again"
                ) from None
            source.check_outputs(self.session.get_outputs()[0].shape[-1], path)
        self._input = self.session.get_inputs()[0].name

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = check_crops(pixels, self.preprocess.input_size, self.name)
        return self.infer_normalized(normalize(pixels, self.preprocess))

    def infer_normalized(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW normalized input (the ONNX graph's own convention) -> probabilities."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        try:
            (probs,) = self.session.run(None, {self._input: x})
        except self._errors as e:  # e.g. InvalidArgument on a shape the graph does not take
            raise EffnetError(f"onnxruntime backend: inference on input {list(x.shape)} failed: {e}") from None
        return np.asarray(probs, dtype=np.float32)
