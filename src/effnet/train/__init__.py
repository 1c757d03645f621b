"""Fine-tuning and transfer learning: ``effnet train`` on class folders, one process or many (torchrun).

A layer over the model, the weights and the source: it writes an effnet-native
``RUN/model.safetensors`` (model name, class names, preprocessing in its metadata) that
``classify``, ``eval``, ``export`` and ``serve`` read like any other weights file.
"""

from __future__ import annotations

from ..evaluate.datasets import find_class_folders
from .config import TrainConfig, TrainError
from .data import Augment
from .loop import TrainResult, train

__all__ = ["TrainConfig", "TrainError", "TrainResult", "Augment", "find_class_folders", "train"]
