"""``effnet classify --engine ray`` over videos: each video decoded, sampled and classified on one actor.

    video files --(inputs.read_inputs, one file per block)--> path, bytes, error
                --map_batches (an actor pool: Classifier.classify_video per video)--> frame rows + a summary each

Where a video is read is the images' rule (:mod:`effnet.distributed.inputs`): a driver-local file is read
by a task pinned to the driver's node and streamed to the actor through the object store as the pipeline
pulls it (the driver holds names, not bytes); a URI is read by a task on any node; with ``--shared-inputs``
the actor opens the path on its own node (no copy: the fast path). The actor runs local classify's video
code on it (:func:`effnet.distributed.video_rows.classify_one`), so the rows are local classify's rows. The
weights reach the actors as the images' do (:func:`effnet.distributed.data.ship_weights`). Each video's
summary goes to a small collector actor; the driver reads them when the rows are done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data

from ..errors import EffnetError
from ..factory import Pretrained
from ..files import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, absolute, find_images, is_live
from ..source import ModelSource, resolve_source
from .data import PipelineOptions, ShippedWeights, check_fits, pool_size, pool_strategy, ship_weights
from .inputs import Inputs, list_inputs, list_lines, read_inputs
from .outputs import WriteSummary, output_spec, staging, write_results
from .placement import PoolSize
from .video_rows import (
    VideoRequest,
    VideoSummary,
    actor_temp_dir,
    classify_one,
    frame_row_dict,
    renamed,
    renamed_summary,
    too_big_to_stream,
)

__all__ = [
    "VideoJob",
    "VideoJobResult",
    "VideoRun",
    "classify_videos",
    "list_media",
    "names_by_entry",
    "positional_names",
    "refused_stream",
    "run_videos",
]


def _is_remote(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def _named_video(text: str) -> bool:
    return os.path.splitext(text.split("?")[0])[1].lower() in VIDEO_EXTENSIONS


def refused_stream(text: str) -> bool:
    """A stream or camera, which --engine ray refuses (it reads files): any live source but an http(s) URL
    that names a file by its extension (an HLS playlist ``.m3u8``, a DASH ``.mpd`` or no extension: a stream)."""
    if not is_live(text):
        return False
    if not text.lower().startswith(("http://", "https://")):
        return True
    suffix = os.path.splitext(text.split("?")[0])[1].lower()
    return suffix not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS


def list_media(paths: Sequence[str | os.PathLike], from_list: Sequence[str | os.PathLike] = ()) -> tuple[
    list[str], list[str], int
]:  # fmt: skip
    """The video files among the inputs, as ``(entries, names, images)``: one entry per video as given (an
    absolute local path, ``file://`` kept, or a URI; a video given twice is there twice, as local classify
    classifies it twice), its name at the same position (the path local classify would print for it: as given
    on the command line or written in the list), and how many images the inputs hold besides. Folders are
    walked by the one folder walk, videos included, as local classify walks them; a URI prefix is listed as for
    images (``inputs.list_inputs``), and a URI or line counts as a video by its extension. Streams and
    cameras are refused (:func:`refused_stream`): a Ray job reads files."""
    entries: list[str] = []
    names: list[str] = []
    images = 0
    listed: list[str] = []
    for raw in paths:
        text = os.fspath(raw)
        if _is_remote(text) or text.startswith("/dev/"):
            if refused_stream(text):
                raise EffnetError(f"{text}: streams and cameras are classified locally only (--engine ray reads files)")
            listed.append(text)
            continue
        prefix = "file://" if text.startswith("file://") else ""
        for p in find_images([text.removeprefix("file://")], videos=True):
            if _named_video(str(p)):
                entries.append(prefix + absolute(p))
                names.append(prefix + str(p))
            else:
                images += 1
    remote = [t for t in listed if not _named_video(t)]
    for t in listed:
        if _named_video(t):
            entries.append(t)
            names.append(t)
    for entry in list_inputs(remote) if remote else []:
        if _named_video(entry):
            entries.append(entry)
            names.append(entry)
        else:
            images += 1
    for file in from_list:
        for line in list_lines(os.fspath(file)):  # named as written in the list; read from where it points
            if _named_video(line):
                entries.append(line if "://" in line else absolute(line))
                names.append(line)
            else:
                images += 1
    return entries, names, images


def names_by_entry(entries: Sequence[str], names: Sequence[str]) -> dict[str, list[str]]:
    """``list_media``'s entries and names -> each entry's names, one per time it was given (in order): a video
    given twice or under two spellings is read and classified once, its rows and summary given each name."""
    out: dict[str, list[str]] = {}
    for entry, name in zip(entries, names, strict=True):
        out.setdefault(entry, []).append(name)
    return out


class _Summaries:
    """The job's per-video summaries, sent by the actors as each video ends (a re-run video replaces its own)."""

    def __init__(self) -> None:
        self.by_path: dict[str, VideoSummary] = {}

    def add(self, summary: VideoSummary) -> None:
        self.by_path[summary.path] = summary

    def all(self) -> dict[str, VideoSummary]:
        return self.by_path


