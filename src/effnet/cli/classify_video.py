"""``effnet classify`` on videos, streams and cameras: the flags, the rows, the timeline and the summary."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = [
    "add_video_arguments",
    "check_video_arguments",
    "classify_video",
    "emit_error",
    "note_skipped_videos",
    "print_frame",
]


def note_skipped_videos(folder: Any, command: str) -> None:
    """eval and train read images only: say once on stderr how many videos their folder walk passed over."""
    from ..files import count_videos

    if folder is not None and (n := count_videos(folder)):
        print(f"effnet: note: {command} skips the {n:,} video file(s) in {folder} (it reads images)", file=sys.stderr)


def add_video_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("videos, streams and cameras (pip install 'effnet[video]')")
    g.add_argument(
        "--fps",
        type=float,
        default=None,
        metavar="F",
        help="classify F frames per second of video time, by the frames' timestamps (default: 2: a label rarely "
        "changes within half a second, and a 30 frames/s video then costs 15x fewer forward passes)",
    )
    g.add_argument("--every", type=int, default=None, metavar="N", help="classify every Nth frame instead of --fps")
    g.add_argument(
        "--segments",
        type=int,
        nargs="?",
        const=5,
        default=None,
        metavar="WINDOW",
        help="print each video's timeline (start-end, label, mean probability), each frame's label smoothed by "
        "the majority of WINDOW sampled frames around it (default 5): no one-frame flicker",
    )
    g.add_argument(
        "--annotate",
        metavar="OUT.mp4",
        default=None,
        help="write the classified frames with their top-k, FPS and latency drawn, as an H.264 MP4 (one video; "
        "its audio is dropped; OUT must not exist yet: an existing file is never replaced)",
    )
    g.add_argument(
        "--stall-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="a stream that sends nothing for S seconds ends with an error (default: %(default)s)",
    )


def check_video_arguments(args: argparse.Namespace, videos: int, sources: Sequence[Any] = ()) -> None:
    from . import UsageError

    if args.fps is not None and args.every is not None:
        raise UsageError("give --fps or --every, not both")
    if (args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0)) or (
        args.every is not None and args.every < 1
    ):  # nan passes every comparison: asked for finiteness explicitly
        raise UsageError("--fps must be a finite number > 0 and --every >= 1")
    if args.segments is not None and args.segments < 1:
        raise UsageError("--segments WINDOW must be >= 1 sampled frame")
    if not (math.isfinite(args.stall_timeout) and args.stall_timeout > 0):
        raise UsageError("--stall-timeout must be a finite number of seconds > 0")
    if args.annotate is not None and videos != 1:
        raise UsageError(f"--annotate writes one video: give exactly one video, stream or camera (got {videos})")
    if videos:
        from .._optional import require

        require("av", "video", "classifying videos")
    if args.annotate is not None:  # before the model loads and any frame is decoded
        from ..errors import EffnetError
        from ..video.annotate import check_destination

        try:  # a bad OUT is a flag error like the others: the usage line and exit status 2
            check_destination(args.annotate, [s for s in sources if isinstance(s, (str, os.PathLike))])
        except EffnetError as e:
            raise UsageError(str(e)) from None


def print_frame(r: Any) -> None:
    from ..video import format_time

    if r.error is not None:
        print(f"{r.path}  {format_time(r.time)}  frame {r.frame}: error: {r.error}")
        return
    top = r.predictions[0]
    print(f"{r.path}  {format_time(r.time)}  frame {r.frame}  {top.probability:7.2%}  {top.label}", flush=True)


def classify_video(clf: Any, source: str, args: argparse.Namespace, top_k: int) -> int:
    """Classify one video/stream/camera; print its rows (and timeline); return the number of error rows
    (the exit status is 130 on Ctrl-C or SIGTERM, raised as KeyboardInterrupt after the summary)."""
    from ..signals import sigterm_as_ctrl_c

    with sigterm_as_ctrl_c():  # the summary, the annotated video closed whole, no temporary file left behind
        return _classify_video(clf, source, args, top_k)


def _classify_video(clf: Any, source: str, args: argparse.Namespace, top_k: int) -> int:
    from ..video import VideoError

    try:
        video = clf.classify_video(
            source,
            fps=args.fps,
            every=args.every,
            top_k=top_k,
            batch_size=args.batch_size or 1,
            annotate=args.annotate,
            stall_timeout=args.stall_timeout,
            decode=args.decode,  # reduced (the default): big frames converted to RGB already scaled down
        )
    except VideoError as e:
        emit_error(args, source, str(e))
        return 1
    failed = 0
    interrupted = False
    # Held here, not only by the loop: a Ctrl-C while a row is printed leaves the loop, and a generator nothing
    # holds is closed at once, which discards its unfinished annotated video before finish() below can keep it.
    rows = iter(video)
    try:
        for r in rows:
            failed += not r.ok
            if args.json:
                print(json.dumps(r.to_dict()), flush=True)  # flushed: a live stream's rows as frames arrive
            elif args.segments is None or not r.ok:
                print_frame(r)
    except VideoError as e:  # raised before the first frame: cannot be opened, no video stream, too large
        emit_error(args, source, str(e))
        return 1
    except KeyboardInterrupt:
        interrupted = True
        video.finish()  # a live stream ends with Ctrl-C: keep what was annotated
    if args.segments is not None:
        timeline = video.segments(args.segments)
        if args.json:
            print(json.dumps({"path": video.name, "segments": [s.to_dict() for s in timeline]}), flush=True)
        else:
            print(video.name)
            for s in timeline:
                print(f"  {s}")
    _summary(video, interrupted)
    if interrupted:
        raise KeyboardInterrupt
    return failed


def emit_error(args: argparse.Namespace, source: str, error: str) -> None:
    if args.json:
        print(json.dumps({"path": source, "error": error}), flush=True)
    else:
        print(f"{source}: error: {error}")


def _summary(video: Any, interrupted: bool) -> None:
    st = video.stats
    classified = sum(r.ok for r in video.results)
    rate = classified / video.elapsed_s if video.elapsed_s > 0 else 0.0
    parts = [
        f"{'interrupted: ' if interrupted else ''}{classified} frames classified of {st.decoded} decoded "
        f"({st.width}x{st.height}, {rate:.1f} frames/s)"
    ]
    if st.dropped:
        parts.append(f"{st.dropped} dropped (inference behind the stream)")
    if st.reconnects:
        parts.append(f"{st.reconnects} reconnects")
    if video.annotated is not None:
        audio = f"its {st.audio} audio dropped" if st.audio else "no audio"
        parts.append(f"annotated video {video.annotated} ({audio})")
    print(f"effnet: {video.name}: " + "; ".join(parts), file=sys.stderr)
