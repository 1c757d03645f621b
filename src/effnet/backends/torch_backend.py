"""PyTorch eager backend: the reference every other backend is compared with."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import EffnetError
from ..factory import create_model
from . import ModelSource


class TorchBackend:
    name = "torch"

    def __init__(self, source: ModelSource, *, precision: str = "fp32", threads: int | None = None,
                 device: str = "cpu") -> None:
        if precision != "fp32":
            raise EffnetError(f"the torch backend runs fp32 only for now, got precision {precision!r}")
        if threads is not None:
            torch.set_num_threads(threads)
        self.precision = precision
        self.device = torch.device(device)
        self.model = create_model(source.model, pretrained=source.checkpoint or False).to(self.device)
        p = source.preprocess
        # (x - mean) / std on 0-255 pixels, as the record says; applied on the device.
        self._mean = torch.tensor(p.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(p.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._bgr = p.channel_order == "BGR"

    def normalize(self, pixels: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device).permute(0, 3, 1, 2).float()
        x = (x - self._mean) / self._std
        return x.flip(1) if self._bgr else x

    @torch.inference_mode()
    def logits(self, pixels: np.ndarray) -> torch.Tensor:
        return self.model(self.normalize(pixels))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return torch.softmax(self.logits(pixels), dim=1).float().cpu().numpy()