class VideoActor:
    """One backend per actor process (built as the image actors' are); ``__call__`` classifies whole videos."""

    def __init__(self, spec: Any, weights: list[ray.ObjectRef], request: VideoRequest, summaries: Any) -> None:
        self.classifier = spec.build(lambda: ray.get(weights[0]))  # the ref in a list: fetched only if needed
        self.request, self.summaries = request, summaries
        self.node = ray.util.get_node_ip_address()
        self.temp_dir = actor_temp_dir()  # the copies of streamed videos; a killed worker's are removed here

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[pa.Table]:
        for entry, data, error in zip(batch["path"], batch["bytes"], batch["error"], strict=True):
            entry = str(entry)
            name, *others = self.request.names.get(entry) or [entry]
            summary = VideoSummary(name)
            local = entry.removeprefix("file://") if data is None and not _is_remote(entry) else None
            read_error = str(error).replace(entry, name) if error else None
            blob = bytes(data) if data is not None else None
            for table in classify_one(
                self.classifier, name, blob, local, self.request, summary, self.node, read_error, self.temp_dir
            ):
                yield table
                for other in others:  # the same video given again: its rows under that name, as locally
                    yield renamed(table, name, other)
            for other in others:
                ray.get(self.summaries.add.remote(renamed_summary(summary, name, other)))
            ray.get(self.summaries.add.remote(summary))  # before the rows' block is done: the driver sees it


@dataclass
class VideoRun:
    """A lazy dataset of frame rows (``video_rows.VIDEO_SCHEMA``); :meth:`summaries` once it has run."""

    rows: ray.data.Dataset
    collector: Any

    def summaries(self) -> dict[str, VideoSummary]:
        """Each video's summary, by the path its rows name (call after the rows were consumed)."""
        return ray.get(self.collector.all.remote())


def _shared_rows(entries: list[str]) -> tuple[ray.data.Dataset | None, list[str]]:
    """``--shared-inputs``: rows without bytes for the local files the driver sees (the actor opens them on its
    node); the others (URIs, files missing here) are left to ``read_inputs``."""
    present = [e for e in entries if not _is_remote(e) and os.path.isfile(e.removeprefix("file://"))]
    seen = set(present)
    rest = [e for e in entries if e not in seen]
    if not present:
        return None, rest
    rows = _byteless_rows(dict.fromkeys(present, ""))  # no error, no bytes: the actor opens the file
    return rows.repartition(target_num_rows_per_block=1), rest


def _byteless_rows(errors: dict[str, str]) -> ray.data.Dataset:
    """Input rows without bytes: entry -> its error, or "" (a shared file the actor opens on its node)."""
    n = len(errors)
    table = pa.table({"path": list(errors), "bytes": pa.array([None] * n, pa.binary()), "error": list(errors.values())})
    return ray.data.from_arrow(table)


def _video_inputs(entries: list[str], shared: bool) -> Inputs:
    entries = list(dict.fromkeys(entries))  # a video given twice is read once (its rows given each name)
    parts: list[ray.data.Dataset] = []
    shared_ds, rest = _shared_rows(entries) if shared else (None, entries)
    if shared_ds is not None:
        parts.append(shared_ds)
    too_big = too_big_to_stream(rest)
    if too_big:
        parts.append(_byteless_rows(too_big))
        rest = [e for e in rest if e not in too_big]
    read = read_inputs(rest, listed=rest, block_rows=1) if rest else None
    if read is not None:
        parts.append(read.dataset)
    dataset = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return Inputs(dataset, len(entries), read.shipped if read else 0, read.shipped_bytes if read else 0)


def build_video_pipeline(
    inputs: Inputs, shipped: ShippedWeights, options: PipelineOptions, request: VideoRequest, pool: PoolSize
) -> VideoRun:
    """``inputs`` (path, bytes, error; one video a block) -> frame rows, one video per actor call."""
    options = options.placed()
    collector = ray.remote(num_cpus=0, max_restarts=0)(_Summaries).remote()
    rows = inputs.dataset.map_batches(
        VideoActor,
        fn_constructor_kwargs={
            "spec": shipped.spec,
            "weights": [shipped.ref],
            "request": request,
            "summaries": collector,
        },
        batch_size=1,
        batch_format="numpy",
        compute=pool_strategy(pool),
        num_cpus=options.cpus_per_worker or 1.0,
        num_gpus=options.gpus_per_worker or None,
        # Decoding runs inside the actor, in the reader thread of local classify, ahead of its inference: a
        # video is one sequential stream, not rows to spread over decode tasks. Restarts as the image actors.
    )
    return VideoRun(rows, collector)


