"""``Classifier``: weights record + backend -> top-k ImageNet predictions for images.

Data flows one way: image -> decode/resize/crop (the record's Preprocess, :mod:`effnet.pipeline`) ->
backend (normalization in its own input convention) -> probabilities -> labels.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .backends import Backend, create_backend, infer_stream
from .errors import EffnetError
from .factory import Pretrained
from .labels import ClassLabel, Prediction, top_k
from .pipeline import Batch, decode_crop, iter_batches
from .preprocess import ACCEPTED_IMAGES, ImageSource, decode_crop_reduced, is_single_image
from .source import ModelSource, resolve_source, weights_label
from .weights.records import Preprocess, WeightsRecord

if TYPE_CHECKING:  # pragma: no cover
    from .saliency import Explainer, Explanation
    from .video import VideoClassification

__all__ = [
    "DECODERS",
    "Classifier",
    "Prediction",
    "ImageResult",
    "top_k",
    "clamp_top_k",
    "results_for_batch",
    "as_images",
]

T = TypeVar("T")

# decode=: pillow, the exact pixels of the card's pipeline (the API's and eval's default); reduced, big JPEGs
# decoded by DCT scaling (the default of classify and serve); gpu, nvJPEG on the GPU.
DECODERS = ("pillow", "reduced", "gpu")


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


def as_images(images: Iterable[ImageSource] | ImageSource) -> Iterable[ImageSource]:
    """One image -> a list of it; an iterable of images (a 4-D array: its rows) as is."""
    if is_single_image(images):
        return [images]  # type: ignore[list-item]  # one image (is_single_image)
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise TypeError(f"cannot classify an array of shape {images.shape}: give H x W x 3 or N x H x W x 3 uint8")
    if isinstance(images, Iterable):
        return images  # type: ignore[return-value]  # is_single_image took the bytes-like ones
    raise TypeError(
        f"cannot classify a {type(images).__name__}: give one image or an iterable of images; accepted images: "
        f"{ACCEPTED_IMAGES}"
    )


def clamp_top_k(k: int, num_classes: int) -> int:
    """THE top-k rule of the CLI and the server: at least 1; more than the model has classes gives them all.

    Callers say when it clamped (``classify`` on stderr, ``/v1/classify`` in its answer): a page or script
    written for ImageNet's 1,000 classes keeps working on a fine-tuned model with 2.
    """
    if k < 1:
        raise EffnetError(f"top-k must be >= 1, got {k}")
    return min(k, num_classes)


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
    ``name`` may be a :class:`~effnet.source.ModelSource` resolved already (:func:`~effnet.source.resolve_source`,
    once per command): the classifier then uses it as is (``model_path=`` still names the file a backend reads).
    ``workload="throughput"`` (for many images) builds the backend's bulk configuration
    (:func:`effnet.backends.workload_options`: OpenVINO's THROUGHPUT streams); the default is ``"latency"``.
    """

    def __init__(
        self,
        name: str | ModelSource = "efficientnet-b5",
        weights: Pretrained | None = None,
        *,
        backend: str = "torch",
        device: str = "cpu",
        decode: str = "pillow",
        download: bool = True,
        progress: bool = True,
        **backend_options: Any,
    ) -> None:
        if decode not in DECODERS:
            raise EffnetError(f"decode must be one of {', '.join(DECODERS)}, got {decode!r}")
        if isinstance(name, ModelSource):
            # Resolved already (the CLI, a Ray actor from the driver's resolution): used as is, never resolved
            # again, so nothing can disagree with it. What would resolve it has no say here.
            if weights is not None or "output_kind" in backend_options:
                raise EffnetError("a resolved ModelSource already holds its weights and output kind: pass neither")
            self.source: ModelSource = name
        else:
            # A model file (model_path) describes itself: its metadata must agree with name and weights.
            # output_kind (prob or logits) says what a file without that metadata outputs.
            self.source = resolve_source(
                name,
                weights,
                model_path=backend_options.get("model_path"),
                output_kind=backend_options.pop("output_kind", None),
                download=download,
                progress=progress,
            )
        self.preprocess: Preprocess = self.source.preprocess
        self.labels: tuple[ClassLabel, ...] = self.source.labels
        # device: cpu, cuda, cuda:N or auto (effnet.device); batch_hint=N lets a CUDA fast path prepare batch N.
        self.backend: Backend = create_backend(backend, self.source, device=device, **backend_options)
        # decode="gpu": nvJPEG + on-GPU resize (effnet.gpu_decode), close to but not exactly Pillow's pixels.
        # Crops stay on the GPU (torch tensors) for the backend; decode_counts() says how many took Pillow.
        # decode="reduced": big JPEGs decoded by DCT scaling to >= 2x the resize target (camera photos several
        # times faster); ImageNet-size images are below that and get decode_crop's exact pixels.
        self.decode = decode
        self.decoder: Callable[[ImageSource, Preprocess], Any] = (
            decode_crop_reduced if decode == "reduced" else decode_crop
        )
        if decode == "gpu":
            from .gpu_decode import GpuDecoder

            self.decoder = GpuDecoder(self.preprocess, str(getattr(self.backend, "device", device)))
        self._explainer: Explainer | None = None

    @property
    def record(self) -> WeightsRecord | None:
        return self.source.record

    def crop(self, image: ImageSource) -> Any:
        """Decode, resize and crop one image: uint8 HWC RGB at the model's input size (numpy; with
        ``decode="gpu"`` a tensor on the GPU)."""
        return self.decoder(image, self.preprocess)

    def decode_counts(self) -> Any:
        """``decode="gpu"``: a :class:`effnet.gpu_decode.DecodeCounts` snapshot (images decoded by nvJPEG,
        and by the Pillow path per reason); None for the Pillow decoder, which has no other path."""
        counts = getattr(self.decoder, "counts", None)
        return counts() if callable(counts) else None

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 NHWC crops -> float32 [N, num_classes] probabilities."""
        return self.backend(pixels)

    def top_k(self, probs: np.ndarray, k: int) -> list[Prediction]:
        return top_k(probs, self.labels, k)

    def iter_probabilities(self, batches: Iterable[Batch[T]]) -> Generator[tuple[Batch[T], np.ndarray], None, None]:
        """``(batch, probabilities of its good crops)`` per batch, in order, through the backend's stream
        (:func:`effnet.backends.infer_stream`: OpenVINO keeps every stream fed across batches)."""
        jobs = ((batch, batch.crops()) for batch in batches)
        for batch, probs in infer_stream(self.backend, jobs):
            yield batch, probs if len(probs) else np.empty((0, len(self.labels)), np.float32)

    def iter_batches(
        self,
        images: Iterable[ImageSource],
        batch_size: int = 1,
        workers: int | None = None,
        name_of: Callable[[ImageSource], str] | None = None,
    ) -> Generator[Batch[ImageSource], None, None]:
        """The pipeline with this classifier's preprocessing: batches of decoded crops, in order."""
        return iter_batches(
            images, self.preprocess, batch_size=batch_size, workers=workers, decode=self.decoder, name_of=name_of
        )

    def iter_classify(
        self,
        images: Iterable[ImageSource],
        top_k: int = 5,
        batch_size: int = 1,
        workers: int | None = None,
        name_of: Callable[[ImageSource], str] | None = None,
    ) -> Iterator[ImageResult]:
        """Yield one :class:`ImageResult` per image, in order; unreadable images carry an error.

        ``name_of(image)`` is how a result names its image (default: its path, else ``<image>``).
        """
        if batch_size < 1:
            raise EffnetError(f"batch size must be >= 1, got {batch_size}")
        batches = self.iter_batches(images, batch_size=batch_size, workers=workers, name_of=name_of)
        stream = self.iter_probabilities(batches)
        try:
            for batch, probs in stream:
                yield from results_for_batch(batch, probs, self.labels, top_k)
        finally:
            stream.close()
            batches.close()

    def classify_video(
        self,
        source: str | Any,
        *,
        fps: float | None = None,
        every: int | None = None,
        top_k: int = 5,
        batch_size: int = 1,
        annotate: str | Any | None = None,
        stall_timeout: float = 10.0,
        decode: str = "reduced",
        name: str | None = None,
    ) -> VideoClassification:
        """Classify a video file, a stream URL (rtsp, http(s), udp...) or a camera (``/dev/videoN``).

        Iterate the result for one :class:`effnet.video.FrameResult` per sampled frame (``path``, ``frame``,
        ``time`` in seconds from the PTS, ``predictions``), as they are classified; its ``segments()`` is the
        timeline. Sampling: ``fps`` frames per second of video time (default 2, :data:`effnet.video.DEFAULT_FPS`)
        or every ``every``-th frame. ``annotate="out.mp4"`` writes the classified frames with their top-k drawn
        (checked before decoding starts). ``decode="reduced"`` (the default for video) converts frames of at
        least 4x the resize target to RGB already scaled down (to no less than twice the target, as JPEGs with
        ``decode="reduced"``); ``"pillow"`` converts every frame at full size. ``name``: the rows' ``path`` when
        ``source`` is a copy (a Ray worker's copy of a file only the driver's node reads). Needs ``pip install
        'effnet[video]'``.
        """
        from .video import Sampling, VideoClassification

        if fps is not None and every is not None:
            raise EffnetError("give fps or every, not both")
        if decode not in DECODERS:
            raise EffnetError(f"decode must be one of {', '.join(DECODERS)}, got {decode!r}")
        sampling = (
            Sampling(fps=None, every=every)
            if every is not None
            else Sampling(fps=fps)
            if fps is not None
            else Sampling()
        )
        return VideoClassification(
            self,
            str(source),
            preprocess=self.preprocess,
            sampling=sampling,
            top_k=top_k,
            batch_size=batch_size,
            annotate=annotate,
            stall_timeout=stall_timeout,
            reduce=decode != "pillow",
            name=name,
        )

    def explain(
        self, images: Iterable[ImageSource] | ImageSource, method: str = "gradcam", target: str | int = "top1"
    ) -> list[Explanation]:
        """Attribution maps (:mod:`effnet.saliency`) from the fp32 torch model of these weights, whatever
        ``backend`` classifies with; the model is built on the first call and kept."""
        from .saliency import Explainer

        if self.source.checkpoint is None and self.source.record is not None:
            # A model file (--model-path) read by its description alone: its torch weights are not here, and
            # an explanation from other (random) weights would be a wrong answer given without a word.
            raise EffnetError(
                f"explanations need the torch weights {weights_label(self.source)} that the model file was "
                "exported from: pass them with --weights FILE"
            )
        if self._explainer is None:
            self._explainer = Explainer(self.source)
        return self._explainer.explain(list(as_images(images)), method=method, target=target)

    def classify(
        self, images: Iterable[ImageSource] | ImageSource, top_k: int = 5, batch_size: int = 1
    ) -> list[ImageResult]:
        """Classify one image or an iterable of them (a list, a generator, an N x H x W x 3 uint8 array).

        An image is a path, encoded bytes (``bytes``, ``bytearray``, ``memoryview``), a binary file object,
        a PIL image or a uint8 H x W x 3 array (:data:`effnet.preprocess.ImageSource`); a single image gives
        a one-element list. Anything else raises :class:`TypeError` naming what is accepted.
        """
        return list(self.iter_classify(as_images(images), top_k=top_k, batch_size=batch_size))
