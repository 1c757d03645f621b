"""LiteRT (TensorFlow Lite) backend: an ``effnet export tflite`` file run by the LiteRT interpreter with XNNPACK.

The exported file takes the crop itself (uint8 NHWC RGB, what the weights record's resize and crop give);
normalization, the layout change and the softmax are inside the graph (:mod:`effnet.export.tflite`). Only
the runtime, ``ai-edge-litert``, is needed to run a file; making one needs the converter (``effnet[litert]``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import EffnetError
from ..export.tflite import PRECISIONS, read_tflite_metadata, tflite_model_path
from ..pipeline import check_crops
from ..preprocess import denormalize
from ..source import ModelSource
from .accuracy import accuracy_status

RUNTIME_EXTRA = "litert-runtime"


class LiteRTBackend:
    """``effnet export tflite`` run by the LiteRT interpreter (XNNPACK, LiteRT's default CPU delegate).

    Options: ``precision`` (``fp32`` default, ``fp16``, ``int8``, ``int8-float-act``: which cached export
    runs, made by ``effnet export tflite --precision ...``), ``threads`` (XNNPACK threads), ``model_path`` (a
    ``.tflite`` made elsewhere: uint8 or float32 NHWC raw-pixel input at the record's size), ``cache_dir``.
    A path whose accuracy is unverified for the model (see :data:`effnet.backends.AUTO_RANKING`) says so in
    one line on stderr.
    """

    name = "litert"

    def __init__(
        self,
        source: ModelSource,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        model_path: str | os.PathLike | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        interpreter = require("ai_edge_litert.interpreter", RUNTIME_EXTRA, "the litert backend")
        if precision not in PRECISIONS:
            raise EffnetError(f"litert backend: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if threads is not None and threads < 1:
            raise EffnetError(f"threads must be >= 1, got {threads}")
        self.preprocess = source.preprocess
        cache = Path(cache_dir) if cache_dir else None
        path = Path(model_path) if model_path is not None else tflite_model_path(source, precision, cache)
        if not path.is_file():
            raise EffnetError(f"litert backend: no .tflite file at {path}")
        self.model_path = path
        self.metadata = read_tflite_metadata(path)
        self.precision = self.metadata.get("precision", precision) if model_path is None else precision
        try:
            # OpResolverType.AUTO applies XNNPACK, LiteRT's default CPU delegate, to every op it supports.
            self.interpreter = interpreter.Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise EffnetError(f"litert backend: cannot load {path}: {e}") from None
        (inp,) = self.interpreter.get_input_details()
        (out,) = self.interpreter.get_output_details()
        size = self.preprocess.input_size
        if list(inp["shape"]) != [1, size, size, 3] or inp["dtype"] not in (np.uint8, np.float32):
            raise EffnetError(
                f"litert backend: {path} takes {inp['dtype'].__name__} {inp['shape'].tolist()}; expected the crop "
                f"as uint8 or float32 [1, {size}, {size}, 3] (NHWC RGB, raw 0-255 pixels)"
            )
        # As every backend: a file made for other classes is an error naming both, never an IndexError later.
        source.check_outputs(int(out["shape"][-1]), path, given=model_path is not None)
        self._source = source  # as_probabilities: a file whose output is logits is soft-maxed
        self._input, self._output, self._dtype = inp["index"], out["index"], inp["dtype"]
        self.threads = threads
        status = accuracy_status(source.model, "litert", self.precision)
        if status != "verified":
            print(f"effnet: litert {self.precision} on {source.model}: accuracy {status}", file=sys.stderr)

    def describe(self) -> dict[str, Any]:
        """What runs, for benchmark reports."""
        return {"precision": self.precision, "threads": self.threads, "model": str(self.model_path)}

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = check_crops(pixels, self.preprocess.input_size, self.name)
        return self._run(pixels)

    def infer_normalized(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW normalized input -> probabilities: back to raw RGB pixels, NHWC (the file's input)."""
        raw = denormalize(np.asarray(x, dtype=np.float32), self.preprocess).transpose(0, 2, 3, 1)
        if self._dtype == np.uint8:
            raw = np.clip(np.rint(raw), 0, 255)
        return self._run(raw)

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        # The exported graph has batch 1 (LiteRT resizes by re-planning every tensor): one invoke per image.
        rows = []
        for image in pixels:
            self.interpreter.set_tensor(self._input, np.ascontiguousarray(image[None], dtype=self._dtype))
            self.interpreter.invoke()
            rows.append(np.array(self.interpreter.get_tensor(self._output), dtype=np.float32).reshape(-1))
        return self._source.as_probabilities(np.stack(rows))
