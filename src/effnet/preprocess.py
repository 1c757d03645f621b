"""Image decoding and eval preprocessing, driven by a weights record's :class:`Preprocess`.

Pillow decode -> EXIF orientation -> RGB -> resize the shorter side -> center
crop -> float -> (x - mean) / std -> CHW. The resize and crop reproduce
torchvision's ``Resize(int)`` + ``CenterCrop`` on PIL images (what timm's eval
transform and the Open Model Zoo card use), so the same pixels reach the model.
"""

from __future__ import annotations

import functools
import io
import os
import select
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeAlias

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .files import IMAGE_EXTENSIONS, find_images  # noqa: F401 - re-exported: the one folder walk lives in files.py
from .weights.preprocessing import Preprocess

if TYPE_CHECKING:  # pragma: no cover
    import torch

# What one image may be (one adapter, :func:`open_image`): a path (file, FIFO, character device), encoded
# bytes in any buffer, a binary file object, a PIL image, or decoded pixels as a numpy array.
ImageSource: TypeAlias = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray
ACCEPTED_IMAGES = (
    "a path (str or os.PathLike), encoded image bytes (bytes, bytearray, memoryview), a binary file object "
    "(open(..., 'rb'), io.BytesIO), a PIL.Image.Image, or a numpy uint8 array (H x W x 3 RGB, H x W x 4 RGBA, "
    "or H x W gray)"
)
# A stream (FIFO, /dev/stdin, a file object) is read whole before decoding; above this it is refused
# (a read of /dev/zero must end). 512 MiB holds any image under MAX_IMAGE_PIXELS, even uncompressed.
MAX_STREAM_BYTES = 512 * 1024 * 1024
_CHUNK = 1 << 20

# Pillow's own default bomb threshold (about 89.5 Mpx, 256 MiB at 24 bpp); we enforce it
# ourselves with a clear error instead of Pillow's warning.
MAX_IMAGE_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def is_single_image(obj: object) -> bool:
    """Whether ``obj`` is one image of a kind :func:`open_image` takes (not a collection of images)."""
    if isinstance(obj, np.ndarray):
        return obj.ndim in (2, 3)
    return isinstance(obj, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)) or _is_binary_file(obj)


def _is_binary_file(obj: object) -> bool:
    return callable(getattr(obj, "read", None)) and not isinstance(obj, (str, bytes))


