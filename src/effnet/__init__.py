"""effnet: EfficientNet-B5 (and its family) for ImageNet classification, faithful to the TF reference."""

from __future__ import annotations

from ._version import __version__
from .errors import CheckpointError, EffnetError, ImageError, UnknownNameError, WeightsUnavailableError
from .factory import create_model
from .model import EfficientNet
from .specs import VARIANTS, get_variant

__all__ = [
    "__version__",
    "create_model",
    "EfficientNet",
    "VARIANTS",
    "get_variant",
    "Classifier",
    "EffnetError",
    "CheckpointError",
    "ImageError",
    "UnknownNameError",
    "WeightsUnavailableError",
]


def __getattr__(name: str):
    # Classifier pulls in Pillow and numpy; keep `import effnet` for the model alone light.
    if name == "Classifier":
        from .predict import Classifier

        return Classifier
    raise AttributeError(f"module 'effnet' has no attribute {name!r}")
