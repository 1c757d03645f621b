"""Figures: matplotlib with the Agg backend (no display, no GUI toolkit), written as files or embedded in HTML.

Every picture effnet draws — explanation overlays, the evaluation report, benchmark latency plots — goes
through here: one place that imports matplotlib (an optional extra, with the ``pip install`` line when it is
missing), selects Agg before pyplot is imported, and turns a figure into bytes, a file (atomically) or a
``data:`` URI for self-contained HTML.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from ._optional import require
from .errors import EffnetError

__all__ = ["pyplot", "figure_bytes", "literal_text", "use_agg", "write_bytes", "data_uri"]

MIME = {"png": "image/png", "svg": "image/svg+xml", "jpeg": "image/jpeg"}


def pyplot(purpose: str, extra: str = "plots") -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend, or :class:`~effnet._optional.MissingExtraError` naming ``extra``."""
    require("matplotlib", extra, purpose)
    use_agg()
    return require("matplotlib.pyplot", extra, purpose)


def use_agg() -> None:
    """Agg before pyplot: no display is needed (servers, CI, Ray workers) and no GUI toolkit is imported."""
    import matplotlib

    matplotlib.use("Agg", force=True)


@contextlib.contextmanager
def literal_text(fig: Any) -> Iterator[None]:
    """Around the rendering of ``fig``: its text is drawn as written: class names such as ``a$^$b`` or ``x_{1}``
    are labels, not TeX (matplotlib's mathtext would fail to parse them, or draw something else). Only this
    figure and this block: a library user's own plots keep mathtext (``rcParams`` is restored after)."""
    import matplotlib
    from matplotlib.text import Text

    # Text made during rendering (tick labels) reads the rc value; text made earlier carries its own flag.
    with matplotlib.rc_context({"text.parse_math": False}):
        for text in fig.findobj(Text):
            text.set_parse_math(False)
        yield


def figure_bytes(fig: Any, fmt: str = "png", dpi: int = 100, tight_layout: bool = False) -> bytes:
    """Render ``fig`` as PNG or SVG bytes and close it (pyplot keeps every open figure alive otherwise).
    ``tight_layout`` lays it out first, within :func:`literal_text` too (laying out measures the text)."""
    import io

    if fmt not in MIME:
        raise EffnetError(f"figure format must be one of {sorted(MIME)}, got {fmt!r}")
    buf = io.BytesIO()
    try:
        # metadata without a date or software version: the same figure gives the same bytes
        meta = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
        with literal_text(fig):
            if tight_layout:
                fig.tight_layout()
            fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta)
    finally:
        fig.canvas.figure.clf()
        import matplotlib.pyplot as plt

        plt.close(fig)
    return buf.getvalue()


def write_bytes(path: str | os.PathLike, data: bytes, what: str = "figure") -> Path:
    """Write ``data`` to ``path`` whole (:func:`effnet.fileio.atomic_write`: temporary file, rename; one-line
    error)."""
    from .fileio import atomic_write

    return atomic_write(path, lambda tmp: tmp.write_bytes(data), f"the {what}")


def data_uri(data: bytes, fmt: str) -> str:
    """``data:`` URI of an image, so that an HTML page needs no second file and makes no request."""
    return f"data:{MIME[fmt]};base64,{base64.b64encode(data).decode('ascii')}"
