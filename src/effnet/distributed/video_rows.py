"""What one Ray worker does with one video, without Ray: classify it as local ``effnet classify`` does, into
frame rows and one summary.

The worker runs :meth:`effnet.predict.Classifier.classify_video` itself, on the file its node reads (a
shared path) or on a temporary copy of the bytes streamed from the driver's node; the rows then name the
video as the user gave it (``name``), and so do the reader's error messages (which named the copy). So the
sampling (``--fps``/``--every``, by timestamps), the rotation, the record's crop, the ``--decode`` rule,
the error rows of a damaged file and the timeline are local classify's own code, not a second copy.

Rows cross the object store as :data:`VIDEO_SCHEMA` (the image rows' columns plus ``frame`` and ``time``);
:func:`frame_row_dict` turns one back into the line local ``effnet classify --json`` prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..labels import Prediction
from ..video import FrameResult, Segment, VideoError, format_time
from .outputs import RESULT_SCHEMA

__all__ = [
    "ROWS_PER_BLOCK",
    "VIDEO_SCHEMA",
    "VideoRequest",
    "VideoSummary",
    "STREAM_LIMIT_BYTES",
    "actor_temp_dir",
    "classify_one",
    "renamed",
    "renamed_summary",
    "frame_result",
    "frame_row_dict",
    "too_big_to_stream",
]

# The most bytes a video streamed from the driver's node (or read from a URI) can have: it travels as one value
# of an Arrow binary column, whose offsets are 32-bit. A bigger file is an error row naming --shared-inputs.
STREAM_LIMIT_BYTES = 2**31 - 1

# The temporary copies of streamed videos: effnet-video-*.mp4, in a folder of the worker process's own,
# effnet-videos-PID, under the node's temp folder (:func:`actor_temp_dir`).
COPY_PREFIX = "effnet-video-"
_FOLDER_PREFIX = "effnet-videos-"

# Frame rows per block an actor yields: rows of a long video reach the output while it is still decoded.
ROWS_PER_BLOCK = 64

# One row per sampled frame (``frame``/``time`` null on the one row of a video that could not be opened,
# as local classify prints ``{"path", "error"}`` then); lists empty and ``error`` set on an error row.
# The images' columns (outputs.RESULT_SCHEMA) with the frame's number and time after the path.
VIDEO_SCHEMA = RESULT_SCHEMA.insert(1, pa.field("frame", pa.int64())).insert(2, pa.field("time", pa.float64()))


@dataclass(frozen=True)
class VideoRequest:
    """How every video of a job is classified: local classify's video flags, as given."""

    fps: float | None = None
    every: int | None = None
    decode: str = "reduced"
    top_k: int = 5
    batch_size: int = 1
    segments: int | None = None  # the smoothing window of --segments; None: no timeline
    # entry (absolute) -> the paths as the user gave it, one per time it was given (videos.names_by_entry)
    names: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class VideoSummary:
    """One video, as local classify summarizes it (and a little more: sampled frames, duration, decode time)."""

    path: str
    classified: int = 0
    decoded: int = 0
    sampled: int = 0
    width: int = 0
    height: int = 0
    duration: float | None = None  # seconds, as the file states it
    decode_seconds: float = 0.0  # the reader thread's busy time: demux, decode, convert, crop
    seconds: float = 0.0  # from the first frame asked for to the last row (local's frames/s denominator)
    error: str | None = None  # the error row's message, if the video ended with one
    opened: bool = True  # False: the video could not be opened (one error row, no summary line locally)
    segments: list[Segment] | None = None
    node: str = ""

    def line(self) -> str:
        """The summary line local classify prints on stderr, with the sampled frames, the duration and the
        decode share after it."""
        rate = self.classified / self.seconds if self.seconds > 0 else 0.0
        parts = [
            f"{self.classified} frames classified of {self.decoded} decoded ({self.width}x{self.height}, "
            f"{rate:.1f} frames/s)",
            f"{self.sampled} sampled",
        ]
        if self.duration is not None:
            parts.append(f"{format_time(self.duration)} of video")
        if self.seconds > 0:
            parts.append(f"decode {self.decode_seconds:.1f} s of {self.seconds:.1f} s")
        if self.node:
            parts.append(f"on node {self.node}")
        return f"effnet: {self.path}: " + "; ".join(parts)


