"""``--decode gpu``: JPEG decoding on the GPU (nvJPEG via torchvision) and the resize and crop there too.

An option, not the default: the pixels are close to Pillow's but not identical (Pillow resamples in
8-bit fixed point, one pass per axis; ``interpolate(mode="bicubic", antialias=True)`` resamples in
float16 on the GPU with the same cubic kernel, a = -0.5, and the same support), so agreement with the
exact Pillow path is measured (``benchmarks/gpu_check.sh``) before anyone relies on it. The geometry is
the Pillow path's (:func:`effnet.preprocess.resized_size`, :func:`effnet.preprocess.crop_offsets`).

How it stays safe next to inference on the same GPU:

- each decoding thread has its own CUDA stream (never the default stream, never the inference stream),
  made under ``torch.cuda.device`` of the decoder's device, so decoding does not queue behind the
  forward pass and the forward pass does not queue behind decoding;
- torchvision's CUDA decoder allocates its output on the caller's current stream and lets nvJPEG write
  it from another stream without waiting for the caller's (pytorch/vision#9606): a block the allocator
  recycles could still be read by queued kernels. So the decoding stream is idle when ``decode_jpeg``
  is called (each crop is finished, by an event, before it leaves the thread), and a crop used on
  another stream is kept from the allocator by ``record_stream`` there (:func:`effnet.pipeline` stacks
  crops that way, the torch backend waits for the stack's event on its own stream);
- crops stay on the GPU: the pipeline stacks them there and the backend takes the device tensor;
- memory is bounded: images over :data:`GPU_DECODE_MAX_PIXELS` take the Pillow path, and the resize
  runs in float16 (2 bytes a value) on the GPU, uint8 on the CPU;
- an image nvJPEG refuses takes the exact Pillow path (which reports a truly broken file as that image's
  error); errors of the device itself (out of memory, illegal address, any "CUDA error") propagate:
  they are not a property of the image and would fail every image after it.

Images nvJPEG is not given (not baseline/progressive JPEG, EXIF-rotated, CMYK and other modes, larger
than the bound) and those it refuses are counted by reason (:meth:`GpuDecoder.counts`), thread-safely;
``effnet classify`` prints the counts in its summary and ``effnet eval`` puts them in its JSON report.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .device import resolve_device
from .errors import EffnetError
from .preprocess import MAX_IMAGE_PIXELS, ImageSource, crop_offsets, load_image, resize_crop, resized_size
from .weights.records import Preprocess

__all__ = ["DECODERS", "GPU_DECODE_MAX_PIXELS", "DecodeCounts", "GpuDecoder", "gpu_resize_crop", "is_device_error"]

DECODERS = ("pillow", "gpu")
_EXIF_ORIENTATION = 0x0112
# Largest image decoded on the GPU: 36 MP (a 7360x4912 camera frame) is 108 MB as uint8 and 216 MB as the
# float16 the resize reads, per decoding thread. Larger images (up to Pillow's own bomb limit) take Pillow.
GPU_DECODE_MAX_PIXELS = 36_000_000
# Messages of errors raised by the device, not by an image (CUDA runtime, cuBLAS, cuDNN, kernel asserts).
_DEVICE_ERROR_MARKS = (
    "CUDA error",
    "CUDA out of memory",
    "illegal memory access",
    "an illegal instruction",
    "device-side assert",
    "CUBLAS_STATUS",
    "CUDNN_STATUS",
    "unspecified launch failure",
)


# nvjpegStatus_t values torchvision reports as "nvjpeg... failed: N": 2 INVALID_PARAMETER, 3 BAD_JPEG,
# 4 JPEG_NOT_SUPPORTED and 9 IMPLEMENTATION_NOT_SUPPORTED are the image's; 1 NOT_INITIALIZED,
# 5 ALLOCATOR_FAILURE, 6 EXECUTION_FAILED, 7 ARCH_MISMATCH and 8 INTERNAL_ERROR are the device's or library's.
_NVJPEG_STATUS = re.compile(r"nvjpeg\w*\s+failed\W*(\d+)", re.IGNORECASE)
_NVJPEG_IMAGE_STATUSES = {2, 3, 4, 9}


def is_device_error(error: BaseException) -> bool:
    """True for an error of the device itself (out of memory, illegal address, a failed launch, an nvJPEG
    status that is not about the image): it must propagate, not become one image's Pillow fallback."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    accelerator_error = getattr(torch, "AcceleratorError", None)  # torch >= 2.8: CUDA runtime errors
    if accelerator_error is not None and isinstance(error, accelerator_error):
        return True
    text = str(error)
    status = _NVJPEG_STATUS.search(text)
    if status is not None:
        return int(status.group(1)) not in _NVJPEG_IMAGE_STATUSES
    return any(mark in text for mark in _DEVICE_ERROR_MARKS)


