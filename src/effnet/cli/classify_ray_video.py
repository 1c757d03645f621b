"""``effnet classify --engine ray`` on video files: each video classified on a Ray worker, the rows, timelines
and summaries those of local classify (docs/video.md, "At scale")."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["classify_videos_on_ray"]


def _refuse_streams(args: argparse.Namespace) -> None:
    from ..distributed.videos import refused_stream
    from . import UsageError

    for p in args.paths:  # http(s):// may be a file's URI for Ray: its extension decides
        if refused_stream(p):
            raise UsageError(f"{p}: streams and cameras are classified locally only (--engine ray reads files)")
    if args.annotate is not None:
        raise UsageError("--annotate writes one video, locally only (not --engine ray)")


def classify_videos_on_ray(args: argparse.Namespace, ray_options: Callable[[], Any]) -> int | None:
    """Classify the videos among ``args.paths``/``--from-list`` on Ray and return the exit status; None when
    the inputs hold no video (the images' job runs). Images and videos in one run are refused: their rows
    differ, and one output holds one kind. ``ray_options``: the pipeline's options from the flags (classify's)."""
    from ..distributed.video_rows import VideoRequest
    from ..distributed.videos import VideoJob, list_media, names_by_entry, run_videos
    from ..errors import EffnetError
    from . import UsageError, source_from_args
    from .classify_video import check_video_arguments

    _refuse_streams(args)
    entries, names, images = list_media(args.paths, args.from_list)
    if not entries:
        return None
    if images:
        raise UsageError(
            f"the inputs hold {len(entries):,} video(s) and {images:,} image(s): --engine ray classifies one kind "
            "per run (name the videos, or list them with --from-list, and run the images separately)"
        )
    check_video_arguments(args, len(entries))
    options = ray_options()
    try:
        options.check()
    except EffnetError as e:
        raise UsageError(str(e)) from None
    placed = options.placed()
    request = VideoRequest(
        fps=args.fps,
        every=args.every,
        decode=args.decode,
        top_k=args.top_k,
        batch_size=placed.batch_size or 1,
        segments=args.segments,
        names=names_by_entry(entries, names),
    )
    job = VideoJob(
        entries=entries,
        request=request,
        source=source_from_args(args, {}),  # resolved once, here, as classify's images are
        output=args.output,
        address=args.ray_address,
        options=options,
        shared_inputs=args.shared_inputs,
        progress=not args.no_progress,
    )
    result = run_videos(job, on_row=None if args.output is not None else lambda row: _print_row(row, args))
    for s in result.summaries:  # the timelines, as local classify prints them: on stdout, after the rows
        if args.segments is not None and s.segments is not None:
            if args.json:
                print(json.dumps({"path": s.path, "segments": [seg.to_dict() for seg in s.segments]}), flush=True)
            else:
                print(s.path)
                for seg in s.segments:
                    print(f"  {seg}")
    for s in result.summaries:
        if s.opened:  # local classify prints no summary for a video it could not open: its error row says why
            print(s.line(), file=sys.stderr)
    classified = sum(s.classified for s in result.summaries)
    rate = classified / result.seconds if result.seconds > 0 else 0.0
    mb = result.shipped_bytes / 2**20
    sent = f", {mb:.1f} MB of local inputs read on the driver's node" if result.shipped else ""
    print(
        f"effnet: {len(entries):,} videos, {classified:,} frames classified, {result.errors:,} error rows, "
        f"{rate:.1f} frames/s, {result.workers} workers (backend {options.backend} on {options.device}, decided on "
        f"each node; {result.seconds:.1f} s on {result.where}{sent}) -> {result.output or 'stdout'}",
        file=sys.stderr,
        flush=True,
    )
    failed = sum(s.error is not None for s in result.summaries)
    if failed:
        print(f"effnet: {failed} of {len(entries)} videos ended with an error", file=sys.stderr)
    return 1 if failed or result.errors else 0


def _print_row(row: dict[str, Any], args: argparse.Namespace) -> None:
    """One frame row on stdout, as local classify prints it (``classify_video``)."""
    from ..distributed.video_rows import frame_result
    from .classify_video import emit_error, print_frame

    r = frame_result(row)
    if r is None:
        emit_error(args, str(row["path"]), str(row["error"]))
    elif args.json:
        print(json.dumps(r.to_dict()), flush=True)
    elif args.segments is None or not r.ok:
        print_frame(r)
