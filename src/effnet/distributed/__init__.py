"""effnet on a Ray cluster: batch inference with Ray Data, and the HTTP server as a Ray Serve deployment.

The only part of effnet that imports Ray (the optional extra ``effnet[ray]``). Importing this package does
not import Ray; :func:`classify` and the modules below do.

- ``inputs``: inputs (folders, files, URIs pyarrow reads, ``--from-list``) -> a dataset of file bytes;
- ``outputs``: the outputs (JSON lines, Parquet), written atomically;
- ``data``: the pipeline (decode tasks -> an actor pool of backends) and :func:`classify`;
- ``jobs``: what ``effnet classify|eval --engine ray`` run (cluster connection, weights shipping, summary);
- ``embed``: ``effnet audit --engine ray``'s embedding pass (the driver keeps the cache and the checks);
- ``serve``: ``effnet serve --engine ray``;
- ``placement``: where work runs (device, batch, pool size), decided from the request and the cluster, free of Ray;
- ``worker``: what one worker computes, free of Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._optional import require

if TYPE_CHECKING:  # pragma: no cover
    from .data import classify

__all__ = ["EXTRA", "check_installed", "classify"]

EXTRA = "ray"


def check_installed(purpose: str) -> None:
    """Raise :class:`effnet.EffnetError` naming ``pip install 'effnet[ray]'`` when Ray Data or pyarrow is missing."""
    for module in ("pyarrow", "ray", "ray.data", "psutil"):
        require(module, EXTRA, purpose)


def __getattr__(name: str) -> Any:
    # Lazy, so `import effnet.distributed` works without Ray and the first use names the extra to install.
    if name == "classify":
        check_installed("effnet.distributed.classify")
        from . import data

        return data.classify
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
