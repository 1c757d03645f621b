"""Download pretrained weight files into the per-user cache, safely.

Standard library HTTP (urllib) only, plus tqdm for the progress bar and filelock. Guarantees:

* a file at ``dest`` has always been verified (size + sha256): the body goes to a
  ``.part`` file of its own per URL (``<dest>.<sha1(url)[:8]>.part``: bytes from two
  mirrors are never spliced together) and is renamed with ``os.replace`` (atomic) only
  after it checks out;
* one process at a time downloads a given file: an inter-process lock (``<dest>.lock``)
  is held while it does, and whoever waited for it finds the verified file and returns;
* an interrupted transfer is resumed with an HTTP ``Range`` request rather than restarted;
* a ``.part`` that fails verification (a stale or corrupt resume, or bad bytes on the
  wire) is deleted and that URL tried once more from byte 0 before the next mirror;
* transient failures (5xx, 408, 429, network errors) are retried with exponential
  backoff, permanent ones (other 4xx) move on to the next mirror;
* ``EFFNET_OFFLINE=1`` (the CLI's ``--offline``) makes a download fail at once, without
  touching the network, with the same message as a machine that has no network;
* when everything fails, the error says what went wrong for each URL and how to
  provide the file by hand (``--weights FILE``), which matters on offline machines.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock
from filelock import Timeout as LockTimeout
from tqdm import tqdm

from ..errors import EffnetError, WeightsUnavailableError
from ..fileio import writable_dir

__all__ = [
    "OFFLINE_ENV",
    "DownloadError",
    "ChecksumError",
    "default_cache_dir",
    "offline",
    "part_path",
    "sha256_file",
    "verify_file",
    "download",
    "cached_status",
]

_CHUNK = 1 << 16
OFFLINE_ENV = "EFFNET_OFFLINE"
_TRUE = ("1", "true", "yes", "on")


class DownloadError(WeightsUnavailableError):
    """Every URL failed (network, HTTP or checksum), after retries and mirrors."""


class ChecksumError(DownloadError):
    """A file's size or sha256 does not match what was expected."""


class _Permanent(Exception):
    """Internal: this URL will not work (e.g. 404); go to the next mirror without retrying."""