def _torchvision_io() -> Any:
    try:
        import torchvision.io
    except ImportError as e:
        raise EffnetError(
            f"--decode gpu needs torchvision (nvJPEG through torchvision.io.decode_jpeg), which cannot be imported "
            f"here ({e}); install the torchvision build that matches this torch, or use --decode pillow"
        ) from None
    return torchvision.io


def gpu_resize_crop(image: torch.Tensor, p: Preprocess, work_dtype: torch.dtype | None = None) -> torch.Tensor:
    """uint8 CHW RGB (any device) -> uint8 HWC crop at ``p.input_size``: the geometry of
    :func:`effnet.preprocess.resize_crop`, resampled by ``interpolate(..., antialias=True)``.

    ``work_dtype``: what the resize reads and writes; default float16 on CUDA (half float32's memory;
    CUDA's antialiased resize takes no uint8) and uint8 on the CPU (torch's CPU resize takes uint8 and
    no float16). 0-255 in float16 is exact for integers and within 1/8 above 128, below the final rounding.
    """
    if p.interpolation not in ("bicubic", "bilinear"):
        raise EffnetError(f"gpu resize does bicubic or bilinear, the record asks for {p.interpolation!r}")
    _, h, w = image.shape
    new_w, new_h = resized_size(w, h, p)
    crop = p.input_size
    if new_w < crop or new_h < crop:
        raise EffnetError(f"crop {crop} is larger than the resized {new_w}x{new_h} image (Pillow path pads)")
    work = work_dtype or (torch.float16 if image.is_cuda else torch.uint8)
    x = image.unsqueeze(0)
    if (new_w, new_h) != (w, h):
        x = torch.nn.functional.interpolate(
            x.to(work), size=(new_h, new_w), mode=p.interpolation, antialias=True, align_corners=False
        )
    left, top = crop_offsets(new_w, new_h, crop)
    x = x[0, :, top : top + crop, left : left + crop]
    if x.dtype != torch.uint8:
        x = x.round().clamp_(0, 255).to(torch.uint8)
    return x.permute(1, 2, 0).contiguous()


@dataclass(frozen=True)
class DecodeCounts:
    """How images were decoded: on the GPU, or by the Pillow path (per reason)."""

    gpu: int = 0
    pillow: Mapping[str, int] = field(default_factory=dict)

    @property
    def fallbacks(self) -> int:
        return sum(self.pillow.values())

    def minus(self, earlier: DecodeCounts) -> DecodeCounts:
        """The counts since ``earlier`` (a snapshot of the same decoder)."""
        pillow = Counter(self.pillow)
        pillow.subtract(earlier.pillow)
        return DecodeCounts(self.gpu - earlier.gpu, {k: v for k, v in pillow.items() if v})

    def to_dict(self) -> dict[str, Any]:
        return {
            "decoder": "gpu",
            "gpu_decoded": self.gpu,
            "pillow_fallbacks": self.fallbacks,
            "fallback_reasons": dict(sorted(self.pillow.items())),
        }

    def summary(self) -> str:
        """One line for a CLI summary."""
        total = self.gpu + self.fallbacks
        why = ", ".join(f"{k}: {v}" for k, v in sorted(self.pillow.items()))
        return f"--decode gpu: {self.gpu} of {total} images decoded by nvJPEG, {self.fallbacks} by Pillow" + (
            f" ({why})" if why else ""
        )


