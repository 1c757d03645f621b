"""PyTorch backend: fp32 eager is the reference every other backend is compared with.

Options select faster paths, each verified against fp32 eager in tests/perf:

- ``fast=True``: batch norm folded into the convs and channels_last weights (:mod:`effnet.optimize`);
- ``compile=True``: ``torch.compile`` (inductor, freezing) on top of ``fast`` (first call compiles);
- ``precision="bf16"``: bfloat16 stem and blocks (fp32 head) on the ``fast`` path, on CPUs with native bf16.

The default (fp32, no options) is the plain eager model, unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import EffnetError
from ..optimize import InferenceConfig, optimize_for_inference
from ..pipeline import check_crops
from ..preprocess import normalize_tensor
from ..source import ModelSource

PRECISIONS = ("fp32", "bf16")


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        source: ModelSource,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        device: str = "cpu",
        fast: bool = False,
        compile: bool = False,
        channels_last: bool | None = None,
        cache_dir: object = None,  # the common backend option; the PyTorch model needs no export cache
    ) -> None:
        if precision not in PRECISIONS:
            raise EffnetError(
                f"the torch backend runs {' or '.join(PRECISIONS)}, got precision {precision!r} "
                "(int8 runs on the openvino backend after `effnet quantize`)"
            )
        if threads is not None:
            if threads < 1:
                raise EffnetError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        self.precision = precision
        self.device = torch.device(device)
        self.preprocess = source.preprocess
        model = source.build_model().to(self.device)
        # bf16 and compile always start from the folded, channels_last model: it is their fast layout.
        fold = fast or compile or precision == "bf16"
        cl = fold if channels_last is None else channels_last
        self.inference_config = InferenceConfig(
            precision=precision,  # type: ignore[arg-type]  # checked against PRECISIONS above
            fold_bn=fold,
            channels_last=cl,
            compile=compile,
        )
        self.model: Any = optimize_for_inference(model, self.inference_config) if fold or cl else model
        self._channels_last = cl

    def describe(self) -> dict[str, Any]:
        """What runs, for benchmark reports."""
        c = self.inference_config
        return {
            "precision": self.precision,
            "bn_folded": c.fold_bn,
            "channels_last": c.channels_last,
            "compiled": c.compile,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "path": c.describe(),
        }

    def normalize(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 NHWC crops -> normalized float NCHW on the device (a bf16 model casts inside)."""
        pixels = check_crops(pixels, self.preprocess.input_size, self.name)
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        return normalize_tensor(x, self.preprocess, channels_last=self._channels_last)

    @torch.inference_mode()
    def logits(self, pixels: np.ndarray) -> torch.Tensor:
        return self.model(self.normalize(pixels))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return torch.softmax(self.logits(pixels).float(), dim=1).cpu().numpy()

    @torch.inference_mode()
    def infer_normalized(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW normalized input (the model's own convention) -> probabilities."""
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        if self._channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        return torch.softmax(self.model(t).float(), dim=1).cpu().numpy()
