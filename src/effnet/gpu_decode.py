"""``--decode gpu``: JPEG decoding on the GPU (nvJPEG via torchvision) and the resize and crop there too.

An option, not the default: the pixels are close to Pillow's but not identical (Pillow resamples in
8-bit fixed point, one pass per axis; ``interpolate(mode="bicubic", antialias=True)`` resamples in
float32 with the same cubic kernel, a = -0.5, and the same support), so agreement with the exact
Pillow path is measured (``benchmarks/gpu_check.sh``) before anyone relies on it. The geometry is
Pillow path's (:func:`effnet.preprocess.resized_size`, :func:`effnet.preprocess.crop_offsets`).

Anything nvJPEG is not given falls back to the exact Pillow path, image by image: files that are not
baseline/progressive JPEG, EXIF-rotated images, CMYK and other modes, crops larger than the resized
image, and any image nvJPEG fails on. The decompression-bomb guard reads the header first, as always.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .device import resolve_device
from .errors import EffnetError, ImageError
from .preprocess import MAX_IMAGE_PIXELS, ImageSource, crop_offsets, load_image, resize_crop, resized_size
from .weights.records import Preprocess

__all__ = ["DECODERS", "GpuDecoder", "gpu_resize_crop"]

DECODERS = ("pillow", "gpu")
_EXIF_ORIENTATION = 0x0112


def _torchvision_io() -> Any:
    try:
        import torchvision.io
    except ImportError as e:
        raise EffnetError(
            f"--decode gpu needs torchvision (nvJPEG through torchvision.io.decode_jpeg), which cannot be imported "
            f"here ({e}); install the torchvision build that matches this torch, or use --decode pillow"
        ) from None
    return torchvision.io


def gpu_resize_crop(image: torch.Tensor, p: Preprocess) -> torch.Tensor:
    """uint8 CHW RGB (any device) -> uint8 HWC crop at ``p.input_size``: the geometry of
    :func:`effnet.preprocess.resize_crop`, resampled by ``interpolate(..., antialias=True)``."""
    if p.interpolation not in ("bicubic", "bilinear"):
        raise EffnetError(f"gpu resize does bicubic or bilinear, the record asks for {p.interpolation!r}")
    _, h, w = image.shape
    new_w, new_h = resized_size(w, h, p)
    crop = p.input_size
    if new_w < crop or new_h < crop:
        raise EffnetError(f"crop {crop} is larger than the resized {new_w}x{new_h} image (Pillow path pads)")
    x = image.unsqueeze(0).float()
    if (new_w, new_h) != (w, h):
        x = torch.nn.functional.interpolate(
            x, size=(new_h, new_w), mode=p.interpolation, antialias=True, align_corners=False
        )
    left, top = crop_offsets(new_w, new_h, crop)
    x = x[0, :, top : top + crop, left : left + crop]
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


class GpuDecoder:
    """Image (path or bytes) -> uint8 HWC crop: nvJPEG + resize on ``device``, else the Pillow path.

    Calls return numpy arrays (what the pipeline stacks) unless ``as_tensor``; ``fallbacks`` counts
    the images that took the Pillow path.
    """

    def __init__(self, preprocess: Preprocess, device: str = "cuda") -> None:
        self.device = resolve_device(device)
        if self.device.type != "cuda":
            raise EffnetError(f"--decode gpu needs a CUDA device, got {self.device}")
        self.io = _torchvision_io()
        self.preprocess = preprocess
        self.fallbacks = 0

    def _jpeg_bytes(self, source: ImageSource) -> bytes | None:
        """The file's bytes when nvJPEG can take it as is; None sends it to the Pillow path."""
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                return None  # the Pillow path raises the proper ImageError
            data = path.read_bytes()
        elif isinstance(source, bytes):
            data = source
        else:
            return None
        if not data.startswith(b"\xff\xd8"):
            return None
        try:
            header = Image.open(io.BytesIO(data))  # header only
        except Exception:  # noqa: BLE001 - any problem: the Pillow path reports it properly
            return None
        w, h = header.size
        if header.format != "JPEG" or header.mode not in ("RGB", "L") or not 0 < w * h <= MAX_IMAGE_PIXELS:
            return None
        if header.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            return None
        return data

    def crop_tensor(self, source: ImageSource) -> torch.Tensor:
        """uint8 HWC crop on the device."""
        data = self._jpeg_bytes(source)
        if data is not None:
            try:
                encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                image = self.io.decode_jpeg(encoded, mode=self.io.ImageReadMode.RGB, device=self.device)
                return gpu_resize_crop(image, self.preprocess)
            except (RuntimeError, EffnetError):
                pass  # nvJPEG refused it: the exact path below
        self.fallbacks += 1
        pixels = np.array(resize_crop(load_image(source), self.preprocess))
        return torch.from_numpy(pixels).to(self.device)

    def __call__(self, source: ImageSource, preprocess: Preprocess | None = None) -> np.ndarray:
        """The pipeline's ``decode(image, preprocess)``; ``preprocess`` must be this decoder's own."""
        if preprocess is not None and preprocess != self.preprocess:
            raise EffnetError("this GpuDecoder was made for another preprocessing")
        try:
            return self.crop_tensor(source).cpu().numpy()
        except ImageError:
            raise
        except (OSError, ValueError) as e:
            raise ImageError(f"{source if isinstance(source, (str, os.PathLike)) else '<image>'}: {e}") from None
