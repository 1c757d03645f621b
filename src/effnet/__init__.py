"""effnet: EfficientNet-B5 (and its family) for ImageNet classification, faithful to the TF reference."""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import CheckpointError, EffnetError, ImageError, UnknownNameError, WeightsUnavailableError

if TYPE_CHECKING:  # type checkers and IDEs see every name; at run time each is imported on first use (below)
    from .factory import create_model
    from .model import EfficientNet
    from .predict import Classifier
    from .saliency import Explanation, explain
    from .specs import VARIANTS, get_variant, list_models
    from .weights.records import WeightsRecord, get_record, list_weights

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

# Where each public name lives. `import effnet` imports none of them: any process that imports a module of
# effnet imports this package first, and the model (factory, model) imports torch, about 1 s of CPU per
# process on a 2-vCPU node. Ray's read and decode workers import effnet only to run code that needs no
# torch (docs/distributed.md, "Where single-node Ray loses time", cause 2).
# Classifier pulls in Pillow and numpy; explain, captum and matplotlib.
_LAZY = {
    "create_model": "factory",
    "EfficientNet": "model",
    "Classifier": "predict",
    "explain": "saliency",
    "Explanation": "saliency",
    "VARIANTS": "specs",
    "get_variant": "specs",
    "list_models": "specs",
    "WeightsRecord": "weights.records",
    "get_record": "weights.records",
    "list_weights": "weights.records",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # the next look-up is an ordinary attribute
        return value
    # A submodule by attribute (`import effnet; effnet.weights.records...`), as when this package imported
    # them eagerly and so made them attributes.
    # Names only: `hasattr(effnet, "a.b")` is False, not an import of effnet.a.b (or an error when there is none).
    if name.isidentifier() and not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'effnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
