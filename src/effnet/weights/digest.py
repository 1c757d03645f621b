"""The sha256 of a local weights file, remembered in a small sidecar index so it is hashed once per change.

Everything cached from a weights file (the ONNX export, the OpenVINO IR, the INT8 IR) is keyed by the
sha256 of its bytes (:mod:`effnet.export.cache`), and hashing 100+ MB at every start would cost what the
cache saves. ``$EFFNET_HOME/sha256-index/`` holds one small JSON entry per resolved path:
(path, device, inode, size, mtime_ns, ctime_ns) -> sha256. An entry is used only while every one of those
is unchanged; anything else (a file rewritten in place with the same size and a restored mtime still gets
a new ctime, which no user call can set back; a file replaced by a rename gets a new inode) hashes the
file again.

Concurrency: entries are written to a temporary file and renamed into place (a reader sees a whole entry
or none), and a lock per entry (filelock) makes two processes that need the same new digest hash it once.
A file changed within one file-system timestamp tick of being hashed is "racily clean" (git's term): its
entry is not kept, because a second change in that same tick would not show in the stat fields.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

from filelock import FileLock

from ..errors import CheckpointError
from .download import default_cache_dir, sha256_file

__all__ = ["INDEX_DIR", "index_dir", "file_sha256", "prune_index"]

INDEX_DIR = "sha256-index"
_FORMAT = "effnet.sha256-index/1"
_ATTEMPTS = 3  # a file that keeps changing while it is read is an error, not an endless loop


def index_dir(cache_dir: Path | None = None) -> Path:
    """``$EFFNET_HOME/sha256-index`` (or under ``cache_dir``)."""
    return (cache_dir or default_cache_dir()) / INDEX_DIR


def _stat_key(path: Path) -> dict[str, int | str]:
    st = os.stat(path)
    return {
        "path": str(path),
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def _entry_path(root: Path, path: Path) -> Path:
    return root / f"{hashlib.sha256(str(path).encode()).hexdigest()[:32]}.json"


def _read_entry(entry: Path, stat: dict[str, int | str]) -> str | None:
    try:
        obj = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict) or obj.get("format") != _FORMAT or obj.get("stat") != stat:
        return None
    digest = obj.get("sha256")
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def _write_entry(entry: Path, stat: dict[str, int | str], digest: str) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{entry.name}.", suffix=".tmp", dir=entry.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"format": _FORMAT, "stat": stat, "sha256": digest}, f, sort_keys=True)
        os.replace(tmp, entry)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # Racily clean (git's index has the same rule): when the file's last change is not strictly older than
    # the entry, by the file system's own clock, another change in the same tick could hide behind equal
    # stat fields. Drop the entry; the next use hashes again, and by then the file is old enough.
    if os.stat(entry).st_mtime_ns <= max(int(stat["mtime_ns"]), int(stat["ctime_ns"])):
        entry.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike, *, cache_dir: Path | None = None) -> str:
    """The lowercase hex sha256 of the file at ``path``, from the index when the file is unchanged.

    An unwritable cache only means no entry is kept: the digest is always returned.
    """
    resolved = Path(path).resolve()
    root = index_dir(cache_dir)
    entry = _entry_path(root, resolved)
    stat = _stat_key(resolved)
    if (digest := _read_entry(entry, stat)) is not None:
        return digest
    lock: FileLock | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(entry.with_suffix(".lock")))
        lock.acquire()
    except OSError:
        lock = None  # a read-only cache: hash without a lock or an entry
    try:
        for _ in range(_ATTEMPTS):
            stat = _stat_key(resolved)
            if (digest := _read_entry(entry, stat)) is not None:  # the process we waited for hashed it
                return digest
            digest = sha256_file(resolved)
            if _stat_key(resolved) != stat:
                continue  # changed while being read: the digest may mix two versions
            with contextlib.suppress(OSError):
                _write_entry(entry, stat, digest)
            return digest
    finally:
        if lock is not None:
            lock.release()
    raise CheckpointError(f"{resolved} kept changing while its sha256 was computed ({_ATTEMPTS} attempts)")


def prune_index(cache_dir: Path | None = None) -> int:
    """Remove the entries whose file is gone or changed (a stale entry is never used, only kept); return how many."""
    root = index_dir(cache_dir)
    removed = 0
    for entry in sorted(root.glob("*.json")) if root.is_dir() else []:
        try:
            obj = json.loads(entry.read_text())
            stat = obj["stat"]
            current = _stat_key(Path(stat["path"]))
        except FileNotFoundError:  # the file is gone: nobody hashes it any more, its lock file can go too
            current, stat = None, True
            entry.with_suffix(".lock").unlink(missing_ok=True)
        except (OSError, ValueError, KeyError, TypeError):
            current, stat = None, True
        if current != stat:
            entry.unlink(missing_ok=True)
            removed += 1
    return removed
