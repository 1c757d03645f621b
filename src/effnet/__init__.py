"""effnet: EfficientNet-B5 (and its family) for ImageNet classification, faithful to the TF reference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._version import __version__
from .errors import CheckpointError, EffnetError, ImageError, UnknownNameError, WeightsUnavailableError
from .factory import create_model
from .model import EfficientNet
from .specs import VARIANTS, get_variant, list_models
from .weights.records import WeightsRecord, get_record, list_weights

if TYPE_CHECKING:  # type checkers see Classifier; at run time it is imported on first use (below)
    from .predict import Classifier
    from .saliency import Explanation, explain

__all__ = [
    "__version__",
    "create_model",
    "list_models",
    "list_weights",
    "get_record",
    "WeightsRecord",
    "EfficientNet",
    "VARIANTS",
    "get_variant",
    "Classifier",
    "explain",
    "Explanation",
    "EffnetError",
    "CheckpointError",
    "ImageError",
    "UnknownNameError",
    "WeightsUnavailableError",
]


def __getattr__(name: str) -> object:
    # Classifier pulls in Pillow and numpy; keep `import effnet` for the model alone light.
    if name == "Classifier":
        from .predict import Classifier

        return Classifier
    if name in ("explain", "Explanation"):  # captum and matplotlib are imported only when a map is drawn
        from . import saliency

        return getattr(saliency, name)
    raise AttributeError(f"module 'effnet' has no attribute {name!r}")
