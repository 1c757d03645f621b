"""A weights record's eval transform as one callable (torchvision's ``weights.transforms()`` idea).

:class:`ImageTransforms` holds no math of its own: it chains :func:`effnet.preprocess.decode_crop` and
:func:`~effnet.preprocess.normalize`, the functions :class:`effnet.Classifier` feeds its backends from, so a
model called on ``t(image)[None]`` sees the same float32 values the Classifier gives it.
"""

from __future__ import annotations

import numpy as np
import torch

from .preprocess import ImageSource, decode_crop, normalize
from .weights.preprocessing import Preprocess

__all__ = ["ImageTransforms"]


class ImageTransforms:
    """Image (PIL image, path or bytes) -> CHW float32 tensor ``(x - mean) / std``, per a :class:`Preprocess`.

    Decode (EXIF orientation applied, any mode to RGB) -> resize the shorter side to ``resize_size`` ->
    center crop ``input_size`` -> normalize with the record's 0-255 mean/std -> channels in
    ``channel_order``. Raises :class:`effnet.ImageError` for an image that cannot be decoded.
    """

    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess

    def crop(self, image: ImageSource) -> np.ndarray:
        """The uint8 HWC RGB crop, before normalization."""
        return decode_crop(image, self.preprocess)

    def __call__(self, image: ImageSource) -> torch.Tensor:
        return torch.from_numpy(normalize(self.crop(image), self.preprocess))

    def __repr__(self) -> str:
        p = self.preprocess
        return (
            f"ImageTransforms(resize_size={p.resize_size}, crop_size={p.input_size}, "
            f"interpolation={p.interpolation!r}, mean={p.mean}, std={p.std} (0-255), channel_order={p.channel_order!r})"
        )