def classify_videos(
    paths_or_dataset: str | os.PathLike | Sequence[str | os.PathLike] | ray.data.Dataset,
    model: str = "efficientnet-b5",
    weights: Pretrained | None = None,
    *,
    fps: float | None = None,
    every: int | None = None,
    decode: str = "reduced",
    segments: int | None = None,
    shared_inputs: bool = False,
    options: PipelineOptions | None = None,
    progress: bool = True,
) -> VideoRun:
    """Classify video files on the current Ray cluster: one row per sampled frame, as local classify's
    ``classify_video`` gives them. ``paths_or_dataset``: video files, folders (their videos) or URIs, or a
    ``ray.data.Dataset`` with ``path`` and ``bytes`` columns (one video a row; its ``path`` names the rows).
    ``segments``: the smoothing window of each video's timeline (in its summary)."""
    options = options or PipelineOptions()
    options.check()
    placed = options.placed()
    shipped = ship_weights(resolve_source(model, weights, progress=progress), placed)  # resolved once, here
    request = VideoRequest(fps, every, decode, placed.top_k, placed.batch_size or 1, segments)
    if isinstance(paths_or_dataset, ray.data.Dataset):
        ds = paths_or_dataset.repartition(target_num_rows_per_block=1)
        if "error" not in ds.columns():
            ds = ds.map_batches(lambda b: {**b, "error": np.full(len(b["path"]), "", dtype=object)})
        inputs = Inputs(ds, 0, 0, 0)  # count unknown without reading it: nothing here needs it
    else:
        items = [paths_or_dataset] if isinstance(paths_or_dataset, (str, os.PathLike)) else list(paths_or_dataset)
        entries, names, _ = list_media(items)
        named = names_by_entry(entries, names)
        request = VideoRequest(fps, every, decode, placed.top_k, placed.batch_size or 1, segments, named)
        inputs = _video_inputs(entries, shared_inputs)
    return build_video_pipeline(inputs, shipped, placed, request, pool_size(placed))


@dataclass(frozen=True)
class VideoJob:
    """``effnet classify --engine ray`` over videos, after parsing (``entries``: :func:`list_media`'s, and
    ``request.names`` from :func:`names_by_entry`)."""

    entries: Sequence[str]
    request: VideoRequest
    source: ModelSource  # resolved once, by the caller (the CLI's source_from_args), as for images
    output: str | None = None  # None: the rows go to ``on_row`` (the CLI prints them)
    address: str | None = None
    options: PipelineOptions = field(default_factory=PipelineOptions)
    shared_inputs: bool = False
    progress: bool = True


@dataclass(frozen=True)
class VideoJobResult:
    rows: int
    errors: int
    summaries: list[VideoSummary]  # in the order of the inputs
    seconds: float
    where: str
    workers: str
    output: Path | None
    shipped: int
    shipped_bytes: int


def positional_names(entries: Sequence[str], names: dict[str, list[str]]) -> list[str]:
    """The name of each entry, in order: its k-th occurrence takes the k-th of its names (one summary each)."""
    seen: dict[str, int] = {}
    out: list[str] = []
    for entry in entries:
        own = names.get(entry) or [entry]
        k = seen.get(entry, 0)
        seen[entry] = k + 1
        out.append(own[min(k, len(own) - 1)])
    return out


def run_videos(job: VideoJob, on_row: Callable[[dict[str, Any]], None] | None = None) -> VideoJobResult:
    """Run ``job``: its rows into ``job.output`` (as the images' rows: atomically, either format), or each to
    ``on_row`` as it arrives (a :data:`~effnet.distributed.video_rows.VIDEO_SCHEMA` row: ``frame_result`` and
    ``frame_row_dict`` make it what local classify prints); the per-video summaries after."""
    from .jobs import connected

    job.options.check()
    spec = output_spec(job.output) if job.output is not None else None  # a bad --output fails before Ray starts
    check_fits(job.source)  # weights that do not fit the model: the local error, before Ray starts
    # SIGTERM is Ctrl-C within connected() (docs/video.md), as for every Ray job.
    with connected(job.address, progress=job.progress) as where:
        started = time.perf_counter()
        options = job.options.placed()
        pool = pool_size(options)
        shipped = ship_weights(job.source, options)  # the caller's resolution, shipped; the actors build on it
        inputs = _video_inputs(list(job.entries), job.shared_inputs)
        run = build_video_pipeline(inputs, shipped, options, job.request, pool)
        path: Path | None = None
        if spec is not None:
            with staging(spec) as parts:
                written: WriteSummary = write_results(run.rows, spec, parts, row_dict=frame_row_dict)
            rows, errors, path = written.rows, written.errors, written.path
        else:
            rows = errors = 0
            for batch in run.rows.iter_batches(batch_format="pyarrow", batch_size=None):
                table: pa.Table = batch  # batch_format="pyarrow"
                for row in table.to_pylist():
                    rows += 1
                    errors += row["error"] is not None
                    if on_row is not None:
                        on_row(row)
        by_path = run.summaries()
        seconds = time.perf_counter() - started
    ordered = [by_path[n] for n in positional_names(job.entries, job.request.names) if n in by_path]
    return VideoJobResult(
        rows, errors, ordered, seconds, where, pool.describe(), path, inputs.shipped, inputs.shipped_bytes
    )
