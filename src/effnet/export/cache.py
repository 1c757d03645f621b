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
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from filelock import Timeout as LockTimeout

from .._optional import require
from .._version import __version__
from ..errors import EffnetError
from ..source import ModelSource, weights_label
from ..weights.digest import file_sha256, prune_index
from ..weights.records import find_record
from ._common import ExportKind
from .onnx import export_onnx
from .openvino import export_openvino

__all__ = [
    "exports_dir",
    "cache_key",
    "key_digest",
    "exported_artifact",
    "locked_build_dir",
    "remove_stale_builds",
    "INT8_XML",
    "int8_model_dir",
    "int8_model_path",
    "int8_cache_key",
    "KEY_SCHEMA",
    "weights_key",
    "CacheEntry",
    "list_entries",
    "prune",
]

INT8_XML = "model.xml"


def exports_dir() -> Path:
    """``$EFFNET_HOME/exports`` (or the platform cache directory's ``exports``)."""
    from ..weights.download import default_cache_dir

    return default_cache_dir() / "exports"


KEY_SCHEMA = 2  # 1 (no "schema" field): keyed by record name or by path + size + mtime, never by content


def weights_key(source: ModelSource) -> dict[str, Any]:
    """What identifies the weights of ``source``: the sha256 of the checkpoint's bytes (from the sha256 index).

    Never the record's name or published digest alone (an effnet-native file's record is ``file:NAME``,
    and every fine-tuning run writes ``RUN/model.safetensors``), never the path or mtime (a checkpoint
    rewritten in place keeps them). A copy of the same file under another name has the same key.
    """
    if source.checkpoint is None:
        raise ValueError("random-init sources have no cache key: their weights differ on every run")
    return {"sha256": file_sha256(source.checkpoint), "size": source.checkpoint.stat().st_size}


def cache_key(kind: ExportKind, source: ModelSource, options: dict[str, Any]) -> dict[str, Any]:
    """Everything that makes an artifact differ: the weights' content, the model and how it is built for
    them (classes, padding, BN eps, key names), the preprocessing folded into it, the export options and
    the versions of the tools that wrote it."""
    record = source.record
    graph: dict[str, Any] = {
        "num_classes": source.num_classes,
        "labels": "imagenet-1k" if record is None else record.labels,
        **{k: v for k, v in source.build_kwargs().items() if k in ("padding", "bn_eps")},
        "embedding_stage": record.embedding_stage if record is not None else None,
        "key_format": record.key_format if record is not None else None,
        # folded into the classifier at load (effnet train's calibration); also in the file's bytes, said here
        "temperature": record.temperature if record is not None else 1.0,
    }
    versions = {"effnet": __version__, "torch": torch.__version__}
    if kind == "onnx":
        versions["onnx"] = require("onnx", "onnx", "the ONNX export").__version__
    if kind == "openvino":
        versions["openvino"] = require("openvino", "openvino", "the openvino backend").__version__
    return {
        "schema": KEY_SCHEMA,
        "kind": kind,
        "model": source.model,
        "weights": weights_key(source),
        "graph": graph,
        "preprocess": source.preprocess.to_dict(),
        "options": options,
        "versions": versions,
    }


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


# The options a cached export is built with unless the caller says otherwise. Backends feed batches of any
# size: the cached exports have a dynamic batch (the user-facing exports default to the card's static
# batch 1). Filled in before keying, so that `fp16=False` and no fp16 option are one entry, not two.
_DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "onnx": {"batch_size": None},
    "openvino": {"batch_size": None, "fp16": False},
}


def _build(kind: ExportKind, source: ModelSource, directory: Path, options: dict[str, Any]) -> Path:
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
    options = {**_DEFAULT_OPTIONS[kind], **options}
    if source.checkpoint is not None:
        key = cache_key(kind, source, options)
        entry = root / f"{source.model}-{kind}-{key_digest(key)}"
        with contextlib.suppress(OSError):  # a read-only cache still serves what it holds
            remove_stale_builds(root)
        if _artifact(kind, entry).is_file():
            touch_entry(entry)
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
                write_entry_info(building, key, source)
                if weights_key(source) != key["weights"]:
                    # The checkpoint changed while it was exported: what was built may be either version.
                    raise EffnetError(
                        f"{source.checkpoint} changed while it was being exported; nothing was cached, run again"
                    )
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


ENTRY_INFO = "export.json"


