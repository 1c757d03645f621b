"""Figures: matplotlib with the Agg backend (no display, no GUI toolkit), written as files or embedded in HTML.

Every picture effnet draws — explanation overlays, the evaluation report, benchmark latency plots — goes
through here: one place that imports matplotlib (an optional extra, with the ``pip install`` line when it is
missing), selects Agg before pyplot is imported, and turns a figure into bytes, a file (atomically) or a
``data:`` URI for self-contained HTML.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path
from types import ModuleType
from typing import Any

from ._optional import require
from .errors import EffnetError

__all__ = ["pyplot", "figure_bytes", "write_bytes", "data_uri"]

MIME = {"png": "image/png", "svg": "image/svg+xml", "jpeg": "image/jpeg"}


def pyplot(purpose: str, extra: str = "plots") -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend, or :class:`~effnet._optional.MissingExtraError` naming ``extra``."""
    matplotlib = require("matplotlib", extra, purpose)
    # Agg before pyplot: no display is needed (servers, CI, Ray workers) and no GUI toolkit is imported.
    matplotlib.use("Agg", force=True)
    return require("matplotlib.pyplot", extra, purpose)


def figure_bytes(fig: Any, fmt: str = "png", dpi: int = 100) -> bytes:
    """Render ``fig`` as PNG or SVG bytes and close it (pyplot keeps every open figure alive otherwise)."""
    import io

    if fmt not in MIME:
        raise EffnetError(f"figure format must be one of {sorted(MIME)}, got {fmt!r}")
    buf = io.BytesIO()
    try:
        # metadata without a date or software version: the same figure gives the same bytes
        meta = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta)
    finally:
        fig.canvas.figure.clf()
        import matplotlib.pyplot as plt

        plt.close(fig)
    return buf.getvalue()


def write_bytes(path: str | os.PathLike, data: bytes, what: str = "figure") -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename: the file is complete or absent."""
    target = Path(path)
    if not target.parent.is_dir():
        raise EffnetError(f"cannot write the {what} {target}: folder {target.parent} does not exist")
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.part"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as e:
        raise EffnetError(f"cannot write the {what} {target}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def data_uri(data: bytes, fmt: str) -> str:
    """``data:`` URI of an image, so that an HTML page needs no second file and makes no request."""
    return f"data:{MIME[fmt]};base64,{base64.b64encode(data).decode('ascii')}"
