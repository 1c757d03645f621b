"""torch.hub entry points: ``torch.hub.load("<owner>/effnet", "efficientnet_b5", pretrained=True)``.

One entry point per model that has recorded weights (``effnet.weights.records.DEFAULT_WEIGHTS``), generated
from that table. Each takes ``create_model``'s arguments: ``pretrained=True`` loads the model's default
weights, a record name (``pretrained="tf_efficientnet_b5.ap_in1k"``) or a checkpoint path loads those. The
model's ``pretrained_cfg`` names its record; ``effnet.get_record(name).transforms()`` is its eval transform.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# Import names torch.hub checks before loading (the runtime dependencies of pyproject.toml).
dependencies = ["torch", "numpy", "PIL", "safetensors", "tqdm"]

# From a clone, effnet lives in src/ (not on sys.path unless installed): use the clone's own code.
_SRC = str(Path(__file__).resolve().parent / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from effnet import EfficientNet, create_model  # noqa: E402
from effnet.weights.records import DEFAULT_WEIGHTS  # noqa: E402


def _entry_point(model: str, weights: str):
    def entry(pretrained: Any = False, **kwargs: Any) -> EfficientNet:
        return create_model(model, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = model.replace("-", "_")
    entry.__doc__ = (
        f"{model} (effnet). pretrained=True loads {weights!r}; pretrained may also be a weights record name "
        f"or a checkpoint path. Other keyword arguments go to effnet.create_model (num_classes, ...)."
    )
    return entry


for _model, _weights in DEFAULT_WEIGHTS.items():
    globals()[_model.replace("-", "_")] = _entry_point(_model, _weights)