def write_entry_info(directory: Path, key: dict[str, Any], source: ModelSource) -> None:
    """Write ``export.json`` (the key, and the weights' name for `effnet weights cache list`) into an entry."""
    info = {**key, "weights_label": weights_label(source), "checkpoint": str(source.checkpoint)}
    (directory / ENTRY_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


_INFO_FILES = (ENTRY_INFO, "quantize.json")  # the INT8 IR's entry is written by effnet.quantize


def _info_file(entry: Path) -> Path | None:
    return next((entry / n for n in _INFO_FILES if (entry / n).is_file()), None)


def touch_entry(entry: Path) -> None:
    """Mark an entry as used now (its info file's mtime): what `effnet weights cache prune` ages by."""
    info = _info_file(entry)
    if info is not None:
        with contextlib.suppress(OSError):  # a read-only cache still serves what it holds
            os.utime(info)


def int8_cache_key(source: ModelSource) -> dict[str, Any]:
    """The key of the INT8 IR of ``source`` (the fp32 IR's key with ``int8`` among the options)."""
    if source.checkpoint is None:
        raise EffnetError(
            "an INT8 model of random-init weights has no cache entry: pass a checkpoint file "
            "(--weights FILE), or an output directory for the quantized IR"
        )
    return cache_key("openvino", source, {**_DEFAULT_OPTIONS["openvino"], "int8": True})


def _int8_key(source: ModelSource) -> str:
    return key_digest(int8_cache_key(source))


def int8_model_dir(source: ModelSource, cache_dir: Path | None = None) -> Path:
    """The export-cache directory of the INT8 IR of ``source``'s weights (it may not exist yet)."""
    return (cache_dir or exports_dir()) / f"{source.model}-openvino-int8-{_int8_key(source)}"


def int8_model_path(source: ModelSource, cache_dir: Path | None = None) -> Path:
    """The cached INT8 IR (``model.xml``) of ``source``, or an error saying how to make it."""
    xml = int8_model_dir(source, cache_dir) / INT8_XML
    if xml.is_file():
        touch_entry(xml.parent)
    else:
        # A record's name is a valid --weights value; a local file's (an effnet-native "file:NAME") is not.
        weights = source.record.name if source.record and find_record(source.record.name) else str(source.checkpoint)
        raise EffnetError(
            f"no INT8 model of {source.model} ({weights}) in the export cache ({xml.parent}): create it with "
            f"`effnet quantize --model {source.model} --weights {weights} --calibration IMAGE_DIR`"
        )
    return xml


@dataclass(frozen=True)
class CacheEntry:
    """One directory of the export cache, for `effnet weights cache list` and `prune`."""

    path: Path
    kind: str  # onnx, openvino, openvino-int8
    model: str | None
    weights: str | None  # the weights' name when it was built (record, or file name)
    sha256: str | None  # the sha256 of the weights it was built from
    size: int  # bytes on disk
    last_used: float  # seconds since the epoch
    current: bool  # keyed by content (this key schema); False: an old entry no lookup will ever reach

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "model": self.model,
            "weights": self.weights,
            "sha256": self.sha256,
            "size": self.size,
            "last_used": self.last_used,
            "current": self.current,
        }


def _tree_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def _entry(path: Path) -> CacheEntry:
    info_file = _info_file(path)
    info: dict[str, Any] = {}
    if info_file is not None:
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(info_file.read_text())
            info = loaded if isinstance(loaded, dict) else {}
    # An INT8 entry keeps its key under "cache_key" of quantize.json; an export entry is its key.
    key = info.get("cache_key", info) if info_file is not None and info_file.name != ENTRY_INFO else info
    key = key if isinstance(key, dict) else {}
    weights: dict[str, Any] = key["weights"] if isinstance(key.get("weights"), dict) else {}
    parts = path.name.split("-")
    kind = "openvino-int8" if "-openvino-int8-" in path.name else str(key.get("kind") or parts[-2:][0])
    return CacheEntry(
        path=path,
        kind=kind,
        model=key.get("model") or info.get("model"),
        weights=info.get("weights_label") or (info.get("weights") if isinstance(info.get("weights"), str) else None),
        sha256=weights.get("sha256"),
        size=_tree_size(path),
        last_used=(info_file or path).stat().st_mtime,
        current=key.get("schema") == KEY_SCHEMA,
    )


def list_entries(cache_dir: Path | None = None) -> list[CacheEntry]:
    """The finished entries of the export cache, least recently used first (builds in progress are not listed)."""
    root = cache_dir or exports_dir()
    if not root.is_dir():
        return []
    entries = [_entry(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(entries, key=lambda e: (e.last_used, e.path.name))


def prune(
    cache_dir: Path | None = None,
    *,
    older_than: float | None = None,
    max_size: int | None = None,
    dry_run: bool = False,
) -> list[CacheEntry]:
    """Remove export-cache entries; return the removed (or, ``dry_run``, the would-be-removed) ones.

    Always: entries with an old key (no lookup reaches them), builds left by killed processes, and sha256
    index entries of files that are gone. ``older_than`` (seconds): entries not used for that long.
    ``max_size`` (bytes): then the least recently used entries until the rest fit.
    An entry is first renamed to a ``.building-*`` name (no process can pick it up from there), then deleted.
    """
    root = cache_dir or exports_dir()
    now = time.time()
    entries = list_entries(root)
    doomed = [e for e in entries if not e.current or (older_than is not None and now - e.last_used > older_than)]
    if max_size is not None:
        kept = [e for e in entries if e not in doomed]
        total = sum(e.size for e in kept)
        for e in kept:  # least recently used first
            if total <= max_size:
                break
            doomed.append(e)
            total -= e.size
    if dry_run:
        return doomed
    for e in doomed:
        trash = root / f"{_BUILDING}pruned-{uuid.uuid4().hex[:16]}"
        try:
            os.rename(e.path, trash)
        except FileNotFoundError:
            continue  # another prune got it
        shutil.rmtree(trash, ignore_errors=True)
    with contextlib.suppress(OSError):
        remove_stale_builds(root)
        prune_index()
    return doomed