def default_cache_dir() -> Path:
    """Return ``$EFFNET_HOME``, else ``$XDG_CACHE_HOME/effnet``, else ``~/.cache/effnet``."""
    if os.environ.get("EFFNET_HOME"):
        return Path(os.environ["EFFNET_HOME"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "effnet"
    return Path.home() / ".cache" / "effnet"


def offline() -> bool:
    """True when ``$EFFNET_OFFLINE`` asks for no network access (1, true, yes or on)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def part_path(dest: Path, url: str) -> Path:
    """The partial file of ``dest`` downloaded from ``url``: one per URL, so mirrors never share bytes."""
    tag = hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()[:8]
    return dest.with_name(f"{dest.name}.{tag}.part")


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the lowercase hex sha256 of the file at ``path``, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path, sha256: str, size: int | None, *, digest: str | None = None) -> None:
    """Raise ChecksumError unless ``path`` has ``size`` bytes (None: skip) and matching sha256.

    ``sha256`` is either the full 64-hex digest or a prefix of it (timm names files
    ``name-<first 8 hex of sha256>.pth``). The size is checked first because it is cheap.
    ``digest``: the file's sha256 when the caller already has it (:func:`effnet.weights.digest.file_sha256`).
    """
    path = Path(path)
    want = sha256.strip().lower()
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(
            f"{path}: size mismatch: expected {size} bytes, got {actual_size} (expected sha256 {want}...)"
        )
    digest = digest or sha256_file(path)
    if not (digest == want if len(want) == 64 else digest.startswith(want)):
        raise ChecksumError(
            f"{path}: sha256 mismatch: expected {want}{'' if len(want) == 64 else '...'}"
            f", got {digest} (size: expected {size}, got {actual_size} bytes)"
        )


def _user_agent() -> str:
    from .._version import __version__

    return f"effnet/{__version__}"


def _describe(exc: BaseException) -> tuple[str, bool]:
    """Human-readable reason for a failure, and whether it looks like being offline."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}", False
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    offline = isinstance(reason, (socket.gaierror, ConnectionRefusedError)) or (
        isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)
    )
    return f"{type(reason).__name__}: {reason}", offline


def _fetch_once(url: str, part: Path, size: int | None, timeout: float, progress: bool, desc: str) -> None:
    """One attempt to complete ``part`` from ``url``, resuming whatever it already holds.

    Raises _Permanent for errors retrying cannot fix; anything else is worth a retry.
    On a dropped connection the bytes received so far stay in ``part`` for the next attempt.
    """
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:  # cannot be a prefix of the right file
        part.unlink()
        offset = 0
    headers = {"User-Agent": _user_agent()}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset and offset == size:
            return  # nothing left to send: the part is complete (verified by the caller)
        if e.code == 416:  # our Range made no sense to the server: start over next time
            part.unlink(missing_ok=True)
            raise
        if 400 <= e.code < 500 and e.code not in (408, 429):
            raise _Permanent(f"HTTP {e.code} {e.reason}") from e
        raise
    with resp:
        if resp.status == 206:
            # Content-Range: bytes <start>-<end>/<total>; append only if it starts where we stopped.
            crange = resp.headers.get("Content-Range", "")
            start = crange.split()[-1].split("-")[0] if crange.startswith("bytes ") else ""
            if start != str(offset):
                part.unlink(missing_ok=True)
                raise http.client.HTTPException(f"bad Content-Range {crange!r} for offset {offset}")
            mode = "ab"
        else:  # 200: the server ignored Range and sends the whole file, so restart from zero
            offset, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else size
        got = 0
        with (
            open(part, mode) as f,
            tqdm(
                total=expected,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                file=sys.stderr,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())  # the data must be on disk before the rename makes it official
        # urllib returns EOF (not an error) when the peer closes early: check the length ourselves.
        if length is not None and got < int(length):
            raise http.client.IncompleteRead(b"", int(length) - got)


def download(
    urls: Sequence[str],
    dest: Path,
    sha256: str,
    size: int | None,
    *,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
    backoff: float = 1.0,
    lock_timeout: float = 3600.0,
) -> Path:
    """Make sure a verified copy of the file is at ``dest`` and return ``dest``.

    Tries each URL in ``urls`` in order (mirrors); each one gets ``1 + retries`` attempts,
    sleeping ``backoff * 2**attempt`` seconds between them, plus one fresh start from byte 0
    when its bytes fail verification. See the module docstring for the guarantees. Waits up
    to ``lock_timeout`` seconds for another process downloading the same file. Raises
    ChecksumError if some mirror served bytes that failed verification, else DownloadError,
    listing every URL's last error.
    """
    dest = Path(dest)
    # dest is only ever written by an atomic rename of a verified file: reading it needs no lock.
    corrupt = _cached_problem(dest, sha256, size)
    if dest.exists() and corrupt is None:
        return dest
    if offline():
        why = [f"downloads are disabled: {OFFLINE_ENV}=1 (or --offline) is set"]
        raise DownloadError(_failure_message(dest, sha256, size, why, offline=False, corrupt=corrupt))
    try:
        writable_dir(dest.parent, f"the weights file {dest.name}")
    except EffnetError as e:  # read-only cache, EFFNET_HOME naming a file...: before any byte is fetched
        raise DownloadError(f"{e}; set EFFNET_HOME to a writable folder, or pass --weights FILE") from None
    lock = FileLock(str(dest.with_name(dest.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except LockTimeout:
        if progress:
            print(f"waiting for another process downloading {dest.name} ({lock.lock_file})", file=sys.stderr)
        try:
            lock.acquire(timeout=lock_timeout)
        except LockTimeout:
            raise DownloadError(
                f"could not download {dest.name}: another process has been downloading it for over "
                f"{lock_timeout:g} s (it holds the lock {lock.lock_file})"
            ) from None
    try:
        if _verified(dest, sha256, size, remove_bad=True):  # the process we waited for has downloaded it
            return dest
        return _download_locked(urls, dest, sha256, size, retries, timeout, progress, backoff, corrupt)
    finally:
        lock.release()


def _cached_problem(dest: Path, sha256: str, size: int | None) -> str | None:
    """Why the file at ``dest`` is not the expected one (size, then sha256), or None if it is (or is absent)."""
    if not dest.exists():
        return None
    try:
        verify_file(dest, sha256, size)
    except ChecksumError as e:
        return str(e).removeprefix(f"{dest}: ")
    return None


def _verified(dest: Path, sha256: str, size: int | None, *, remove_bad: bool) -> bool:
    if not dest.exists():
        return False
    try:
        verify_file(dest, sha256, size)
        return True
    except ChecksumError:
        if remove_bad:  # only under the lock: never delete a good file another process just renamed into place
            dest.unlink(missing_ok=True)  # never leave a bad file where the loader would pick it up
        return False


def cached_status(path: Path, sha256: str, size: int | None) -> tuple[str, str]:
    """(status, detail) of a cache file, cheaply: ``not cached``, ``cached``, ``partial`` or ``corrupt``.

    The size is checked when it is known (a file cut short is ``partial``); only files of unknown size are
    hashed, so listing stays fast. ``effnet weights verify`` checks the sha256 of every file.
    """
    if not path.is_file():
        return "not cached", ""
    actual = path.stat().st_size
    if size is not None:
        if actual < size:
            return "partial", f"{actual:,} of {size:,} bytes"
        if actual > size:
            return "corrupt", f"{actual:,} bytes, expected {size:,}"
        return "cached", ""
    problem = _cached_problem(path, sha256, size)
    return ("corrupt", problem) if problem else ("cached", "")


def _download_locked(
    urls: Sequence[str],
    dest: Path,
    sha256: str,
    size: int | None,
    retries: int,
    timeout: float,
    progress: bool,
    backoff: float,
    corrupt_before: str | None = None,
) -> Path:
    failures: list[str] = []
    offline_seen = corrupt = False
    for url in urls:
        part = part_path(dest, url)
        fresh_start_used = False
        attempt = 0
        while attempt <= retries:
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch_once(url, part, size, timeout, progress, dest.name)
            except _Permanent as e:
                failures.append(f"{url}: {e}")
                break
            except (OSError, http.client.HTTPException) as e:  # URLError, resets, timeouts
                why, off = _describe(e)
                offline_seen |= off
                # A host name that does not resolve will not resolve a second later either.
                unresolved = isinstance(getattr(e, "reason", e), socket.gaierror)
                if attempt == retries or unresolved:
                    failures.append(f"{url}: {why} (after {attempt + 1} attempt{'s' if attempt else ''})")
                    break
                attempt += 1
                continue
            try:
                verify_file(part, sha256, size)
            except ChecksumError as e:
                # Never resume a corrupt file. A stale .part from an earlier run, or bytes damaged on the way,
                # deserve one fresh start from byte 0; a URL that fails twice serves the wrong file: next mirror.
                part.unlink(missing_ok=True)
                if not fresh_start_used:
                    fresh_start_used = True
                    continue
                failures.append(f"{url}: {e} (also after a fresh start from byte 0)")
                corrupt = True
                break
            os.replace(part, dest)  # atomic: dest is either absent or complete and verified
            _remove_stale_parts(dest)
            return dest
    raise (ChecksumError if corrupt else DownloadError)(
        _failure_message(dest, sha256, size, failures, offline=offline_seen, corrupt=corrupt_before, removed=True)
    )


def _remove_stale_parts(dest: Path) -> None:
    """Other mirrors' partial files (and the old shared ``<dest>.part``) are useless once dest is verified."""
    for stale in [*dest.parent.glob(f"{glob.escape(dest.name)}.*.part"), dest.with_name(dest.name + ".part")]:
        stale.unlink(missing_ok=True)


def _failure_message(
    dest: Path,
    sha256: str,
    size: int | None,
    failures: list[str],
    *,
    offline: bool,
    corrupt: str | None = None,
    removed: bool = False,
) -> str:
    size_txt = f"{size} bytes" if size is not None else "size unknown"
    msg = f"could not download {dest.name}:\n" + (
        "\n".join(f"  - {f}" for f in failures) or "  (no URL to download from)"
    )
    if corrupt is not None:
        # The file is there: "place the file at" would send the user looking for a file they already have.
        state = "was corrupt and has been removed" if removed else "is corrupt"
        fix = "download it again" if removed else "delete it and download it again (`effnet weights download`)"
        msg += (
            f"\nthe cached file {dest} {state}: {corrupt}\n{fix}, or replace it with a good copy "
            f"(sha256 starts with {sha256[:8].lower()}, {size_txt}), or pass --weights FILE"
        )
    else:
        msg += f"\nplace the file at {dest} (sha256 starts with {sha256[:8].lower()}, {size_txt})"
        msg += " or pass --weights FILE"
    if offline:
        msg += "\nno network access: this machine could not reach any download server"
    return msg
