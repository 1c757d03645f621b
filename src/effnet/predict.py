"""``Classifier``: weights record + backend -> top-k ImageNet predictions for images.

Data flows one way: image -> decode/resize/crop (the record's Preprocess) ->
backend (normalization in its own input convention) -> probabilities -> labels.
Decoding runs in a thread pool ahead of inference (Pillow releases the GIL while
decoding and resizing), so the model does not wait on JPEG decoding.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backends import ModelSource, create_backend
from .errors import EffnetError, ImageError
from .factory import Pretrained, resolve_weights
from .labels import ClassLabel, get_labels
from .preprocess import ImageSource, load_image, resize_crop
from .specs import get_variant
from .weights.download import sha256_file
from .weights.records import RECORDS, Preprocess, WeightsRecord, default_record, fetch

_END = object()


@dataclass(frozen=True)
class Prediction:
    class_index: int
    synset: str
    label: str
    probability: float

    def to_dict(self) -> dict:
        return {
            "class_index": self.class_index,
            "synset": self.synset,
            "label": self.label,
            "probability": self.probability,
        }


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


def identify_record(path: Path, model: str) -> WeightsRecord | None:
    """The record whose checksum a local checkpoint file matches, if any.

    Lets ``--weights tf_efficientnet_b5_ap-9e82fae8.pth`` use the AdvProp
    preprocessing of its record instead of the model's default.
    """
    candidates = [r for r in RECORDS if r.model == model and (r.size is None or r.size == path.stat().st_size)]
    if not candidates:
        return None
    digest = sha256_file(path)
    return next((r for r in candidates if digest.startswith(r.sha256.lower())), None)


def resolve_source(
    model: str, weights: Pretrained | None = None, *, download: bool = True, progress: bool = True
) -> ModelSource:
    """Everything a backend needs: the weights file and the preprocessing that belongs to it.

    ``weights=None`` means the model's default record. A file that matches no
    record is preprocessed like the model's default record.
    """
    name = get_variant(model).name
    record, path = resolve_weights(name, True if weights is None else weights)
    if record is not None and path is None:
        path = fetch(record, download=download, progress=progress)
    elif path is not None:
        if not path.is_file():
            raise EffnetError(f"weights file {path} does not exist")
        record = identify_record(path, name)
    preprocess = (record or default_record(name)).preprocess
    return ModelSource(model=name, record=record, checkpoint=path, preprocess=preprocess)


class Classifier:
    """Classify images with an EfficientNet.

    >>> clf = Classifier("efficientnet-lite0")              # default weights record
    >>> clf.classify(["cat.jpg"], top_k=3)[0].predictions[0].label
    """

    def __init__(
        self,
        name: str = "efficientnet-b5",
        weights: Pretrained | None = None,
        *,
        backend: str = "torch",
        download: bool = True,
        progress: bool = True,
        **backend_options,
    ) -> None:
        self.source = resolve_source(name, weights, download=download, progress=progress)
        self.preprocess: Preprocess = self.source.preprocess
        self.labels: tuple[ClassLabel, ...] = get_labels(
            self.source.record.labels if self.source.record else "imagenet-1k"
        )
        self.backend = create_backend(backend, self.source, **backend_options)

    @property
    def record(self) -> WeightsRecord | None:
        return self.source.record

    def crop(self, image: ImageSource) -> np.ndarray:
        """Decode, resize and crop one image: uint8 HWC RGB at the model's input size."""
        return np.array(resize_crop(load_image(image), self.preprocess))  # writable, torch.from_numpy-safe

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 NHWC crops -> float32 [N, num_classes] probabilities."""
        return self.backend(pixels)

    def top_k(self, probs: np.ndarray, k: int) -> list[Prediction]:
        k = max(1, min(k, probs.shape[-1]))
        order = np.argsort(-probs, kind="stable")[:k]
        return [Prediction(int(i), self.labels[i].synset, self.labels[i].label, float(probs[i])) for i in order]

    def iter_classify(
        self, images: Iterable[ImageSource], top_k: int = 5, batch_size: int = 1, workers: int | None = None
    ) -> Iterator[ImageResult]:
        """Yield one :class:`ImageResult` per image, in order; unreadable images carry an error."""
        if batch_size < 1:
            raise EffnetError(f"batch size must be >= 1, got {batch_size}")
        workers = workers or min(4, os.cpu_count() or 1)

        def load(item: ImageSource) -> tuple[str, np.ndarray | None, str | None]:
            name = str(item) if isinstance(item, (str, os.PathLike)) else "<image>"
            try:
                return name, self.crop(item), None
            except ImageError as e:
                return name, None, str(e)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            # A bounded window of decodes in flight: ahead of inference, without holding a whole
            # dataset of crops in memory.
            window: deque[Future] = deque()
            pending: list[tuple[str, np.ndarray | None, str | None]] = []
            it = iter(images)
            limit = 2 * batch_size + workers
            while True:
                while len(window) < limit:
                    item = next(it, _END)
                    if item is _END:
                        break
                    window.append(pool.submit(load, item))
                if not window:
                    break
                pending.append(window.popleft().result())
                if sum(1 for _, px, _ in pending if px is not None) >= batch_size:
                    yield from self._run(pending, top_k)
                    pending = []
            if pending:
                yield from self._run(pending, top_k)

    def _run(self, pending: list[tuple[str, np.ndarray | None, str | None]], top_k: int) -> list[ImageResult]:
        crops = [px for _, px, _ in pending if px is not None]
        probs = iter(self.probabilities(np.stack(crops)) if crops else [])
        return [
            ImageResult(name, error=err) if px is None else ImageResult(name, self.top_k(next(probs), top_k))
            for name, px, err in pending
        ]

    def classify(
        self, images: Sequence[ImageSource] | ImageSource, top_k: int = 5, batch_size: int = 1
    ) -> list[ImageResult]:
        """Classify paths, bytes or PIL images; a single image gives a one-element list."""
        if isinstance(images, (str, os.PathLike, bytes)) or not isinstance(images, Sequence):
            images = [images]  # type: ignore[list-item]
        return list(self.iter_classify(images, top_k=top_k, batch_size=batch_size))