def too_big_to_stream(entries: list[str]) -> dict[str, str]:
    """The local files among ``entries`` too big to stream (:data:`STREAM_LIMIT_BYTES`), with the message of
    their error row; checked by the driver, before any work, from the size it sees."""
    out: dict[str, str] = {}
    for entry in entries:
        if "://" in entry and not entry.startswith("file://"):
            continue
        try:
            size = os.stat(entry.removeprefix("file://")).st_size
        except OSError:
            continue  # its read gives the error row
        if size > STREAM_LIMIT_BYTES:
            out[entry] = (
                f"{entry}: {size / 2**30:.1f} GiB, more than a video streamed from the driver's node can be "
                f"(2 GiB): put it where every node sees it and add --shared-inputs"
            )
    return out


def actor_temp_dir(root: str | None = None) -> str:
    """This worker process's folder for the copies of streamed videos: ``effnet-videos-PID`` under ``root``
    (the node's temp folder). A worker killed mid-video (SIGKILL, OOM, its node's raylet stopping it) runs no
    ``finally``, so its copy would stay for ever; instead each worker, as it starts, removes the folders of the
    workers on this node that are gone (their PID no longer runs) and empties its own (a PID reused after a
    killed worker). A live worker's copies are never touched: it is the only one to write in its folder."""
    base = Path(root or tempfile.gettempdir())
    for old in base.glob(_FOLDER_PREFIX + "*"):
        pid = old.name.removeprefix(_FOLDER_PREFIX)
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    mine = base / f"{_FOLDER_PREFIX}{os.getpid()}"
    mine.mkdir(exist_ok=True)
    for stale in mine.glob(COPY_PREFIX + "*"):
        with contextlib.suppress(OSError):
            stale.unlink()
    return str(mine)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal sent: only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


def renamed(table: pa.Table, name: str, other: str) -> pa.Table:
    """A video's rows under another of its names (the same video given twice): ``path`` and the errors."""
    errors = [e.replace(name, other) if e is not None else None for e in table.column("error").to_pylist()]
    table = table.set_column(table.schema.get_field_index("path"), "path", pa.array([other] * len(table), pa.string()))
    return table.set_column(table.schema.get_field_index("error"), "error", pa.array(errors, pa.string()))


def renamed_summary(summary: VideoSummary, name: str, other: str) -> VideoSummary:
    """``summary`` under another name of its video (its error message too)."""
    error = summary.error.replace(name, other) if summary.error is not None else None
    return dataclasses.replace(summary, path=other, error=error)


def _columns(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=VIDEO_SCHEMA)


def _row(r: FrameResult, error: str | None = None) -> dict[str, Any]:
    p = r.predictions
    return {
        "path": r.path,
        "frame": r.frame,
        "time": r.time,
        "class_index": [x.class_index for x in p],
        "synset": [x.synset for x in p],
        "label": [x.label for x in p],
        "probability": [x.probability for x in p],
        "error": error if error is not None else r.error,
    }


def _error_row(name: str, error: str) -> dict[str, Any]:
    empty: list[Any] = []
    return {"path": name, "frame": None, "time": None, "class_index": empty, "synset": empty, "label": empty,
            "probability": empty, "error": error}  # fmt: skip


def frame_result(row: dict[str, Any]) -> FrameResult | None:
    """One :data:`VIDEO_SCHEMA` row -> the :class:`FrameResult` it was made from; None for the row of a video
    that could not be opened (local classify prints ``{"path", "error"}`` for it)."""
    if row.get("frame") is None:
        return None
    predictions = [
        Prediction(int(i), str(s), str(label), float(p))
        for i, s, label, p in zip(row["class_index"], row["synset"], row["label"], row["probability"], strict=True)
    ]
    return FrameResult(str(row["path"]), int(row["frame"]), float(row["time"]), predictions, row.get("error"))