class GpuDecoder:
    """Image (path or bytes) -> uint8 HWC crop on ``device``: nvJPEG + resize there, else the Pillow path.

    Thread-safe: the pipeline calls it from its decoding threads, each on a CUDA stream of its own.
    """

    def __init__(self, preprocess: Preprocess, device: str = "cuda") -> None:
        self.device = resolve_device(device)
        if self.device.type != "cuda":
            raise EffnetError(f"--decode gpu needs a CUDA device, got {self.device}")
        self.io = _torchvision_io()
        self.preprocess = preprocess
        self._lock = threading.Lock()
        self._gpu = 0
        self._pillow: Counter[str] = Counter()
        self._local = threading.local()

    def counts(self) -> DecodeCounts:
        """A snapshot of the counts so far."""
        with self._lock:
            return DecodeCounts(self._gpu, dict(self._pillow))

    @property
    def fallbacks(self) -> int:
        return self.counts().fallbacks

    def _count(self, reason: str | None) -> None:
        with self._lock:
            if reason is None:
                self._gpu += 1
            else:
                self._pillow[reason] += 1

    def _stream(self) -> Any:
        """This thread's decoding stream, made under the decoder's device."""
        stream = getattr(self._local, "stream", None)
        if stream is None:
            with torch.cuda.device(self.device):
                stream = self._local.stream = torch.cuda.Stream(self.device)
        return stream

    def _jpeg_bytes(self, source: ImageSource) -> tuple[bytes | None, str | None]:
        """(the file's bytes, None) when nvJPEG can take it as is, else (None, why the Pillow path takes it)."""
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                return None, "not a file"  # the Pillow path raises the proper ImageError
            data = path.read_bytes()
        elif isinstance(source, bytes):
            data = source
        else:
            return None, "not a file or bytes"
        if not data.startswith(b"\xff\xd8"):
            return None, "not JPEG"
        try:
            header = Image.open(io.BytesIO(data))  # header only
        except Exception:  # noqa: BLE001 - any problem: the Pillow path reports it properly
            return None, "unreadable header"
        w, h = header.size
        if header.format != "JPEG":
            return None, "not JPEG"
        if header.mode not in ("RGB", "L"):
            return None, f"mode {header.mode}"
        if not 0 < w * h <= min(MAX_IMAGE_PIXELS, GPU_DECODE_MAX_PIXELS):
            return None, f"over {GPU_DECODE_MAX_PIXELS // 1_000_000} MP"
        if header.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            return None, "EXIF-rotated"
        return data, None

    def crop_tensor(self, source: ImageSource) -> torch.Tensor:
        """uint8 HWC crop on the device, complete (its stream synchronized) when returned."""
        data, reason = self._jpeg_bytes(source)
        stream = self._stream()
        crop: torch.Tensor | None = None
        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            if data is not None:
                stream.synchronize()  # nothing queued here may still read a block nvJPEG is given (#9606)
                try:
                    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                    image = self.io.decode_jpeg(encoded, mode=self.io.ImageReadMode.RGB, device=self.device)
                    crop = gpu_resize_crop(image, self.preprocess)
                except RuntimeError as e:
                    if is_device_error(e):
                        raise
                    reason = "nvJPEG refused"  # a real decode error: the Pillow path says what is wrong
                except EffnetError:
                    reason = "crop larger than image"
            if crop is None:
                # The exact path; a broken file raises ImageError here: that image's error, not a crash.
                pixels = np.array(resize_crop(load_image(source), self.preprocess))
                crop = torch.from_numpy(pixels).to(self.device)
            done = torch.cuda.Event()
            done.record(stream)
            done.synchronize()  # the crop is complete before any other stream or thread sees it
        self._count(reason)
        return crop

    def __call__(self, source: ImageSource, preprocess: Preprocess | None = None) -> torch.Tensor:
        """The pipeline's ``decode(image, preprocess)``; ``preprocess`` must be this decoder's own."""
        if preprocess is not None and preprocess != self.preprocess:
            raise EffnetError("this GpuDecoder was made for another preprocessing")
        return self.crop_tensor(source)
