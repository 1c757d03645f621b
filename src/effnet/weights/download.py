"""Download pretrained weight files into the per-user cache, safely.

Standard library HTTP (urllib) only, plus tqdm for the progress bar. Guarantees:

* a file at ``dest`` has always been verified (size + sha256): the body goes to
  ``<dest>.part`` and is renamed with ``os.replace`` (atomic) only after it checks out;
* an interrupted transfer is resumed with an HTTP ``Range`` request rather than restarted;
* transient failures (5xx, 408, 429, network errors) are retried with exponential
  backoff, permanent ones (other 4xx) and corrupt files move on to the next mirror;
* when everything fails, the error says what went wrong for each URL and how to
  provide the file by hand (``--weights FILE``), which matters on offline machines.
"""

from __future__ import annotations

import errno
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

from tqdm import tqdm

from ..errors import WeightsUnavailableError

__all__ = ["DownloadError", "ChecksumError", "default_cache_dir", "sha256_file", "verify_file", "download"]

_CHUNK = 1 << 16


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


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the lowercase hex sha256 of the file at ``path``, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path, sha256: str, size: int | None) -> None:
    """Raise ChecksumError unless ``path`` has ``size`` bytes (None: skip) and matching sha256.

    ``sha256`` is either the full 64-hex digest or a prefix of it (timm names files
    ``name-<first 8 hex of sha256>.pth``). The size is checked first because it is cheap.
    """
    path = Path(path)
    want = sha256.strip().lower()
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(
            f"{path}: size mismatch: expected {size} bytes, got {actual_size} (expected sha256 {want}...)"
        )
    digest = sha256_file(path)
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


def _fetch_once(url: str, part: Path, size: int | None, timeout: float, progress: bool) -> None:
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
                desc=part.name[:-5],
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
) -> Path:
    """Make sure a verified copy of the file is at ``dest`` and return ``dest``.

    Tries each URL in ``urls`` in order (mirrors); each one gets ``1 + retries`` attempts,
    sleeping ``backoff * 2**attempt`` seconds between them. See the module docstring for
    the guarantees. Raises ChecksumError if some mirror served bytes that failed
    verification, else DownloadError, listing every URL's last error.
    """
    dest = Path(dest)
    if dest.exists():
        try:
            verify_file(dest, sha256, size)
            return dest
        except ChecksumError:
            dest.unlink()  # never leave a bad file where the loader would pick it up
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    offline = corrupt = False
    for url in urls:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch_once(url, part, size, timeout, progress)
            except _Permanent as e:
                failures.append(f"{url}: {e}")
                break
            except (OSError, http.client.HTTPException) as e:  # URLError, resets, timeouts
                why, off = _describe(e)
                offline |= off
                # A host name that does not resolve will not resolve a second later either.
                unresolved = isinstance(getattr(e, "reason", e), socket.gaierror)
                if attempt == retries or unresolved:
                    failures.append(f"{url}: {why} (after {attempt + 1} attempt{'s' if attempt else ''})")
                    break
                continue
            try:
                verify_file(part, sha256, size)
            except ChecksumError as e:
                # Do not resume a corrupt file: drop it; this mirror is wrong, try the next one.
                part.unlink(missing_ok=True)
                failures.append(f"{url}: {e}")
                corrupt = True
                break
            os.replace(part, dest)  # atomic: dest is either absent or complete and verified
            return dest
    size_txt = f"{size} bytes" if size is not None else "size unknown"
    msg = (
        f"could not download {dest.name}:\n"
        + ("\n".join(f"  - {f}" for f in failures) or "  (no URL to download from)")
        + f"\nplace the file at {dest} (sha256 starts with {sha256[:8].lower()}, {size_txt})"
        " or pass --weights FILE"
    )
    if offline:
        msg += "\nno network access: this machine could not reach any download server"
    raise (ChecksumError if corrupt else DownloadError)(msg)
