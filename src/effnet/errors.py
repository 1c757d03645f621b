"""Exceptions with context. Every error effnet raises for bad input derives from :class:`EffnetError`,
so the CLI can print one clear line and exit non-zero instead of a traceback."""

from __future__ import annotations


class EffnetError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, wrong weights)."""


class UnknownNameError(EffnetError, ValueError):
    """An unknown model, weights or backend name."""


class ImageError(EffnetError, ValueError):
    """An image that cannot be decoded or is unsafe to decode."""


class CheckpointError(EffnetError, ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


class WeightsUnavailableError(EffnetError, RuntimeError):
    """Pretrained weights are neither cached nor downloadable."""
