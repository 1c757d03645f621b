"""Videos through Classifier.classify_video and the reader: times, segments, rotation, damage, live streams.

Every clip is made here from the sample photos (tests/video/clips.py); expected labels come from the same
photos classified as stills, expected times from the timestamps the clip was written with.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

pytest.importorskip("av", reason="PyAV (effnet[video]) is not installed")

from effnet.errors import EffnetError  # noqa: E402
from effnet.labels import Prediction  # noqa: E402
from effnet.predict import Classifier  # noqa: E402
from effnet.preprocess import resize_crop  # noqa: E402
from effnet.video import ReaderStats, Sampling, VideoError, read_frames, segments  # noqa: E402
from tests.video.clips import StreamServer, audio_only, held, photo, write_clip  # noqa: E402

# Three sample photos that Lite0 classifies right with confidence (checked below against their synsets),
# so the near-lossless H.264 copy of each must give the same label.
PHOTOS = ("n01440764_tench", "n01601694_water_ouzel", "n01860187_black_swan")


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier("efficientnet-lite0", progress=False)


@pytest.fixture(scope="module")
def stills(sample_dir):
    images = [photo(sample_dir / f"{name}.JPEG") for name in PHOTOS]
    return images


@pytest.fixture(scope="module")
def still_labels(clf, stills):
    results = clf.classify([np.asarray(im) for im in stills], top_k=1)
    labels = [r.predictions[0] for r in results]
    # the ground truth is in the file names: the stills must be right for the video check to mean anything
    assert [p.synset for p in labels] == [name.split("_")[0] for name in PHOTOS]
    return labels


def test_held_photos_give_timed_rows_and_the_stills_segments(clf, stills, still_labels, tmp_path):
    frames, times = held(stills, 2.0)  # 2 s each at 10 frames/s: 60 frames, 6 s
    clip = write_clip(tmp_path / "held.mp4", frames, times)
    video = clf.classify_video(clip, fps=2, top_k=3, batch_size=4)
    rows = list(video)
    assert [r.frame for r in rows] == list(range(0, 60, 5))
    assert [r.time for r in rows] == pytest.approx([i / 2 for i in range(12)])
    assert all(r.path == str(clip) for r in rows)
    timeline = video.segments()
    assert [s.class_index for s in timeline] == [p.class_index for p in still_labels]
    assert [t for s in timeline for t in (s.start, s.end)] == pytest.approx([0, 2, 2, 4, 4, 6])
    assert video.stats.decoded == 60 and video.stats.sampled == 12
    row = rows[0].to_dict()
    assert set(row) == {"path", "frame", "time", "predictions"} and len(row["predictions"]) == 3


def test_the_last_segment_ends_at_the_video_s_end_not_a_sampling_step_past_it(clf, stills, tmp_path):
    frames, times = held(stills[:1], 6.0)  # one scene, 6.0 s long (its last frame shown from 5.9 s)
    video = clf.classify_video(write_clip(tmp_path / "six.mp4", frames, times), fps=0.75, top_k=1)
    assert [r.time for r in video] == pytest.approx([0.0, 1.4, 2.7, 4.0, 5.4])  # a step of 1.35 s: 6.75 s
    (only,) = video.segments(window=1)
    assert (only.start, only.end) == pytest.approx((0.0, 6.0))
    assert segments([0.0, 1.0], [_p(1, 0.9), _p(1, 0.9)], 1, duration=1.5)[-1].end == 1.5
    assert segments([0.0, 1.0], [_p(1, 0.9), _p(1, 0.9)], 1)[-1].end == 2.0  # a live stream: no duration


def test_variable_frame_rate_times_come_from_the_timestamps(clf, stills, tmp_path):
    times = [0.0, 0.1, 0.15, 0.9, 1.0, 2.3, 2.35, 3.0]
    clip = write_clip(tmp_path / "vfr.mkv", [stills[0]] * len(times), times)
    every = [vf.time for vf in read_frames(str(clip), clf.preprocess, Sampling(fps=None, every=1))]
    assert every == pytest.approx(times)
    # one frame per second of video time: the first frame of each second, whatever the spacing
    assert [vf.time for vf in read_frames(str(clip), clf.preprocess, Sampling(fps=1))] == pytest.approx(
        [0.0, 1.0, 2.3, 3.0]
    )
    assert [vf.index for vf in read_frames(str(clip), clf.preprocess, Sampling(fps=None, every=3))] == [0, 3, 6]


def test_a_rotated_clip_is_classified_as_displayed(clf, stills, tmp_path):
    # a phone's portrait video: stored landscape (the photo turned clockwise), a display matrix turning it back
    upright = stills[1].resize((192, 256))
    stored = upright.rotate(-90, expand=True)  # clockwise: 256x192 stored
    clip = write_clip(tmp_path / "portrait.mp4", [stored] * 3, [0.0, 0.1, 0.2], rotation=90)
    stats = ReaderStats()
    (first, *_) = list(
        read_frames(str(clip), clf.preprocess, Sampling(fps=None, every=1), keep_images=True, stats=stats)
    )
    assert first.image.size == (192, 256)
    assert (stats.width, stats.height) == (192, 256)  # the summary's size: as displayed, not as stored
    expected = np.asarray(resize_crop(upright, clf.preprocess), dtype=np.int16)
    assert np.abs(first.crop.astype(np.int16) - expected).mean() < 3.0
    unrotated = np.asarray(resize_crop(stored, clf.preprocess), dtype=np.int16)
    assert np.abs(first.crop.astype(np.int16) - unrotated).mean() > 20.0


def test_a_truncated_clip_gives_the_rows_before_the_damage_and_one_error(clf, stills, tmp_path):
    frames, times = held(stills, 2.0)
    data = write_clip(tmp_path / "whole.mp4", frames, times, faststart=True).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    rows = list(clf.classify_video(cut, fps=1, top_k=1, batch_size=4))
    assert 2 <= len(rows) < 6
    assert all(r.ok for r in rows[:-1])
    assert rows[-1].error is not None and "truncated" in rows[-1].error
    assert rows[-1].time >= rows[-2].time


@pytest.mark.parametrize(("fmt", "ext"), [("matroska", "mkv"), ("mpegts", "ts")])
def test_a_cut_matroska_or_mpegts_file_ends_with_an_error_a_whole_one_does_not(stills, clf, tmp_path, fmt, ext):
    # neither container counts its frames in a header: a cut file must still be told from a whole one
    frames, times = held(stills, 2.0)  # 6 s
    whole = write_clip(tmp_path / f"whole.{ext}", frames, times, fmt=fmt)
    rows = list(read_frames(str(whole), clf.preprocess, Sampling(fps=2)))
    assert len(rows) == 12 and all(r.error is None for r in rows)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2 + 100])  # not on a 188-byte MPEG-TS packet boundary
    rows = list(read_frames(str(cut), clf.preprocess, Sampling(fps=2)))
    assert 1 <= len(rows) < 12 and all(r.error is None for r in rows[:-1])
    assert rows[-1].error is not None and "truncated" in rows[-1].error


@pytest.mark.parametrize("fps", [float("nan"), float("inf"), 0.0, -1.0])
def test_a_sampling_rate_that_is_not_a_finite_positive_number_is_refused(clf, tmp_path, fps):
    with pytest.raises(EffnetError, match="finite number > 0"):
        clf.classify_video(tmp_path / "clip.mp4", fps=fps)


def test_bad_videos_are_clear_errors(clf, tmp_path):
    with pytest.raises(VideoError, match="no video stream"):
        list(clf.classify_video(audio_only(tmp_path / "sound.m4a")))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(VideoError, match="cannot open video"):
        list(clf.classify_video(junk))
    with pytest.raises(VideoError, match="no such file"):
        list(clf.classify_video(tmp_path / "missing.mp4"))


def test_a_frame_larger_than_the_pixel_limit_is_refused_before_decoding(clf, stills, tmp_path):
    clip = write_clip(tmp_path / "big.mp4", [stills[0]] * 2, [0.0, 0.1])
    with pytest.raises(VideoError, match=r"256x192 frames are above the limit of 1,000 pixels"):
        list(read_frames(str(clip), clf.preprocess, max_pixels=1000))


def _p(index: int, probability: float) -> list[Prediction]:
    return [Prediction(index, f"n{index:08d}", f"class {index}", probability)]


def test_segments_ignore_one_frame_flicker_and_keep_boundaries():
    labels = [0, 0, 0, 7, 0, 0, 3, 3, 3, 3]
    probs = [0.9, 0.9, 0.9, 0.99, 0.9, 0.9, 0.3, 0.3, 0.3, 0.3]  # a confident odd frame; an unsure scene
    timeline = segments([i * 0.5 for i in range(10)], [_p(c, p) for c, p in zip(labels, probs, strict=True)])
    assert [(s.class_index, s.start, s.end, s.frames) for s in timeline] == [(0, 0.0, 3.0, 6), (3, 3.0, 5.0, 4)]
    assert str(timeline[0]) == "00:00.0\u201300:03.0  class 0  0.75"  # 0.9 x 5 and 0 (class 7's frame) / 6
    assert timeline[1].to_dict()["probability"] == 0.3


def test_a_live_http_stream_is_classified_as_it_plays_and_its_loss_ends_it(clf, stills, tmp_path):
    frames, times = held(stills, 2.0)
    data = write_clip(tmp_path / "live.ts", frames, times, fmt="mpegts").read_bytes()
    with StreamServer(data, seconds=8.0) as server:  # 6 s of video sent over 8 s
        video = clf.classify_video(server.url, fps=2, top_k=1, stall_timeout=5)
        rows, seen_while_playing = [], 0
        for r in video:
            rows.append(r)
            seen_while_playing += r.ok and not server.finished.is_set()
    assert seen_while_playing >= 1  # rows came out as the stream played, not at its end
    good = [r for r in rows if r.ok]
    # 6 s at 2 frames/s: 12 sampled; a live source drops (and counts) what inference could not keep up with
    assert video.stats.sampled >= 10 and len(good) + video.stats.dropped == video.stats.sampled
    assert video.stats.decoded == 60  # all of them: the decoder's last frames are flushed when the stream ends
    assert [r.time for r in good] == sorted(r.time for r in good)
    assert rows[-1].error is not None and "lost" in rows[-1].error and "404" in rows[-1].error


def test_a_stalled_stream_ends_with_an_error_after_the_timeout(clf, stills, tmp_path):
    frames, times = held(stills, 2.0)
    data = write_clip(tmp_path / "stall.ts", frames, times, fmt="mpegts").read_bytes()
    with StreamServer(data, seconds=2.0, stall_after=len(data) // 3) as server:
        start = time.monotonic()
        rows = list(clf.classify_video(server.url, fps=2, top_k=1, stall_timeout=1.5))
        took = time.monotonic() - start
    assert rows[-1].error is not None and "stalled: no data for 1.5 s" in rows[-1].error
    assert took < 30


def test_a_slow_consumer_of_a_live_stream_drops_frames_and_counts_them(clf, stills, tmp_path):
    frames, times = held(stills, 2.0)
    data = write_clip(tmp_path / "fast.ts", frames, times, fmt="mpegts").read_bytes()
    with StreamServer(data, seconds=1.5) as server:
        video = clf.classify_video(server.url, every=1, top_k=1)
        rows = []
        for r in video:
            rows.append(r)
            if r.ok:
                time.sleep(0.1)  # inference "slower" than the stream's 40 frames/s
    assert video.stats.dropped > 0
    assert sum(r.ok for r in rows) + video.stats.dropped == video.stats.sampled


def test_an_mp4_over_http_is_read_whole_like_a_file(clf, stills, tmp_path):
    frames, times = held(stills, 1.0)
    data = write_clip(tmp_path / "remote.mp4", frames, times, faststart=True).read_bytes()
    with StreamServer(data, seconds=0.5, file=True) as server:
        video = clf.classify_video(server.url.replace("live.ts", "remote.mp4"), fps=1, top_k=1)
        rows = list(video)
    # its duration is known: no latency mode, no drops, no reconnect (which would replay it), no error row
    assert [r.time for r in rows] == [0.0, 1.0, 2.0] and all(r.ok for r in rows)
    assert not video.stats.live and video.stats.reconnects == 0


def test_big_frames_are_converted_reduced_and_crop_like_the_full_conversion(clf, stills, tmp_path):
    # 1440x1080 for Lite0 (short side to 256: 341x256, twice that 682x512): converted at 720x540, half size
    clip = write_clip(tmp_path / "big.mp4", [stills[0].resize((1440, 1080))] * 2, [0.0, 0.1])
    sampling = Sampling(fps=None, every=1)
    full = [vf.crop for vf in read_frames(str(clip), clf.preprocess, sampling)]
    reduced = [vf.crop for vf in read_frames(str(clip), clf.preprocess, sampling, reduce=True)]
    diff = np.abs(full[0].astype(np.int16) - reduced[0].astype(np.int16))
    assert 0 < diff.mean() < 2.0, diff.mean()
    (kept, _) = list(read_frames(str(clip), clf.preprocess, sampling, reduce=True, keep_images=True))
    assert kept.image.size == (1440, 1080)  # --annotate draws on the full frame


def test_a_decode_budget_refuses_by_the_header_and_stops_on_the_frames_past_a_bound():
    from fractions import Fraction

    from effnet.video import DecodeBudget, VideoLimitError, VideoLimits

    budget = DecodeBudget(VideoLimits(max_seconds=10, max_decode_mp=1))
    budget.check_header(100, 100, 3.0, 90, Fraction(30))  # 90 x 0.01 MP = 0.9 MP, 3 s: within both
    budget.check_header(100, 100, None, 0, None)  # a header that states nothing: left to the frames
    with pytest.raises(VideoLimitError, match=r"150 frames of 100x100 \(its header\) is 1\.5 megapixels") as e:
        budget.check_header(100, 100, 5.0, 0, Fraction(30))  # no frame count: its duration x frame rate
    assert e.value.kind == "too_costly"
    with pytest.raises(VideoLimitError, match=r"12\.0 s long") as e:
        budget.check_header(10, 10, 12.0, 0, None)
    assert e.value.kind == "too_long"
    for i in range(100):  # 100 frames of 0.01 MP: exactly 1 MP, not past it
        budget.charge(100, 100, i / 30)
    with pytest.raises(VideoLimitError, match="at frame 101") as e:
        budget.charge(100, 100, 100 / 30)
    assert e.value.kind == "too_costly"
    with pytest.raises(VideoLimitError, match=r"a frame at 10\.1 s") as e:
        DecodeBudget(VideoLimits(max_seconds=10)).charge(10, 10, 10.1)
    stop = DecodeBudget(VideoLimits(), should_stop=lambda: True)
    with pytest.raises(VideoLimitError) as e:
        stop.charge(10, 10, 0.0)
    assert e.value.kind == "stopped" and stop.frames == 0
