"""Writing files safely: the one atomic-write helper, the writability check done before long work, and the
one-line messages for what a disk can refuse (read-only, full, a file where a folder should be).

Every writer of a file a user keeps (effnet-native checkpoints, exports, reports, training checkpoints, Ray
outputs) goes through :func:`atomic_write`, so each gets the same guarantees: the file is the old one, the new
one or absent, never half-written; its permissions follow the umask like any file the user creates
(``tempfile.mkstemp`` would leave 0600 after the rename); a disk error is an :class:`EffnetError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from .errors import EffnetError

__all__ = [
    "atomic_write",
    "check_replaceable_dir",
    "free_bytes",
    "new_output_dir",
    "temp_dir",
    "whole_dir",
    "writable_dir",
    "write_error",
]


def free_bytes(path: Path) -> int | None:
    """Bytes free for an unprivileged writer on ``path``'s filesystem (None if it cannot be told)."""
    for p in (path, *path.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def write_error(e: BaseException, target: Path, what: str, needed: int | None = None) -> EffnetError:
    """One line for a failed write of ``what`` to ``target``.

    OSError says its own reason (``strerror``). Libraries that write through C++ streams (OpenVINO's
    ``save_model``) lose errno and raise ``RuntimeError("basic_ios::clear: iostream error")``; when the
    filesystem has less room than the write needed (``needed`` bytes, or none at all), that is the reason,
    so say it as the OS would.
    """
    if isinstance(e, OSError):
        reason = e.strerror or str(e)
    else:
        reason = str(e)
        free = free_bytes(target)
        if free is not None and (free == 0 or (needed is not None and free < needed)):
            room = f"{_megabytes(free)} free" + (f", about {_megabytes(needed)} needed" if needed else "")
            reason = f"{os.strerror(errno.ENOSPC)} ({room})"
    return EffnetError(f"cannot write {what} {target}: {reason}")


def _made_dirs(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; return the ones this call created (deepest first)."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_if_empty(dirs: list[Path]) -> None:
    for d in dirs:  # deepest first
        with contextlib.suppress(OSError):
            d.rmdir()


def _check_dir(directory: Path, what: str, hint: str = "") -> list[Path]:
    created: list[Path] = []
    try:
        created = _made_dirs(directory)
        probe = directory / f".effnet-probe-{secrets.token_hex(6)}"
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError):
        _remove_if_empty(created)
        blocker = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), directory)
        raise EffnetError(f"cannot write {what} to {directory}: {blocker} is not a directory{hint}") from None
    except OSError as e:
        _remove_if_empty(created)
        raise EffnetError(f"cannot write {what} to {directory}: {e.strerror or e}{hint}") from None
    return created


def writable_dir(directory: Path, what: str) -> Path:
    """Create ``directory`` if needed and prove it is writable, before minutes of work are spent."""
    _check_dir(Path(directory), what)
    return Path(directory)


@contextlib.contextmanager
def new_output_dir(directory: str | os.PathLike, what: str, hint: str = "") -> Iterator[Path]:
    """:func:`writable_dir`, and if the block fails, remove the folders it created (when still empty):
    a failed export or quantization leaves no empty output folder behind. ``hint`` ends the error line."""
    path = Path(directory)
    created = _check_dir(path, what, hint)
    try:
        yield path
    except BaseException:
        _remove_if_empty(created)
        raise


def atomic_write(target: str | os.PathLike, write: Callable[[Path], object], what: str) -> Path:
    """``write(tmp)`` into a fresh file next to ``target``, then rename it over ``target``.

    A new file gets mode 0666 minus the umask (as ``open()`` would create ``target``), whatever mode the writer
    used; an existing file keeps its mode. A symlinked ``target`` is written through: the link stays, and the
    file it points to is replaced (atomically, in its own folder). An OSError (disk full, read-only, not a
    folder) becomes one :class:`EffnetError` line naming ``target``; the temporary file never survives.
    """
    target = Path(target)
    if target.is_symlink():  # written through: the link stays a link, the file it points to gets the bytes
        target = Path(os.path.realpath(target))
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.part"
    try:
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileNotFoundError:
            raise EffnetError(f"cannot write {what} {target}: folder {target.parent} does not exist") from None
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)  # 0666 minus the umask, as open() gives a new file
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(os.stat(target).st_mode)  # an existing file keeps its mode (a 0600 stays 0600)
        write(tmp)
        # Some writers replace the file they are given by one of their own, 0600 (safetensors does).
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as e:
        raise write_error(e, target, what) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return target


def temp_dir(parent: Path, prefix: str, suffix: str = "") -> Path:
    """A fresh folder in ``parent`` with the umask's mode (``tempfile.mkdtemp`` makes it 0700), for output
    that is renamed into place as a whole."""
    while True:
        path = parent / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            path.mkdir(mode=0o777)
            return path
        except FileExistsError:
            continue


def check_replaceable_dir(directory: str | os.PathLike, marker: str, what: str, owned: Collection[str] = ()) -> Path:
    """Before the work: ``directory`` can be written whole by :func:`whole_dir` — its parent is writable, and
    it is absent, empty, or an earlier output of the same kind (it holds ``marker``) holding only the names
    such an output writes (``marker`` and ``owned``), never a user's folder nor a user's file put into an
    earlier output (replacing the folder would delete it). A mount point is refused: the rename that puts the
    new folder in its place cannot replace one (EBUSY), which would show only after the work."""
    path = Path(directory)
    real = Path(os.path.realpath(path)) if path.is_symlink() else path  # whole_dir writes a symlink through
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise EffnetError(f"cannot write {what} to {path}: it exists and is not a folder")
        if os.path.ismount(real):
            raise EffnetError(
                f"cannot write {what} to {path}: it is a mount point, and the output is written whole into a new "
                f"folder that then takes its place, which a mount point cannot be; give a folder inside it "
                f"(e.g. {path / 'report'})"
            )
        names = sorted(p.name for p in path.iterdir())
        if names and marker not in names:
            raise EffnetError(
                f"cannot write {what} to {path}: the folder holds other files (no {marker}); give a new or empty folder"
            )
        foreign = [n for n in names if n != marker and n not in owned]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise EffnetError(
                f"cannot write {what} to {path}: the folder holds other files ({shown}) that would be lost when "
                "it is replaced; move them away or give a new or empty folder"
            )
    writable_dir(real.parent, what)
    return path


@contextlib.contextmanager
def whole_dir(directory: str | os.PathLike, what: str) -> Iterator[Path]:
    """A fresh folder beside ``directory`` to write into; when the block succeeds it takes ``directory``'s
    place whole (an earlier one is removed only after), so the folder never mixes two runs. When the block
    fails, the fresh folder is removed and ``directory`` is as it was. A symlinked ``directory`` is written
    through."""
    target = Path(directory)
    if target.is_symlink():  # written through, like atomic_write: the link stays, the folder it names is replaced
        target = Path(os.path.realpath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = temp_dir(target.parent, f".{target.name}.", ".part")
    try:
        yield fresh
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.{secrets.token_hex(6)}.old"
            os.rename(target, old)
        os.rename(fresh, target)
    except OSError as e:
        shutil.rmtree(fresh, ignore_errors=True)
        raise write_error(e, target, what) from None
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
