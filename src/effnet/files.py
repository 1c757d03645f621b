"""THE folder walk: which files under a folder are images, for every command that takes a folder.

``classify``, ``eval``, ``train``, ``quantize --calibration`` and the Ray engine's local discovery all find
their images here, so a folder means the same set of images everywhere:

- recursively, following symlinked folders (``Path.rglob`` on Python < 3.13 does not, and a folder of
  symlinked class folders is a common way to lay out a subset); a symlink back to a folder being walked
  (a loop) is walked once;
- by image extension (:data:`IMAGE_EXTENSIONS`, any case);
- skipping hidden names at every level below the folder given (``.git``, ``.DS_Store``, and macOS
  ``._photo.jpg`` resource-fork companions, which carry an image extension but are not images);
- keeping a broken symlink with an image name, so it is reported as an unreadable image instead of
  vanishing from the count; FIFOs, devices and sockets inside a folder are not images (reading one could
  block forever): only a path named explicitly is read as a stream.

Files named explicitly are always kept, whatever their name, so that a bad file is reported, not skipped.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "STREAM_SCHEMES",
    "is_hidden",
    "is_video",
    "is_live",
    "walk_images",
    "find_images",
    "count_videos",
    "read_list",
    "absolute",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# Videos: found by the same walk where a command takes them (classify); eval and train skip them.
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
_CAMERA = re.compile(r"/dev/video\d+")


def is_live(path: str | os.PathLike[str]) -> bool:
    """A stream URL or a camera (``/dev/videoN``): read as it plays, never walked or stat-ed."""
    text = str(path)
    return text.lower().startswith(STREAM_SCHEMES) or _CAMERA.fullmatch(text) is not None


def is_video(path: str | os.PathLike[str]) -> bool:
    """A video file by its extension (any case), a stream URL or a camera."""
    return is_live(path) or os.path.splitext(str(path))[1].lower() in VIDEO_EXTENSIONS


def is_hidden(name: str) -> bool:
    """A dot name: hidden on Unix, and macOS's ``._*`` AppleDouble files."""
    return name.startswith(".")


def _is_image_entry(entry: os.DirEntry[str], extensions: tuple[str, ...]) -> bool:
    if os.path.splitext(entry.name)[1].lower() not in extensions:
        return False
    try:
        mode = entry.stat(follow_symlinks=True).st_mode
    except OSError:  # a broken symlink (or one we may not follow): reported later as unreadable
        return entry.is_symlink()
    return stat.S_ISREG(mode)


def walk_images(folder: str | os.PathLike[str], *, videos: bool = False) -> list[Path]:
    """Every image below ``folder`` (see the module docstring), sorted, as paths under ``folder``; with
    ``videos=True`` the video files too (:data:`VIDEO_EXTENSIONS`).

    Paths keep the names they were found by (a file in a symlinked folder is ``folder/link/x.jpg``), so
    paths relative to ``folder`` stay what a user sees. A sub-folder that cannot be listed is skipped.
    """
    root = Path(folder)
    found: list[Path] = []
    extensions = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS if videos else IMAGE_EXTENSIONS

    def visit(directory: Path, ancestors: frozenset[tuple[int, int]]) -> None:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if is_hidden(entry.name):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    st = entry.stat(follow_symlinks=True)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key not in ancestors:  # a symlink to a folder above this one: a loop, walked once
                    visit(directory / entry.name, ancestors | {key})
            elif _is_image_entry(entry, extensions):
                found.append(directory / entry.name)

    try:
        st = root.stat()
    except OSError:
        return []
    if stat.S_ISDIR(st.st_mode):
        visit(root, frozenset({(st.st_dev, st.st_ino)}))
    return sorted(found)


def absolute(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute against the working directory, ``..`` left for the filesystem to resolve: after a
    symlink it means the link target's parent, which ``os.path.abspath`` (folding it away as text) gets wrong.
    For an engine that reads the file in another process or on another node (Ray): it names the file that
    opening ``path`` here opens."""
    return str(Path(path).absolute())


def find_images(paths: Iterable[str | os.PathLike[str]], *, videos: bool = False) -> list[Path]:
    """Expand folders (:func:`walk_images`) and keep files named explicitly, in the order given.

    Explicit files are kept whatever their extension or kind, so that a bad file is reported rather than
    silently skipped. ``videos=True``: folders give their videos too (``classify``).
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        out.extend(walk_images(path, videos=videos) if path.is_dir() else [path])
    return out


def count_videos(folder: str | os.PathLike[str]) -> int:
    """Videos below ``folder`` (the same walk): what ``eval`` and ``train`` skip, and say once."""
    return sum(is_video(p) for p in walk_images(folder, videos=True))


def read_list(path: str | os.PathLike[str]) -> str:
    """The text of a list or annotation file (UTF-8, with or without a byte-order mark).

    ``utf-8-sig``: Windows editors (Notepad, Excel's "CSV UTF-8") start the file with a BOM, which plain
    UTF-8 would keep as part of the first line's file name.
    """
    return Path(path).read_text(encoding="utf-8-sig")
