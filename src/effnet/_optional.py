"""Optional extras: import one, or fail with the ``pip install`` line that provides it."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import EffnetError

__all__ = ["require", "MissingExtraError"]


class MissingExtraError(EffnetError, ImportError):
    """An optional package that a feature needs is not installed."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` for ``purpose``, or raise :class:`MissingExtraError` naming ``effnet[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{purpose} needs the Python package {module!r}, which is not installed or cannot be imported "
            f"({e}): pip install 'effnet[{extra}]'"
        ) from None