def frame_row_dict(row: dict[str, Any]) -> dict[str, Any]:
    """One :data:`VIDEO_SCHEMA` row -> the line local ``effnet classify --json`` prints for it."""
    result = frame_result(row)
    return {"path": row["path"], "error": row["error"]} if result is None else result.to_dict()


def classify_one(
    classifier: Any,
    name: str,
    data: bytes | None,
    local: str | None,
    request: VideoRequest,
    summary: VideoSummary,
    node: str = "",
    read_error: str | None = None,
    temp_dir: str | None = None,
) -> Iterator[pa.Table]:
    """One video's frame rows, in blocks of :data:`ROWS_PER_BLOCK`; ``summary`` is filled in as they come.

    The video is ``data`` (its bytes, written to a temporary file on this node first: FFmpeg reads a file as
    locally, with its seeks and probing) or, with ``data`` None, the file ``local`` that this node reads (a
    shared path). Messages that named the file read are made to name ``name`` (the user's path). ``read_error``:
    the file could not be read where it was read (the driver's node, a URI's task): one error row.
    ``temp_dir``: where the copy is written (:func:`actor_temp_dir`; default the temp folder); a copy that
    cannot be written there (a full disk) is this video's error row, and the copy is removed on every path.
    """
    summary.node = node
    tmp: str | None = None
    if read_error:
        summary.opened, summary.error = False, read_error
        yield _columns([_error_row(name, read_error)])
        return
    if data is None and local is not None and not os.path.isfile(local):
        summary.opened = False
        summary.error = f"{name}: no such file on node {node} (--shared-inputs: every node must see it)"
        yield _columns([_error_row(name, summary.error)])
        return
    source = local or name
    try:
        if data is not None:
            folder = temp_dir or tempfile.gettempdir()
            try:
                fd, tmp = tempfile.mkstemp(prefix=COPY_PREFIX, suffix=Path(name).suffix, dir=folder)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            except OSError as e:  # a full disk (ENOSPC), no such folder...: this video's error, not the job's
                summary.opened = False
                summary.error = (
                    f"{name}: cannot copy it to the worker's temp folder {folder} on node {node} "
                    f"({e.strerror or e}): free space there, or put it where every node sees it and add "
                    "--shared-inputs (no copy)"
                )
                yield _columns([_error_row(name, summary.error)])
                return
            source = tmp
        yield from _classified(classifier, name, source, request, summary)
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _classified(classifier: Any, name: str, source: str, request: VideoRequest, summary: VideoSummary) -> Iterator[
    pa.Table
]:  # fmt: skip
    """The rows of the file ``source`` (named ``name`` in the rows and messages); fills ``summary``."""

    def named(text: str) -> str:
        return text.replace(source, name)

    video = classifier.classify_video(
        source,
        fps=request.fps,
        every=request.every,
        top_k=request.top_k,
        batch_size=request.batch_size,
        decode=request.decode,
        name=name,
    )
    rows: list[dict[str, Any]] = []
    try:
        for r in video:
            error = named(r.error) if r.error is not None else None
            summary.error = error or summary.error
            rows.append(_row(r, error))
            if len(rows) >= ROWS_PER_BLOCK:
                yield _columns(rows)
                rows = []
    except VideoError as e:  # before the first frame: not a video, no video stream, too large...
        summary.opened, summary.error = False, named(str(e))
        yield _columns([_error_row(name, summary.error)])
        return
    if rows:
        yield _columns(rows)
    st = video.stats
    summary.classified = sum(r.ok for r in video.results)
    summary.decoded, summary.sampled, summary.width, summary.height = st.decoded, st.sampled, st.width, st.height
    summary.duration, summary.decode_seconds = st.duration, st.decode_s
    summary.seconds = video.elapsed_s
    if request.segments is not None:
        summary.segments = video.segments(request.segments)
