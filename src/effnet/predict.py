"""``Classifier``: weights record + backend -> top-k ImageNet predictions for images.

Data flows one way: image -> decode/resize/crop (the record's Preprocess, :mod:`effnet.pipeline`) ->
backend (normalization in its own input convention) -> probabilities -> labels.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends import Backend, create_backend
from .errors import EffnetError
from .factory import Pretrained
from .labels import ClassLabel, Prediction, top_k
from .pipeline import Batch, decode_crop, iter_batches
from .preprocess import ImageSource
from .source import ModelSource, resolve_source
from .weights.records import Preprocess, WeightsRecord

if TYPE_CHECKING:  # pragma: no cover
    from .saliency import Explainer, Explanation

__all__ = ["Classifier", "Prediction", "ImageResult", "top_k", "results_for_batch"]


@dataclass
class ImageResult:
    """The answer for one image: predictions, or the error that stopped it."""

    path: str
    predictions: list[Prediction] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "predictions": [p.to_dict() for p in self.predictions]}


def results_for_batch(batch: Batch[Any], probs: np.ndarray, labels: Sequence[ClassLabel], k: int) -> list[ImageResult]:
    """One :class:`ImageResult` per image of ``batch``, in order: ``probs`` holds a row per good crop."""
    rows = iter(probs)
    return [
        ImageResult(d.name, top_k(next(rows), labels, k)) if d.ok else ImageResult(d.name, error=d.error)
        for d in batch.images
    ]


class Classifier:
    """Classify images with an EfficientNet.

    >>> clf = Classifier("efficientnet-lite0")              # default weights record
    >>> clf.classify(["cat.jpg"], top_k=3)[0].predictions[0].label

    ``backend="torch"`` (the default here) runs the PyTorch model itself, the reference every other
    backend is checked against, with no export step; the CLI's default is ``"auto"``, the fastest installed.
    """

    def __init__(
        self,
        name: str = "efficientnet-b5",
        weights: Pretrained | None = None,
        *,
        backend: str = "torch",
        device: str = "cpu",
        decode: str = "pillow",
        download: bool = True,
        progress: bool = True,
        **backend_options: Any,
    ) -> None:
        if decode not in ("pillow", "gpu"):
            raise EffnetError(f"decode must be 'pillow' or 'gpu', got {decode!r}")
        self.source: ModelSource = resolve_source(name, weights, download=download, progress=progress)
        self.preprocess: Preprocess = self.source.preprocess
        self.labels: tuple[ClassLabel, ...] = self.source.labels
        # device: cpu, cuda, cuda:N or auto (effnet.device); batch_hint=N lets a CUDA fast path prepare batch N.
        self.backend: Backend = create_backend(backend, self.source, device=device, **backend_options)
        # decode="gpu": nvJPEG + on-GPU resize (effnet.gpu_decode), close to but not exactly Pillow's pixels.
        self.decoder: Callable[[ImageSource, Preprocess], np.ndarray] = decode_crop
        if decode == "gpu":
            from .gpu_decode import GpuDecoder

            self.decoder = GpuDecoder(self.preprocess, device)
        self._explainer: Explainer | None = None

    @property
    def record(self) -> WeightsRecord | None:
        return self.source.record

    def crop(self, image: ImageSource) -> np.ndarray:
        """Decode, resize and crop one image: uint8 HWC RGB at the model's input size."""
        return self.decoder(image, self.preprocess)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 NHWC crops -> float32 [N, num_classes] probabilities."""
        return self.backend(pixels)

    def top_k(self, probs: np.ndarray, k: int) -> list[Prediction]:
        return top_k(probs, self.labels, k)

    def iter_batches(
        self, images: Iterable[ImageSource], batch_size: int = 1, workers: int | None = None
    ) -> Generator[Batch[ImageSource], None, None]:
        """The pipeline with this classifier's preprocessing: batches of decoded crops, in order."""
        return iter_batches(images, self.preprocess, batch_size=batch_size, workers=workers, decode=self.decoder)

    def iter_classify(
        self, images: Iterable[ImageSource], top_k: int = 5, batch_size: int = 1, workers: int | None = None
    ) -> Iterator[ImageResult]:
        """Yield one :class:`ImageResult` per image, in order; unreadable images carry an error."""
        if batch_size < 1:
            raise EffnetError(f"batch size must be >= 1, got {batch_size}")
        batches = self.iter_batches(images, batch_size=batch_size, workers=workers)
        try:
            for batch in batches:
                crops = batch.crops()
                probs = self.probabilities(crops) if len(crops) else np.empty((0, len(self.labels)), np.float32)
                yield from results_for_batch(batch, probs, self.labels, top_k)
        finally:
            batches.close()

    def explain(
        self, images: Sequence[ImageSource] | ImageSource, method: str = "gradcam", target: str | int = "top1"
    ) -> list[Explanation]:
        """Attribution maps (:mod:`effnet.saliency`) from the fp32 torch model of these weights, whatever
        ``backend`` classifies with; the model is built on the first call and kept."""
        from .saliency import Explainer

        if isinstance(images, (str, os.PathLike, bytes)) or not isinstance(images, Sequence):
            images = [images]
        if self._explainer is None:
            self._explainer = Explainer(self.source)
        return self._explainer.explain(images, method=method, target=target)  # type: ignore[arg-type]

    def classify(
        self, images: Sequence[ImageSource] | ImageSource, top_k: int = 5, batch_size: int = 1
    ) -> list[ImageResult]:
        """Classify paths, bytes or PIL images; a single image gives a one-element list."""
        if isinstance(images, (str, os.PathLike, bytes)) or not isinstance(images, Sequence):
            images = [images]
        return list(self.iter_classify(images, top_k=top_k, batch_size=batch_size))  # type: ignore[arg-type]
