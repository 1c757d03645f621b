"""The version of the code that writes an artifact: a sha256 of the effnet source files an export runs.

``effnet.__version__`` is the same in every commit, and a commit hash does not exist for a wheel or an
uncommitted tree; the bytes of the modules that build the network, load its weights and write the file do.
The export cache keys on it (a stale artifact is never reused after the code that made it changed) and every
artifact carries it (``code_version`` in its metadata).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

__all__ = ["EXPORT_CODE", "code_fingerprint"]

# What an export's bytes depend on, relative to the effnet package: the network and its padding, the weights
# records, conversion and loading, the model source, the exporters and quantization. A folder means every
# .py file in it. Listed, not discovered from sys.modules, so the fingerprint is the same in every process.
EXPORT_CODE = (
    "specs.py",
    "padding.py",
    "model.py",
    "factory.py",
    "source.py",
    "labels.py",
    "quantize.py",
    "weights",
    "export",
)


@cache
def code_fingerprint() -> str:
    """``sha256:`` + the first 16 hex digits of the sha256 over the names and bytes of :data:`EXPORT_CODE`."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for entry in EXPORT_CODE:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()[:16]
