"""What the server needs from a classifier, in one small class.

:class:`ServedModel` wraps :class:`effnet.predict.Classifier` so that the
server's answers are the library's answers: images go through
``Classifier.crop`` and ``Classifier.probabilities`` (exactly what
``effnet classify`` runs), and labels through ``Classifier.top_k``. The KServe
v2 tensor path takes the normalized NCHW float tensor the PyTorch model takes;
every backend accepts it through ``Backend.infer_normalized``.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..predict import Classifier, Prediction
from ..source import weights_label

if TYPE_CHECKING:  # pragma: no cover
    from ..saliency import Explainer, Explanation


class TensorInputUnsupported(RuntimeError):
    """The backend cannot take a normalized float tensor (it has no ``infer_normalized``)."""


@dataclass(frozen=True)
class ModelInfo:
    name: str  # the name clients use in /v2/models/{name}
    version: str
    input_size: int  # H = W of the crop the model takes
    num_classes: int
    backend: str
    precision: str
    weights: str  # effnet.source.weights_label: record name, checkpoint file name, or random-init
    channel_order: str  # of the v2 tensor input
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
            "backend": self.backend,
            "precision": self.precision,
            "weights": self.weights,
            "channel_order": self.channel_order,
            "mean": list(self.mean),
            "std": list(self.std),
        }


class ModelEndpoint(Protocol):
    """What the server app calls: :class:`ServedModel` here, or a model in other processes (a Ray Serve
    model deployment, ``effnet.distributed.serve``) whose inference calls are awaitable."""

    info: ModelInfo

    @property
    def accepts_tensors(self) -> bool: ...

    def crop(self, data: bytes) -> np.ndarray: ...

    def probabilities(self, pixels: np.ndarray) -> np.ndarray | Awaitable[np.ndarray]: ...

    def tensor_probabilities(self, x: np.ndarray) -> np.ndarray | Awaitable[np.ndarray]: ...

    def top_k(self, probs: np.ndarray, k: int) -> list[Prediction]: ...


class ServedModel:
    """Decode + crop, pixels -> probabilities, tensor -> probabilities, top-k labels."""

    def __init__(self, classifier: Classifier, name: str | None = None, version: str = "1") -> None:
        self.classifier = classifier
        source = classifier.source
        weights = weights_label(source)
        p = classifier.preprocess
        self.info = ModelInfo(
            name=name or source.model,
            version=version,
            input_size=p.input_size,
            num_classes=len(classifier.labels),
            backend=getattr(classifier.backend, "name", "?"),
            precision=getattr(classifier.backend, "precision", "?"),
            weights=weights,
            channel_order=p.channel_order,
            mean=p.mean,
            std=p.std,
        )
        self._tensor_runner = _tensor_runner(classifier.backend)
        self._explain_lock = threading.Lock()  # one attribution at a time: they hold the torch model's graph
        self._explainer: Explainer | None = None

    @property
    def explain_lock(self) -> threading.Lock:
        """Held by whoever runs the explainer's model (its hooks and graph are not shareable)."""
        return self._explain_lock

    def explainer(self, memory_mb: float) -> Explainer:
        """The fp32 torch model of these weights for attributions (built on the first call; hold
        :attr:`explain_lock` around it)."""
        if self._explainer is None:
            from ..saliency import Explainer

            self._explainer = Explainer(self.classifier.source, memory_mb=memory_mb)
        return self._explainer

    def explain_estimate_s(self, method: str) -> float | None:
        """Seconds an explanation with ``method`` is expected to take here, once the cost has been measured and
        while the measurement is recent (None: the job measures again before it would refuse)."""
        from ..saliency_budget import REMEASURE_S

        explainer = self._explainer
        cost = None if explainer is None else explainer.measured_cost
        if explainer is None or cost is None or cost.age_s() > REMEASURE_S:
            return None
        return cost.estimate_s(method, explainer.input_size)

    def explain(self, data: bytes, method: str, target: str) -> Explanation:
        """Image bytes -> attribution map of the fp32 torch model (``Classifier.explain``), whatever backend
        serves ``/v1/classify``; raises :class:`effnet.ImageError` for bad images."""
        with self._explain_lock:
            (e,) = self.classifier.explain(data, method=method, target=target)
        if e.error is not None:
            from ..errors import ImageError

            raise ImageError(e.error)
        return e

    @property
    def accepts_tensors(self) -> bool:
        return self._tensor_runner is not None

    def crop(self, data: bytes) -> np.ndarray:
        """Image bytes -> uint8 HWC RGB crop; raises :class:`effnet.ImageError` for bad images."""
        return self.classifier.crop(data)  # the pipeline's decode_crop: a writable array

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] crops -> float32 [N, classes]."""
        return self.classifier.probabilities(pixels)

    def tensor_probabilities(self, x: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] normalized input (the PyTorch model's ``data``) -> float32 [N, classes]."""
        if self._tensor_runner is None:
            raise TensorInputUnsupported(
                f"the {self.info.backend} backend takes image pixels, not normalized tensors; "
                "serve with another --backend for the v2 tensor API"
            )
        return self._tensor_runner(x)

    def top_k(self, probs: np.ndarray, k: int) -> list[Prediction]:
        return self.classifier.top_k(probs, k)


def _tensor_runner(backend: object) -> Callable[[np.ndarray], np.ndarray] | None:
    """The backend's normalized-tensor entry point (``Backend.infer_normalized``), if it has one."""
    run = getattr(backend, "infer_normalized", None)
    return run if callable(run) else None
