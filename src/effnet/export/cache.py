"""The cache of exported artifacts (``$EFFNET_HOME/exports``): the ONNX export, the OpenVINO IR and the INT8 IR.

Entries are keyed by model, weights, options and versions (:func:`cache_key`), built under a temporary
``.building-*`` name and renamed into place in one step, so an entry is complete whenever it exists.
A builder holds a lock (``.building-*.lock``, flock: released by the OS when the process dies) for as long
as its directory exists, so a directory whose lock is free was left by a killed build and is removed the
next time the cache is used.
The INT8 IR made by ``effnet quantize`` lives here too (:func:`int8_model_dir`), so the OpenVINO backend
and quantization share one notion of where an artifact of a source is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from filelock import Timeout as LockTimeout

from .._optional import require
from .._version import __version__
from ..errors import EffnetError
from ..source import ModelSource
from ._common import ExportKind
from .onnx import export_onnx
from .openvino import export_openvino

__all__ = [
    "exports_dir",
    "cache_key",
    "exported_artifact",
    "locked_build_dir",
    "remove_stale_builds",
    "INT8_XML",
    "int8_model_dir",
    "int8_model_path",
]

INT8_XML = "model.xml"


def exports_dir() -> Path:
    """``$EFFNET_HOME/exports`` (or the platform cache directory's ``exports``)."""
    from ..weights.download import default_cache_dir

    return default_cache_dir() / "exports"


def cache_key(kind: ExportKind, source: ModelSource, options: dict[str, Any]) -> dict[str, Any]:
    if source.record is not None:
        weights: dict[str, Any] = {"record": source.record.name, "sha256": source.record.sha256}
    elif source.checkpoint is None:
        raise ValueError("random-init sources have no cache key: their weights differ on every run")
    else:
        st = source.checkpoint.stat()
        # mtime + size instead of hashing: a re-saved checkpoint gets a new mtime, and hashing
        # hundreds of MB on every start would cost what the cache is there to save.
        weights = {"file": str(source.checkpoint.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    versions = {"effnet": __version__, "torch": torch.__version__}
    if kind == "openvino":
        versions["openvino"] = require("openvino", "openvino", "the openvino backend").__version__
    return {
        "kind": kind,
        "model": source.model,
        "weights": weights,
        "preprocess": source.preprocess.to_dict(),
        "options": options,
        "versions": versions,
    }


def _build(kind: ExportKind, source: ModelSource, directory: Path, options: dict[str, Any]) -> Path:
    # Backends feed batches of any size: the cached exports have a dynamic batch unless asked otherwise
    # (the user-facing exports default to the card's static batch 1).
    options = {"batch_size": None, **options}
    if kind == "onnx":
        return export_onnx(source, directory / "model.onnx", progress=False, **options)
    return export_openvino(source, directory, name="model", progress=False, **options)


def _artifact(kind: ExportKind, directory: Path) -> Path:
    return directory / ("model.onnx" if kind == "onnx" else "model.xml")


_BUILDING = ".building-"


@contextlib.contextmanager
def locked_build_dir(root: Path) -> Iterator[Path]:
    """A fresh ``.building-*`` directory in ``root``, locked for as long as it exists; removed at the end."""
    name = f"{_BUILDING}{uuid.uuid4().hex[:16]}"
    lock_path = root / f"{name}.lock"
    lock = FileLock(str(lock_path))
    lock.acquire()  # before the directory exists, so that no cleaner ever sees it unlocked while we build
    building = root / name
    try:
        building.mkdir()
        yield building
    finally:
        shutil.rmtree(building, ignore_errors=True)
        lock.release()
        lock_path.unlink(missing_ok=True)


def remove_stale_builds(root: Path) -> list[Path]:
    """Remove the ``.building-*`` directories (and lock files) of builders that are gone; return them.

    A directory whose lock can be taken has no live builder: its process was killed mid-build (the OS
    released its flock). One without a lock file predates the lock and is stale too.
    """
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for path in sorted(root.glob(f"{_BUILDING}*")):
        is_lock = path.name.endswith(".lock")
        lock_path = path if is_lock else path.with_name(path.name + ".lock")
        if is_lock and path.with_name(path.name[: -len(".lock")]).exists():
            continue  # handled with its directory
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except LockTimeout:
            continue  # its builder is alive
        try:
            if not is_lock:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        finally:
            lock.release()
            lock_path.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def exported_artifact(
    kind: ExportKind, source: ModelSource, *, cache_dir: Path | None = None, **options: Any
) -> Iterator[Path]:
    """Yield the path of an export of ``source`` (``model.onnx`` or ``model.xml``), from the cache if present.

    The cache entry is a directory built under a temporary name and renamed into
    place in one step, so it is complete whenever it exists; concurrent builders
    both succeed and one result is kept. Random-init sources (no checkpoint) and
    unwritable caches get a temporary export, deleted when the block ends.
    """
    root = cache_dir or exports_dir()
    if source.checkpoint is not None:
        key = cache_key(kind, source, options)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        entry = root / f"{source.model}-{kind}-{digest}"
        with contextlib.suppress(OSError):  # a read-only cache still serves what it holds
            remove_stale_builds(root)
        if _artifact(kind, entry).is_file():
            yield _artifact(kind, entry)
            return
        try:
            root.mkdir(parents=True, exist_ok=True)
            build = locked_build_dir(root)
            building = build.__enter__()
        except OSError as e:
            print(
                f"effnet: export cache {root} is not writable ({e.strerror or e}); exporting to a temporary directory",
                file=sys.stderr,
            )
        else:
            try:
                _build(kind, source, building, options)
                (building / "export.json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
                try:
                    os.rename(building, entry)
                except OSError:
                    if not _artifact(kind, entry).is_file():  # not a lost race: a real failure
                        raise
            finally:
                build.__exit__(None, None, None)
            yield _artifact(kind, entry)
            return
    with tempfile.TemporaryDirectory(prefix="effnet-export-") as tmp:
        yield _build(kind, source, Path(tmp), options)


def _int8_key(source: ModelSource) -> str:
    if source.checkpoint is None:
        raise EffnetError(
            "an INT8 model of random-init weights has no cache entry: pass a checkpoint file "
            "(--weights FILE), or an output directory for the quantized IR"
        )
    key = cache_key("openvino", source, {"int8": True})
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def int8_model_dir(source: ModelSource, cache_dir: Path | None = None) -> Path:
    """The export-cache directory of the INT8 IR of ``source``'s weights (it may not exist yet)."""
    return (cache_dir or exports_dir()) / f"{source.model}-openvino-int8-{_int8_key(source)}"


def int8_model_path(source: ModelSource, cache_dir: Path | None = None) -> Path:
    """The cached INT8 IR (``model.xml``) of ``source``, or an error saying how to make it."""
    xml = int8_model_dir(source, cache_dir) / INT8_XML
    if not xml.is_file():
        weights = source.record.name if source.record else str(source.checkpoint)
        raise EffnetError(
            f"no INT8 model of {source.model} ({weights}) in the export cache ({xml.parent}): create it with "
            f"`effnet quantize --model {source.model} --weights {weights} --calibration IMAGE_DIR`"
        )
    return xml