def _name(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{memoryview(source).nbytes} bytes>"
    if isinstance(source, np.ndarray):
        return f"<array {'x'.join(map(str, source.shape))} {source.dtype}>"
    if _is_binary_file(source):
        name = getattr(source, "name", None)
        return name if isinstance(name, str) else f"<{type(source).__name__}>"
    return "<PIL image>"


# How long a FIFO named as an input may take to give its first bytes. open() on a FIFO without a writer
# blocks forever (`mkfifo p; effnet classify p`); a stream that a shell feeds (`<(cmd)`, a writer started
# with the run) starts well within this.
FIFO_WAIT_SECONDS = 60.0


def _read_special(path: Path, name: str, wait: float) -> bytes:
    """A FIFO or character device named as an input: opened without blocking, its first bytes waited for
    at most ``wait`` seconds (an ImageError then, for this input only), then read to its end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not select.select([fd], [], [], wait)[0]:  # readable: data, or its writer came and went (EOF)
            raise ImageError(f"{name}: nothing was written to this FIFO within {wait:g} s (no writer?)")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return _read_stream(f.read, name)
    finally:
        os.close(fd)


def _read_stream(read: Callable[[int], object], name: str) -> bytes:
    """Everything ``read`` (a file object's read) gives until end of file, at most MAX_STREAM_BYTES.

    Read in chunks until EOF: an unbuffered pipe or socket may return fewer bytes than asked before its end.
    """
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = read(min(_CHUNK, MAX_STREAM_BYTES + 1 - total))
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"{name}: read() gave {type(chunk).__name__}, not bytes; open images with mode 'rb'")
        if not chunk:
            return b"".join(chunks)
        chunks.append(bytes(chunk))
        total += len(chunks[-1])
        if total > MAX_STREAM_BYTES:
            raise ImageError(f"{name}: refused, the stream is longer than {MAX_STREAM_BYTES:,} bytes")


def _from_array(arr: np.ndarray, name: str) -> Image.Image:
    """Decoded pixels -> a PIL image; anything but uint8 gray/RGB/RGBA in HWC order is refused with its shape."""
    if arr.dtype != np.uint8:
        raise ImageError(
            f"{name}: arrays must be uint8 pixels (0-255); convert first, e.g. (x * 255).round().astype(np.uint8)"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        hint = " (channels first? use x.transpose(1, 2, 0))" if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) else ""
        raise ImageError(f"{name}: expected an H x W x 3 (RGB), H x W x 4 (RGBA) or H x W array{hint}")
    mode = "L" if arr.ndim == 2 else ("RGB" if arr.shape[2] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(arr), mode=mode)


def open_image(source: ImageSource) -> Image.Image:
    """THE image-input adapter: any accepted kind of ``source`` -> an unloaded (lazy) PIL image.

    Paths name regular files, or FIFOs and character devices (``/dev/stdin``, ``<(cmd)``), which are read
    as streams (a FIFO that gives nothing within ``FIFO_WAIT_SECONDS`` is an error, not a hang); a file
    object is read from its current position (an ``io.BytesIO`` whole). Raises
    :class:`ImageError` for a missing, empty or undecodable image and :class:`TypeError`, listing what is
    accepted, for anything else.
    """
    name = _name(source)
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, name)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file") from None
        except OSError as e:
            raise ImageError(f"{name}: cannot read: {e.strerror or e}") from None
        if stat.S_ISDIR(mode):
            raise ImageError(f"{name}: is a folder, not an image file")
        if stat.S_ISREG(mode):
            if path.stat().st_size == 0:
                raise ImageError(f"{name}: empty file (0 bytes)")
            fp: object = path
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            data = _read_special(path, name, FIFO_WAIT_SECONDS)
            if not data:
                raise ImageError(f"{name}: empty stream (0 bytes)")
            fp = io.BytesIO(data)
        else:
            raise ImageError(f"{name}: not a regular file")
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = memoryview(source).tobytes()  # any buffer layout, as its raw bytes
        if not data:
            raise ImageError("empty image data (0 bytes)")
        fp = io.BytesIO(data)
    elif isinstance(source, io.TextIOBase):
        raise TypeError(f"{name}: the file object is open in text mode; open images with mode 'rb'")
    elif _is_binary_file(source):
        data = source.getvalue() if isinstance(source, io.BytesIO) else _read_stream(source.read, name)
        if not data:
            raise ImageError(f"{name}: empty image data (0 bytes)")
        fp = io.BytesIO(data)
    else:
        raise TypeError(f"cannot read an image from {type(source).__name__}; accepted: {ACCEPTED_IMAGES}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp)  # type: ignore[arg-type]  # a Path or a BytesIO here
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: refused, too many pixels ({e})") from None
    except Exception as e:  # noqa: BLE001 - untrusted bytes: Pillow's plugins raise OSError, but also
        # ValueError ("Truncated IHDR chunk"), struct.error, EOFError, IndexError... (found by fuzzing:
        # tests/serve/test_serve_fuzz.py); whatever they raise, these bytes are not an image we can open.
        raise ImageError(f"{name}: cannot open image: {type(e).__name__}: {e}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB.

    Integer images wider than 8 bits (16-bit PNG: ``I;16*``, ``I``) are scaled
    from their 16-bit range instead of clipped, which is what ``convert("RGB")``
    would do. Transparent pixels are composited onto white, because their color
    values are arbitrary (often black) and a viewer shows them as background.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(image, dtype=np.float64)
        arr = np.clip(arr / 257.0, 0, 255).round().astype(np.uint8)  # 65535 -> 255
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(arr * scale, 0, 255).round().astype(np.uint8), mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")
    return image


def load_image(
    source: ImageSource, max_pixels: int = MAX_IMAGE_PIXELS, *, reduce_for: Preprocess | None = None
) -> Image.Image:
    """Decode ``source`` (any :data:`ImageSource`, :func:`open_image`) into an RGB image with EXIF orientation applied.

    ``reduce_for=p`` lets a JPEG decode reduced (Pillow's ``draft``: libjpeg's DCT scaling by 1/2, 1/4 or
    1/8) to the smallest such size that is still at least twice ``p``'s resize target in each dimension;
    other formats, and JPEGs smaller than that, decode whole (:func:`decode_crop_reduced`).
    Raises :class:`ImageError` for files that are missing, empty, not images, truncated, or larger than
    ``max_pixels`` (checked from the header, before decoding).
    """
    name = _name(source)
    image = open_image(source)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} = {width * height:,} pixels is above the limit of {max_pixels:,} "
            "(decompression-bomb guard)"
        )
    if width == 0 or height == 0:
        raise ImageError(f"{name}: image has no pixels ({width}x{height})")
    try:
        if reduce_for is not None and image.format == "JPEG":
            # Stored orientation: the short side, which sets the resize, is the same after EXIF rotation.
            rw, rh = resized_size(width, height, reduce_for)
            image.draft(None, (2 * rw, 2 * rh))  # a no-op unless the stored size is at least twice that
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: refused, too many pixels ({e})") from None
    except Exception as e:  # noqa: BLE001 - truncated data, broken chunks, bad EXIF, and whatever else a
        # decoder raises on hostile bytes (see above): a bad image, never a crash of the caller
        raise ImageError(f"{name}: cannot decode image: {type(e).__name__}: {e}") from None


def resize_crop(image: Image.Image, p: Preprocess) -> Image.Image:
    """Resize the shorter side to ``p.resize_size``, then center crop ``p.input_size`` square.

    Same arithmetic as torchvision ``Resize(int)`` (long side ``int(size * long / short)``)
    and ``CenterCrop`` (offsets ``int(round((dim - crop) / 2))``).
    """
    w, h = image.size
    size = resized_size(w, h, p)
    if size != (w, h):
        image = image.resize(size, _RESAMPLE[p.interpolation])
    w, h = image.size
    crop = p.input_size
    if w < crop or h < crop:  # only when input_size > resize_size; pad like torchvision
        padded = Image.new("RGB", (max(w, crop), max(h, crop)))
        padded.paste(image, ((max(w, crop) - w) // 2, (max(h, crop) - h) // 2))
        image, (w, h) = padded, padded.size
    left, top = crop_offsets(w, h, crop)
    return image.crop((left, top, left + crop, top + crop))


def decode_crop(image: ImageSource, p: Preprocess) -> np.ndarray:
    """Decode, resize and center-crop one image: a writable uint8 HWC RGB array at ``p.input_size``.

    The one decode step of every path (:mod:`effnet.pipeline`, the server, ``record.transforms()``).
    """
    return np.array(resize_crop(load_image(image), p))  # np.array copies: writable, torch.from_numpy-safe


def decode_crop_reduced(image: ImageSource, p: Preprocess) -> np.ndarray:
    """:func:`decode_crop` for big JPEGs (camera photos): decoded reduced by DCT scaling to no less than twice
    the resize target in each dimension, then resized and cropped as usual (``--decode reduced``).

    Twice the target keeps the bicubic resize a real downscale of a detailed image, so the crop stays close
    to the exact one (top-1 agreement measured in docs/video.md). An ImageNet-size photo is below twice
    the target, so it decodes whole and its crop is :func:`decode_crop`'s, bit for bit.
    """
    return np.array(resize_crop(load_image(image, reduce_for=p), p))


def resized_size(width: int, height: int, p: Preprocess) -> tuple[int, int]:
    """(width, height) after :func:`resize_crop`'s resize: shorter side ``p.resize_size``, as torchvision."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = p.resize_size, int(p.resize_size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def crop_box(width: int, height: int, p: Preprocess) -> tuple[float, float, float, float]:
    """(left, top, width, height) of the model's input crop in the original image's pixels (after EXIF
    rotation): where a picture of the crop (an attribution map) lies on the photo."""
    rw, rh = resized_size(width, height, p)
    crop = p.input_size
    left, top = crop_offsets(max(rw, crop), max(rh, crop), crop)
    left -= (max(rw, crop) - rw) // 2  # the padding of resize_crop when input_size > resize_size
    top -= (max(rh, crop) - rh) // 2
    sx, sy = width / rw, height / rh
    return (left * sx, top * sy, crop * sx, crop * sy)


def crop_offsets(width: int, height: int, crop: int) -> tuple[int, int]:
    """(left, top) of the centered ``crop`` square, as torchvision ``CenterCrop``."""
    return int(round((width - crop) / 2.0)), int(round((height - crop) / 2.0))


def normalize(pixels: np.ndarray, p: Preprocess) -> np.ndarray:
    """HWC (or NHWC batch) uint8 RGB -> CHW (NCHW) float32 ``(x - mean) / std`` in ``p.channel_order``.

    The one normalization of effnet (numpy); :func:`normalize_tensor` is the same arithmetic in torch
    for backends that normalize on their device. ``mean``/``std`` are given in RGB order.
    """
    x = pixels.astype(np.float32)
    x -= np.asarray(p.mean, dtype=np.float32)
    x /= np.asarray(p.std, dtype=np.float32)
    if p.channel_order == "BGR":
        x = x[..., ::-1]
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def normalize_tensor(pixels: torch.Tensor, p: Preprocess, *, channels_last: bool = False) -> torch.Tensor:
    """:func:`normalize` on a uint8 NHWC torch tensor, on whatever device it is (float32 NCHW out).

    NHWC permuted to NCHW is channels_last in memory already; ``channels_last=True`` keeps it so.
    """
    import torch

    mean, std = _mean_std(tuple(p.mean), tuple(p.std), pixels.device)
    x = (pixels.permute(0, 3, 1, 2).float() - mean) / std
    if p.channel_order == "BGR":
        x = x.flip(1)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@functools.lru_cache(maxsize=16)
def _mean_std(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The constants on ``device``, made once: a copy to a GPU per call would be a synchronous host-to-device
    transfer, and is not allowed at all while a CUDA graph is being captured."""
    import torch

    def const(values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    return const(mean), const(std)


def denormalize(x: np.ndarray, p: Preprocess) -> np.ndarray:
    """The inverse of :func:`normalize` on an NCHW batch: float32 raw 0-255 values in RGB order."""
    x = np.asarray(x, dtype=np.float32)
    if p.channel_order == "BGR":
        x = x[:, ::-1]
    return x * np.asarray(p.std, dtype=np.float32).reshape(1, 3, 1, 1) + np.asarray(p.mean, dtype=np.float32).reshape(
        1, 3, 1, 1
    )


def bgr_nchw(rgb: np.ndarray, *, channels_first: bool = False) -> np.ndarray:
    """Raw RGB pixels (uint8 NHWC, or float NCHW with ``channels_first``) -> float32 NCHW BGR 0-255 values:
    the input convention of the OpenVINO IR (the card's "converted model")."""
    out = rgb[:, ::-1] if channels_first else rgb[..., ::-1].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(out, dtype=np.float32)


def preprocess(source: ImageSource, p: Preprocess) -> np.ndarray:
    """Decode and preprocess one image: a CHW float32 array ready for the model."""
    return normalize(decode_crop(source, p), p)
