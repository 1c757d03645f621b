"""Input URIs of a Ray run: which entries are URIs, their filesystem (pyarrow's), and the images under a prefix.

Used by the driver to expand its inputs (:mod:`effnet.distributed.inputs`), by the read tasks to open them,
and by the outputs (:mod:`effnet.distributed.outputs`) to tell a URI destination from a local one.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from ..errors import EffnetError
from ..files import IMAGE_EXTENSIONS

__all__ = ["is_uri", "list_uri_folder", "local_path", "scheme_prefix", "uri_filesystem"]


def is_uri(text: str) -> bool:
    return "://" in text


def uri_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:  # http: its message repeats the URI
        why = "no http(s)" if uri[:4].lower() == "http" else e
        raise EffnetError(f"{uri}: not a URI pyarrow can read ({why})") from None


def scheme_prefix(uri: str) -> str:
    """What Ray's reader drops from a URI's paths ('s3://'), put back so rows name what the user gave."""
    scheme = uri.split("://", 1)[0]
    return "" if scheme == "file" else f"{scheme}://"


def local_path(entry: str) -> str | None:
    """The local path an input names (a plain path or a ``file://`` URI), or None for a cluster URI."""
    if entry.startswith("file://"):
        return entry[len("file://") :]
    return None if is_uri(entry) else entry


def list_uri_folder(uri: str) -> list[str] | None:
    """The image files under a URI prefix (by extension, recursively, sorted), or None if it is no folder."""
    fs, inner = uri_filesystem(uri)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return None
    prefix = scheme_prefix(uri)
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    files = (i.path for i in infos if i.type == pafs.FileType.File)
    return sorted(prefix + f for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
