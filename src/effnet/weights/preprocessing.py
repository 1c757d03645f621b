"""The eval preprocessing a checkpoint prescribes, as data (no Pillow, no torch).

:class:`Preprocess` lives in this leaf module, not in ``records.py``, so that the code that applies it
(:mod:`effnet.preprocess`) does not import the records and a record can hand out its own image transform
(:meth:`WeightsRecord.transforms`) without an import cycle. ``records.py`` re-exports everything here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "TF_CROP_PADDING",
    "LITE_MEAN",
    "LITE_STD",
    "Interpolation",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "Preprocess",
    "pretrained_cfg",
]

Interpolation = Literal["bicubic", "bilinear", "nearest"]

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # 0.485, 0.456, 0.406 x 255
IMAGENET_STD = (58.395, 57.12, 57.375)  # 0.229, 0.224, 0.225 x 255
INCEPTION_MEAN = (127.5, 127.5, 127.5)  # 0.5 x 255: timm IMAGENET_INCEPTION_MEAN, used by AdvProp weights
INCEPTION_STD = (127.5, 127.5, 127.5)
# The TF reference eval (tensorflow/tpu efficientnet/preprocessing.py: CROP_PADDING = 32): resize the shorter
# side to size + 32, then center crop size. TF Lite models are fed (x - 127) / 128
# (efficientnet/lite/efficientnet_lite_builder.py).
TF_CROP_PADDING = 32
LITE_MEAN, LITE_STD = (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)


@dataclass(frozen=True)
class Preprocess:
    """Eval preprocessing of one checkpoint, on 0-255 pixel values.

    Decode -> RGB -> resize the shorter side to ``resize_size`` -> center crop
    ``input_size`` -> subtract ``mean`` -> divide by ``std`` -> NCHW in ``channel_order``.
    """

    input_size: int
    resize_size: int
    interpolation: Interpolation = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: Literal["RGB", "BGR"] = "RGB"

    @property
    def crop_fraction(self) -> float:
        return self.input_size / self.resize_size

    def to_dict(self) -> dict:
        return {
            "input_size": self.input_size,
            "resize_size": self.resize_size,
            "crop_fraction": round(self.crop_fraction, 4),
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "channel_order": self.channel_order,
        }


def _unit(values: tuple[float, float, float]) -> tuple[float, float, float]:
    # 10 decimals: 123.675 / 255 prints as 0.485, not 0.48500000000000004; far below float32 resolution.
    return (round(values[0] / 255, 10), round(values[1] / 255, 10), round(values[2] / 255, 10))


def _crop_pct(p: Preprocess) -> float:
    """``crop_fraction`` with the fewest digits (at least 4) for which timm's ``floor(input / crop_pct)`` gives
    back ``resize_size``: 4 digits suffice for 456 / 488 (0.9344) but not for Lite1's 240 / 272 (0.8824 -> 271)."""
    for digits in range(4, 10):
        pct = round(p.crop_fraction, digits)
        if math.floor(p.input_size / pct) == p.resize_size:
            return pct
    return p.crop_fraction


def pretrained_cfg(p: Preprocess, *, num_classes: int, record: str | None) -> dict[str, Any]:
    """``p`` as a timm-style ``pretrained_cfg`` dict (what ``model.pretrained_cfg`` holds).

    Units follow timm, so ``timm.data.resolve_data_config(model=m)`` reads it unchanged: ``mean``/``std``
    are fractions of 255 (the record's 0-255 values divided by 255: AdvProp's 127.5 is 0.5) applied after
    scaling pixels to [0, 1]; ``input_size`` is ``(3, H, W)``. ``crop_pct`` is rounded to the fewest digits
    (4 or more) for which timm's ``floor(input / crop_pct)`` gives back exactly ``resize_size``
    (456 / 0.9344 -> 488); effnet's own code reads ``resize_size``.
    """
    return {
        "record": record,
        "num_classes": num_classes,
        "input_size": (3, p.input_size, p.input_size),
        "interpolation": p.interpolation,
        "resize_size": p.resize_size,
        "crop_pct": _crop_pct(p),
        "crop_mode": "center",
        "mean": _unit(p.mean),
        "std": _unit(p.std),
        "channel_order": p.channel_order,
    }
