"""THE image pipeline: image sources -> batches of uint8 crops, decoded ahead of inference.

Everything that classifies many images — :class:`~effnet.predict.Classifier`, :func:`effnet.evaluate.evaluate`,
the server, the Ray workers — goes through :func:`decode_crop` and, for a stream of images, :func:`iter_batches`.
Data flows one way: source -> decode (Pillow, EXIF, any mode -> RGB) -> resize/crop (the weights record's
:class:`~effnet.weights.records.Preprocess`) -> uint8 NHWC crops -> a backend, which normalizes in its own
input convention. Crops stay uint8 until the backend: 4x fewer bytes through queues, the object store and
host-to-device copies than float32.

Decoding runs in a thread pool a bounded number of images ahead (Pillow releases the GIL while decoding and
resizing), so the model does not wait on JPEG decoding, and a dataset never sits in memory as crops.
An image that cannot be read becomes a :class:`Decoded` with an ``error``: reported, never dropped.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from .errors import EffnetError, ImageError
from .preprocess import ImageSource, decode_crop
from .weights.records import Preprocess

__all__ = ["decode_crop", "check_crops", "image_name", "Decoded", "Batch", "iter_batches", "default_workers"]

T = TypeVar("T")


def check_crops(pixels: np.ndarray, input_size: int, backend: str) -> np.ndarray:
    """Reject anything but a [N, S, S, 3] batch of crops at the model's input size, with the shapes."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.shape[1:3] != (input_size, input_size) or not len(pixels):
        raise EffnetError(
            f"{backend} backend: expected a batch of RGB crops of shape [N, {input_size}, {input_size}, 3] "
            f"(NHWC, N >= 1), got {list(pixels.shape)}"
        )
    return pixels


def image_name(image: Any) -> str:
    """How results name an image: its path, else a placeholder for in-memory data."""
    return str(image) if isinstance(image, (str, os.PathLike)) else "<image>"


def default_workers() -> int:
    """Decoding threads when not told: one per core, at most 4 (more buys nothing ahead of one model)."""
    return min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class Decoded(Generic[T]):
    """One image after decoding: its crop, or the error that stopped it. ``item`` is what the caller gave."""

    item: T
    name: str
    crop: Any  # uint8 HWC: a numpy array, or a torch tensor on the GPU (--decode gpu); None on error
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.crop is not None


@dataclass(frozen=True)
class Batch(Generic[T]):
    """Images in input order: ``batch_size`` decoded ones (fewer at the end) and the failures among them."""

    images: tuple[Decoded[T], ...]
    wait_s: float  # time the consumer waited for decoding (0 when decoding kept ahead)

    @property
    def good(self) -> tuple[Decoded[T], ...]:
        return tuple(d for d in self.images if d.crop is not None)

    @property
    def failed(self) -> tuple[Decoded[T], ...]:
        return tuple(d for d in self.images if d.crop is None)

    def crops(self) -> Any:
        """The good crops stacked: uint8 [N, S, S, 3] (N may be 0); on the GPU when they were decoded there."""
        good = [d.crop for d in self.images if d.crop is not None]
        if not good:
            return np.empty((0, 0, 0, 3), dtype=np.uint8)
        if isinstance(good[0], np.ndarray):
            return np.stack(good)
        return _stack_on_device(good)


def _stack_on_device(crops: list[Any]) -> Any:
    """torch.stack of crops decoded on the GPU, on this thread's current stream, without a host round trip.

    Each crop was made on a decoding thread's stream (complete when it was returned); record_stream keeps
    the allocator from handing its memory back to that stream before this stack has read it.
    """
    import torch

    if crops[0].is_cuda:
        stream = torch.cuda.current_stream(crops[0].device)
        for c in crops:
            c.record_stream(stream)
    return torch.stack(crops)


def _decode(
    item: T, image: ImageSource, name: str, preprocess: Preprocess, decode: Callable[..., np.ndarray]
) -> Decoded[T]:
    try:
        return Decoded(item, name, decode(image, preprocess))
    except (ImageError, OSError) as e:  # OSError: a file that vanished or cannot be read mid-run
        return Decoded(item, name, None, str(e) or type(e).__name__)


def iter_batches(
    items: Iterable[T],
    preprocess: Preprocess,
    *,
    batch_size: int = 1,
    workers: int | None = None,
    image_of: Callable[[T], ImageSource] | None = None,
    name_of: Callable[[T], str] | None = None,
    decode: Callable[[ImageSource, Preprocess], np.ndarray] | None = None,
) -> Generator[Batch[T], None, None]:
    """Yield :class:`Batch` es of decoded ``items`` in order, decoding ahead in ``workers`` threads.

    ``image_of(item)`` gives the image to decode (default: the item itself: a path, bytes or PIL image);
    ``name_of(item)`` how results name it (default: its path). A batch closes when it holds ``batch_size``
    good crops, so failures never shrink a forward pass. At most ``2 * batch_size + workers`` decodes are in
    flight: enough to keep the pool busy during the next forward pass. Closing the generator early (an error,
    Ctrl-C, ``break``) cancels the decodes not yet started. ``decode`` replaces :func:`decode_crop` (the
    exact Pillow path) with another ``(image, preprocess) -> crop``, e.g. ``--decode gpu``'s.
    """
    if batch_size < 1:
        raise EffnetError(f"batch size must be >= 1, got {batch_size}")
    if workers is not None and workers < 1:
        raise EffnetError(f"workers must be >= 1, got {workers}")
    workers = workers or default_workers()
    get_image: Callable[[T], Any] = image_of or (lambda item: item)  # type: ignore[return-value]
    todo = iter(items)
    window: deque[Future[Decoded[T]]] = deque()
    ahead = 2 * batch_size + workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="effnet-decode") as pool:

        def refill() -> None:
            while len(window) < ahead:
                item = next(todo, _END)
                if item is _END:
                    return
                image = get_image(item)
                name = name_of(item) if name_of is not None else image_name(image)
                window.append(pool.submit(_decode, item, image, name, preprocess, decode or decode_crop))

        try:
            refill()
            while window:
                images: list[Decoded[T]] = []
                good = 0
                waited = 0.0
                while window and good < batch_size:
                    future = window.popleft()
                    t0 = time.perf_counter()
                    decoded = future.result()
                    waited += time.perf_counter() - t0
                    images.append(decoded)
                    good += decoded.ok
                    refill()  # keep decoding ahead while the consumer runs the model
                yield Batch(tuple(images), waited)
        finally:
            for f in window:  # stopped early: do not decode the rest
                f.cancel()


_END: Any = object()
