"""The export cache's directories: building under a lock, the entries' info files, listing and pruning.

An entry is built under a temporary ``.building-*`` name and renamed into place in one step, so it is
complete whenever it exists. A builder holds a lock (``.building-*.lock``, flock: released by the OS when
the process dies) for as long as its directory exists, so a directory whose lock is free was left by a
killed build and is removed the next time the cache is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as LockTimeout

from ..source import ModelSource, weights_label
from ..weights.digest import prune_index
from .cache_keys import KEY_SCHEMA, exports_dir

__all__ = [
    "BUILDING",
    "locked_build_dir",
    "remove_stale_builds",
    "ENTRY_INFO",
    "write_entry_info",
    "touch_entry",
    "CacheEntry",
    "list_entries",
    "is_entry_name",
    "prune",
]

BUILDING = ".building-"


@contextlib.contextmanager
def locked_build_dir(root: Path) -> Iterator[Path]:
    """A fresh ``.building-*`` directory in ``root``, locked for as long as it exists; removed at the end."""
    name = f"{BUILDING}{uuid.uuid4().hex[:16]}"
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


def remove_stale_builds(root: Path, failures: list[str] | None = None) -> list[Path]:
    """Remove the ``.building-*`` directories (and lock files) of builders that are gone; return them.

    A directory whose lock can be taken has no live builder: its process was killed mid-build (the OS
    released its flock). One without a lock file predates the lock and is stale too. A symlink among them
    was not made by a builder: it is unlinked, never followed (a lock taken through it would lock, and a
    removal through it would delete, whatever it points at). Whatever cannot be removed is added to
    ``failures`` (one line each) and the rest is still cleaned.
    """
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for path in sorted(root.glob(f"{BUILDING}*")):
        try:
            if path.is_symlink():
                path.unlink()
                removed.append(path)
                continue
            is_lock = path.name.endswith(".lock")
            lock_path = path if is_lock else path.with_name(path.name + ".lock")
            if is_lock and path.with_name(path.name[: -len(".lock")]).exists():
                continue  # handled with its directory
            if lock_path.is_symlink():
                lock_path.unlink()  # not a builder's lock: it never held one
            lock = FileLock(str(lock_path))
            try:
                lock.acquire(timeout=0)
            except LockTimeout:
                continue  # its builder is alive
            try:
                if not is_lock:
                    _remove_tree(path)
                    removed.append(path)
            finally:
                lock.release()
                lock_path.unlink(missing_ok=True)
        except OSError as e:
            if failures is not None:
                failures.append(f"{path}: {e.strerror or e}")
    return removed


def _remove_tree(path: Path) -> None:
    """Delete ``path`` without following symlinks (a link is unlinked); raise if anything stays."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    errors: list[str] = []
    shutil.rmtree(path, onerror=lambda _f, p, exc: errors.append(f"{p}: {exc[1]}"))
    if errors:
        raise OSError(f"could not remove {errors[0]}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))


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
    checkpoint: str | None = None  # the weights file it was built from, as it was named then

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
            "checkpoint": self.checkpoint,
        }


def _tree_size(path: Path) -> int:
    if path.is_symlink():
        return 0  # not followed: what it points at is not the cache's
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def _entry(path: Path) -> CacheEntry:
    info_file = None if path.is_symlink() else _info_file(path)
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
        last_used=(info_file or path).lstat().st_mtime,
        current=key.get("schema") == KEY_SCHEMA,
        checkpoint=info.get("checkpoint") if isinstance(info.get("checkpoint"), str) else None,
    )


# What effnet names an entry: MODEL-KIND-DIGEST (effnet.export.cache, quantize, tflite). Anything else in the
# folder (a user's notes, another tool's files) is not listed, and never pruned.
_ENTRY_NAME = re.compile(
    r"^[a-z0-9][a-z0-9_.]*(-[a-z0-9_.]+)*-(onnx|openvino|openvino-int8|tflite-[a-z0-9-]+)-[0-9a-f]{20}$"
)


def is_entry_name(name: str) -> bool:
    return bool(_ENTRY_NAME.match(name))


def list_entries(cache_dir: Path | None = None) -> list[CacheEntry]:
    """The finished entries of the export cache, least recently used first (builds in progress are not listed).

    Only what effnet names as an entry; a symlinked entry is listed (and pruned by unlinking it), not entered.
    """
    root = cache_dir or exports_dir()
    if not root.is_dir():
        return []
    entries = [_entry(p) for p in root.iterdir() if is_entry_name(p.name) and (p.is_symlink() or p.is_dir())]
    return sorted(entries, key=lambda e: (e.last_used, e.path.name))


def prune(
    cache_dir: Path | None = None,
    *,
    older_than: float | None = None,
    max_size: int | None = None,
    dry_run: bool = False,
    failures: list[str] | None = None,
) -> list[CacheEntry]:
    """Remove export-cache entries; return the removed (or, ``dry_run``, the would-be-removed) ones.

    Always: entries with an old key (no lookup reaches them), builds left by killed processes, and sha256
    index entries of files that are gone. ``older_than`` (seconds): entries not used for that long.
    ``max_size`` (bytes): then the least recently used entries until the rest fit.
    An entry is first renamed to a ``.building-*`` name (no process can pick it up from there), then deleted;
    a symlinked entry is unlinked. Only entries effnet names (:func:`is_entry_name`) are touched. What could
    not be removed goes to ``failures`` (one line each), and the rest is still pruned.
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
    failed = failures if failures is not None else []
    removed: list[CacheEntry] = []
    for e in doomed:
        try:
            if e.path.is_symlink():
                e.path.unlink()
                removed.append(e)
                continue
            trash = root / f"{BUILDING}pruned-{uuid.uuid4().hex[:16]}"
            try:
                os.rename(e.path, trash)
            except FileNotFoundError:
                continue  # another prune got it
            try:
                _remove_tree(trash)
            except OSError as err:  # counted as not removed, and where its remains are is said
                failed.append(f"{e.path}: {err.strerror or err}; what is left of it is in {trash}")
                continue
            removed.append(e)
        except OSError as err:
            failed.append(f"{e.path}: {err.strerror or err}")
    remove_stale_builds(root, failed)
    try:
        prune_index()
    except OSError as err:
        failed.append(f"the sha256 index: {err.strerror or err}")
    return removed
