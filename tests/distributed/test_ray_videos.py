"""`effnet classify --engine ray` over video files (issue 30, "at scale"): each video decoded and classified on
a Ray worker of the two-node test cluster. The rows, the error rows of a damaged file and of a file with no
video stream, and the timelines must be local classify's; a video whose path no node can open is classified
from the bytes streamed to the worker. Clips are made here from the sample photos (tests/video/clips.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("av", reason="PyAV (effnet[video]) is not installed")

from tests.distributed.ray_fixtures import LITE0  # noqa: E402
from tests.testutils import run_cli  # noqa: E402
from tests.video.clips import audio_only, held, photo, write_clip  # noqa: E402

pytestmark = pytest.mark.slow

PHOTOS = ("n01440764_tench", "n01601694_water_ouzel", "n01860187_black_swan")
# torch on both sides (no export: the test is about the video path), the same batch as locally
FLAGS = ("--model", LITE0, "--backend", "torch", "--fps", "2", "--batch-size", "4", "--no-progress")


def clip_frames(sample_dir: Path) -> tuple[list, list[float]]:
    """The three photos held 2 s each at 10 frames/s: 60 frames, 12 sampled at --fps 2 (0, 0.5, ... 5.5 s)."""
    return held([photo(sample_dir / f"{name}.JPEG") for name in PHOTOS], 2.0)


def same_row(got: dict, want: dict) -> None:
    assert set(got) == set(want), (got, want)
    if "predictions" not in want:
        assert got == want
        return
    assert (got["path"], got["frame"], got["time"]) == (want["path"], want["frame"], want["time"])
    g, w = got["predictions"], want["predictions"]
    names = [(p["class_index"], p["synset"], p["label"]) for p in g]
    assert names == [(p["class_index"], p["synset"], p["label"]) for p in w]
    assert all(abs(a["probability"] - b["probability"]) <= 1e-5 for a, b in zip(g, w, strict=True)), got


def test_ray_rows_timelines_and_error_rows_are_local_classify_s(ray_cluster, sample_dir, tmp_path):
    frames, times = clip_frames(sample_dir)
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "clip.mp4", frames, times)
    whole = write_clip(tmp_path / "whole.mp4", frames, times, faststart=True).read_bytes()
    (clips / "broken.mp4").write_bytes(whole[: int(len(whole) * 0.6)])  # rows up to the damage, then one error
    audio_only(clips / "sound.mp4")  # no video stream
    # relative paths, run from tmp_path: the rows name the videos as the user gave them, on Ray too
    local = run_cli("classify", "--json", "--segments", *FLAGS, "clips", cwd=tmp_path)
    assert local.returncode == 1, local.stderr
    # rows printed as locally (--output, the other way out, is the next test's)
    ray = run_cli(
        "classify", "--engine", "ray", "--ray-address", ray_cluster.address, "--json", "--segments",
        "--workers", "1", *FLAGS, "clips", cwd=tmp_path,
    )  # fmt: skip
    assert ray.returncode == 1, ray.stderr
    assert "Traceback" not in ray.stderr

    local_rows = [json.loads(line) for line in local.stdout.splitlines()]
    want = {(r["path"], r.get("frame")): r for r in local_rows if "segments" not in r}
    printed = [json.loads(line) for line in ray.stdout.splitlines()]
    got_rows = [r for r in printed if "segments" not in r]
    got = {(r["path"], r.get("frame")): r for r in got_rows}
    assert len(got) == len(got_rows) and set(got) == set(want)  # each frame once, none missing or extra
    for key, row in got.items():
        same_row(row, want[key])
    # what the clips hold, independently of either run
    clip_rows = sorted((r for r in got_rows if r["path"] == "clips/clip.mp4"), key=lambda r: r["frame"])
    assert [r["time"] for r in clip_rows] == [i / 2 for i in range(12)]
    assert [r["predictions"][0]["synset"] for r in clip_rows] == [n.split("_")[0] for n in PHOTOS for _ in range(4)]
    broken = sorted((r for r in got_rows if r["path"] == "clips/broken.mp4"), key=lambda r: r["frame"])
    assert len(broken) >= 2 and all("predictions" in r for r in broken[:-1])
    assert broken[-1]["error"].startswith("clips/broken.mp4: truncated"), broken[-1]
    assert got[("clips/sound.mp4", None)] == {
        "path": "clips/sound.mp4",
        "error": "clips/sound.mp4: no video stream (streams: audio aac)",
    }
    # the timelines: one JSON row per opened video after the rows, as local classify prints them
    assert all("segments" in r for r in printed[len(got_rows) :])
    timelines = {r["path"]: r["segments"] for r in printed if "segments" in r}
    want_timelines = {r["path"]: r["segments"] for r in local_rows if "segments" in r}
    assert set(timelines) == set(want_timelines) == {"clips/clip.mp4", "clips/broken.mp4"}
    for path, segments in timelines.items():
        w = want_timelines[path]
        assert [(s["start"], s["end"], s["label"], s["frames"]) for s in segments] == [
            (s["start"], s["end"], s["label"], s["frames"]) for s in w
        ]
    assert [(s["start"], s["end"]) for s in timelines["clips/clip.mp4"]] == [(0, 2), (2, 4), (4, 6)]
    # one summary per opened video, local's line with the sampled frames and the duration after it
    assert "effnet: clips/clip.mp4: 12 frames classified of 60 decoded (256x192, " in local.stderr
    line = next(x for x in ray.stderr.splitlines() if x.startswith("effnet: clips/clip.mp4: "))
    assert "12 frames classified of 60 decoded (256x192, " in line and "; 12 sampled; 00:06.0 of video" in line, line
    assert "effnet: 3 videos, " in ray.stderr and "2 of 3 videos ended with an error" in ray.stderr


def test_a_video_no_node_can_open_by_its_path_is_classified_from_the_bytes_sent_and_written(
    ray_cluster, sample_dir, tmp_path
):
    import ray

    from effnet.distributed.data import PipelineOptions
    from effnet.distributed.outputs import output_spec, staging, write_results
    from effnet.distributed.video_rows import frame_row_dict
    from effnet.distributed.videos import classify_videos
    from effnet.predict import Classifier

    frames, times = clip_frames(sample_dir)
    clip = write_clip(tmp_path / "clip.mp4", frames, times)
    nowhere = str(tmp_path / "driver-only" / "clip.mp4")  # the driver's name for it; no node has this path
    ds = ray.data.from_items([{"path": nowhere, "bytes": clip.read_bytes()}])
    options = PipelineOptions(backend="torch", workers=1, batch_size=4)
    run = classify_videos(ds, LITE0, fps=2, segments=5, options=options, progress=False)
    spec = output_spec(tmp_path / "rows.jsonl")  # written as `--output rows.jsonl` writes it
    with staging(spec) as parts:
        written = write_results(run.rows, spec, parts, row_dict=frame_row_dict)
    got = [json.loads(line) for line in spec.path.read_text().splitlines()]
    assert (written.rows, written.errors) == (12, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "rows.jsonl"]  # no staging left

    local = Classifier(LITE0, backend="torch", progress=False).classify_video(clip, fps=2, batch_size=4, name=nowhere)
    want = [r.to_dict() for r in local]
    assert len(got) == len(want) == 12
    for g, w in zip(sorted(got, key=lambda r: r["frame"]), want, strict=True):
        same_row(g, w)
    summary = run.summaries()[nowhere]
    assert (summary.classified, summary.decoded, summary.sampled, summary.error) == (12, 60, 12, None)
    assert summary.duration == pytest.approx(6.0, abs=0.05) and summary.decode_seconds > 0
    timeline = [(s.start, s.end, s.class_index, s.frames) for s in summary.segments or []]
    assert timeline == [(s.start, s.end, s.class_index, s.frames) for s in local.segments(5)]
    assert len(timeline) == 3


def test_a_video_given_twice_keeps_each_name_and_sigterm_stops_like_ctrl_c(ray_cluster, sample_dir, tmp_path):
    import signal
    import subprocess
    import sys

    frames, times = clip_frames(sample_dir)
    (tmp_path / "c").mkdir()
    write_clip(tmp_path / "c" / "clip.mp4", frames, times)
    absolute = str(tmp_path / "c" / "clip.mp4")
    ray_flags = ("--engine", "ray", "--ray-address", ray_cluster.address, "--workers", "1", *FLAGS)
    # as locally: one set of rows and one summary per entry, each under the name it was given
    run = run_cli("classify", *ray_flags, "--json", "c/clip.mp4", absolute, "c/clip.mp4", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    paths = [json.loads(line)["path"] for line in run.stdout.splitlines()]
    assert (paths.count("c/clip.mp4"), paths.count(absolute), len(paths)) == (24, 12, 36)
    summaries = [x for x in run.stderr.splitlines() if "12 frames classified of 60 decoded" in x]
    assert [x.split(": ")[1] for x in summaries] == ["c/clip.mp4", absolute, "c/clip.mp4"], run.stderr
    assert "effnet: 3 videos, 36 frames classified, 0 error rows" in run.stderr

    # SIGTERM mid-run: as Ctrl-C (exit 130, one line), not Ray's native handler (a stack dump, exit 134)
    long = write_clip(tmp_path / "long.mp4", *held([photo(sample_dir / f"{PHOTOS[0]}.JPEG")], 20.0))  # 200 frames
    every = ("--model", LITE0, "--backend", "torch", "--every", "1", "--batch-size", "1", "--no-progress")
    head = ("--engine", "ray", "--ray-address", ray_cluster.address, "--workers", "1")
    cmd = [sys.executable, "-m", "effnet", "classify", *head, *every, "--json", str(long)]
    with subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None and p.stdout.readline()  # the first row: the job runs
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "effnet: interrupted" in err and "Traceback" not in err and "SIGTERM" not in err, err
