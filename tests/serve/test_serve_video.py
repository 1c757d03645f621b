"""POST /v1/video on a real `effnet serve` process (Lite0): a clip's timed rows and segments, its bounds (size,
length, decode cost: from the header and as decoded), bad bodies, and its own admission.

Clips are made here from the sample photos (tests/video/clips.py); expected labels come from the same photos
classified as stills by the library.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import socket
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("av", reason="PyAV (effnet[video]) is not installed")

from tests.serve.serve_fixtures import LITE0, ServerProcess, lite0_classifier, metric_samples  # noqa: E402, F401
from tests.video.clips import held, photo, raw_h264, unstated_clip, write_clip  # noqa: E402

# Three sample photos Lite0 gets right with confidence (tests/video/test_video.py checks them the same way).
PHOTOS = ("n01440764_tench", "n01601694_water_ouzel", "n01860187_black_swan")
# The bounds of the server under test: small, so that small clips cross them.
MAX_MB, MAX_S, MAX_MP = 2, 7, 10  # the 640x480 clips below are ~0.9 MB
MAX_IMAGE_MP, MAX_FRAMES = 1, 60  # 1280x960 frames are above it; the 60-frame held clip at every=1 is not


@pytest.fixture(scope="module")
def video_server(tmp_path_factory, lite0_classifier):
    proc = ServerProcess(
        tmp_path_factory.mktemp("serve-video"),
        "--model", LITE0,
        "--max-video-mb", str(MAX_MB),
        "--max-video-seconds", str(MAX_S),
        "--max-video-decode-mp", str(MAX_MP),
        "--video-concurrency", "1",
        "--video-queue", "1",
        "--max-image-mp", str(MAX_IMAGE_MP),
        "--max-video-frames", str(MAX_FRAMES),
    )  # fmt: skip
    proc.wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stills(sample_dir):
    return [photo(sample_dir / f"{name}.JPEG") for name in PHOTOS]


@pytest.fixture(scope="module")
def held_clip(stills, tmp_path_factory) -> bytes:
    """The three photos held 2 s each at 10 frames/s: 60 frames of 256x192, 6 s (2.9 megapixels to decode)."""
    frames, times = held(stills, 2.0)
    return write_clip(tmp_path_factory.mktemp("clips") / "held.mp4", frames, times).read_bytes()


def post(url: str, body: bytes, query: str = "", **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/video{query}", content=body, timeout=120, **kw)


def decoded_frames(url: str) -> float:
    samples = metric_samples(httpx.get(f"{url}/metrics", timeout=10).text)
    return samples.get(("effnet_video_frames_total", (("stage", "decoded"),)), 0.0)


def test_a_clip_gives_timed_rows_and_the_stills_segments(video_server, held_clip, stills, lite0_classifier):
    expected = [r.predictions[0] for r in lite0_classifier.classify([np.asarray(im) for im in stills], top_k=1)]
    assert [p.synset for p in expected] == [n.split("_")[0] for n in PHOTOS]  # the stills are right
    r = httpx.post(f"{video_server.url}/v1/video", files={"video": ("held.mp4", held_clip, "video/mp4")}, timeout=120)
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["sampling"] == {"fps": 2.0} and a["top_k"] == 5 and a["model"] == LITE0
    frames = a["frames"]
    assert [f["frame"] for f in frames] == list(range(0, 60, 5))  # --fps 2 of 10 frames/s: every 5th
    assert [f["time"] for f in frames] == pytest.approx([i / 2 for i in range(12)])
    assert all(len(f["predictions"]) == 5 and "path" not in f for f in frames)
    segments = a["segments"]
    assert [s["class_index"] for s in segments] == [p.class_index for p in expected]
    assert [s["label"] for s in segments] == [p.label for p in expected]
    assert [t for s in segments for t in (s["start"], s["end"])] == pytest.approx([0, 2, 2, 4, 4, 6])
    assert a["video"]["frames_decoded"] == 60 and a["video"]["frames_classified"] == 12
    assert (a["video"]["width"], a["video"]["height"]) == (256, 192) and "error" not in a
    # every=N and top_k, as a raw body
    r = post(video_server.url, held_clip, "?every=20&top_k=2")
    assert r.status_code == 200, r.text
    assert [f["frame"] for f in r.json()["frames"]] == [0, 20, 40]
    assert all(len(f["predictions"]) == 2 for f in r.json()["frames"])


def test_a_clip_past_a_bound_is_refused_before_decoding_by_its_header(video_server, stills, tmp_path):
    url = video_server.url
    small = [im.resize((64, 48)) for im in stills]
    too_long = write_clip(tmp_path / "long.mp4", *held(small, 3.0, fps=2))  # 9 s > 7 s
    big = [im.resize((640, 480)) for im in stills]
    too_costly = write_clip(tmp_path / "costly.mp4", *held(big, 1.4, fps=10))  # 42 x 0.31 MP = 12.9 MP > 10
    before = decoded_frames(url)
    r = post(url, too_long.read_bytes())
    assert r.status_code == 422 and "9.0 s long (its header)" in r.json()["error"], r.text
    assert "--max-video-seconds" in r.json()["error"]
    r = post(url, too_costly.read_bytes())
    assert r.status_code == 422 and "42 frames of 640x480 (its header)" in r.json()["error"], r.text
    assert "--max-video-decode-mp" in r.json()["error"]
    assert decoded_frames(url) == before  # refused from the header: not one frame decoded


def test_a_header_that_states_nothing_is_stopped_while_decoding(video_server, stills):
    """Matroska written to a pipe states no duration and no frame count: the bounds stop the decoding itself."""
    url = video_server.url
    long_clip = unstated_clip([im.resize((64, 48)) for im in stills for _ in range(30)], fps=10)  # 9 s
    costly = unstated_clip([im.resize((640, 480)) for im in stills for _ in range(14)], fps=10)  # 12.9 MP
    before = decoded_frames(url)
    r = post(url, long_clip)
    assert r.status_code == 422 and "goes on past the limit of 7 s" in r.json()["error"], r.text
    after_long = decoded_frames(url)
    assert 70 <= after_long - before <= 72  # stopped at the first frame past 7 s (frame 71 of 90, at 7.1 s)
    r = post(url, costly)
    assert r.status_code == 422 and "went past the limit of 10 megapixels" in r.json()["error"], r.text
    assert decoded_frames(url) - after_long == 33  # 10 MP / 0.3072 MP per frame: the 33rd of 42 crosses it


def test_too_big_and_non_video_bodies_and_bad_parameters_are_4xx(video_server, held_clip):
    url = video_server.url
    r = post(url, os.urandom(int(MAX_MB * 1024 * 1024) + 1))
    assert r.status_code == 413 and "--max-video-mb" in r.json()["error"]
    r = post(url, b"not a video at all " * 100)
    assert r.status_code == 400 and "cannot open video" in r.json()["error"], r.text
    assert post(url, b"").status_code == 400
    r = post(url, held_clip[: len(held_clip) // 3])  # its index (moov) is at the end: cut off
    assert r.status_code == 400 and "cannot open video" in r.json()["error"], r.text
    bad = ("?fps=0", "?fps=nan", "?fps=2&every=3", "?every=0", "?window=0", "?colour=red", "?fps=1_000", "?fps=1e2")
    for query in (*bad, "?fps=inf", "?fps=%201", "?fps=-1", "?fps=.5"):
        r = post(url, held_clip, query)
        assert r.status_code == 400, (query, r.text)
    assert httpx.get(f"{url}/v1/video", timeout=30).status_code == 405
    spec = httpx.get(f"{url}/openapi.json", timeout=30).json()
    assert {"200", "413", "422", "503"} <= set(spec["paths"]["/v1/video"]["post"]["responses"])


def test_a_damaged_clip_gives_the_rows_before_the_damage_and_its_error(video_server, stills, tmp_path):
    frames, times = held(stills, 2.0)
    whole = write_clip(tmp_path / "fast.mp4", frames, times, faststart=True).read_bytes()  # index first
    r = post(video_server.url, whole[: len(whole) * 2 // 3])
    assert r.status_code == 200, r.text
    a = r.json()
    good = [f for f in a["frames"] if "predictions" in f]
    assert 3 <= len(good) < 12 and a["frames"][-1]["error"] == a["error"]
    assert a["error"].startswith("clip: truncated:") or "decoding stopped" in a["error"], a["error"]
    assert [f["time"] for f in good] == pytest.approx([i / 2 for i in range(len(good))])


def test_clips_beyond_their_places_get_503_and_images_are_still_answered(video_server, held_clip):
    """1 clip computing + 1 waiting: of 4 clips sent at once, the others are refused with Retry-After, and an
    image sent meanwhile is classified (clips never take classify's places)."""
    url = video_server.url
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        clips = [pool.submit(post, url, held_clip, "?every=1") for _ in range(4)]
        image = post_image(url)
        answers = [c.result() for c in clips]
    codes = sorted(a.status_code for a in answers)
    assert codes.count(503) >= 1 and set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 1
    for a in answers:
        if a.status_code == 503:
            assert int(a.headers["retry-after"]) >= 1 and "video clips" in a.json()["error"]
    assert image.status_code == 200, image.text


def post_image(url: str) -> httpx.Response:
    from tests.testutils import EXAMPLES

    return httpx.post(f"{url}/v1/classify", content=(EXAMPLES / "chelsea.png").read_bytes(), timeout=120)


def test_an_uploaded_ffconcat_script_opens_no_server_file(video_server):
    """FFmpeg detects its concat demuxer from a text body, which opens the files it names on the server's disk
    (a relative path: from the server's working directory, the repository here; an absolute one is refused by
    its safe mode): an upload is opened as one of the allowed containers only, so the script is refused before
    it is read, and the answer is the same whether the file it names exists or not."""
    url = video_server.url
    before = decoded_frames(url)
    errors = []
    for path in ("examples/chelsea.png", "examples/no-such-file.png"):
        r = post(url, f"ffconcat version 1.0\nfile {path}\n".encode())
        assert r.status_code == 400, r.text
        errors.append(r.json()["error"])
    assert errors[0] == errors[1] and "not a supported container format" in errors[0], errors
    assert decoded_frames(url) == before


def test_stills_and_webp_are_refused_as_not_a_video(video_server, stills):
    from tests.testutils import EXAMPLES

    r = post(video_server.url, (EXAMPLES / "chelsea.png").read_bytes())
    assert r.status_code == 400 and "still image (PNG)" in r.json()["error"], r.text
    assert "/v1/classify" in r.json()["error"]
    buffer = io.BytesIO()
    stills[0].save(buffer, "WEBP", save_all=True, append_images=stills[1:], duration=500)
    r = post(video_server.url, buffer.getvalue())
    assert r.status_code == 400 and "animated WebP is not supported" in r.json()["error"], r.text


def test_a_frame_above_the_pixel_limit_stops_decoding_whatever_the_header_says(video_server, stills):
    """A raw H.264 stream whose first SPS says 64x48 and whose later frames are 1280x960 (1.2 MP > 1)."""
    url = video_server.url
    # 30 small frames: FFmpeg's probe of a raw stream reads a few frames, and must see only small ones
    body = raw_h264([im.resize((64, 48)) for im in stills] * 10 + [stills[0].resize((1280, 960))] * 2)
    before = decoded_frames(url)
    r = post(url, body)
    assert r.status_code == 413, r.text
    assert "1280x960" in r.json()["error"] and "decoding stopped there" in r.json()["error"]
    assert decoded_frames(url) - before == 31  # the 30 small ones and the first big one


def test_the_answer_is_bounded_in_frames_and_top_k(video_server, held_clip, stills):
    url = video_server.url
    r = post(url, held_clip, "?every=20&top_k=50")
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["top_k"] == 20 and a["top_k_requested"] == 50
    assert all(len(f["predictions"]) == 20 for f in a["frames"])
    long_clip = unstated_clip([im.resize((64, 48)) for im in stills for _ in range(22)], fps=10)  # 66 frames
    before = decoded_frames(url)
    r = post(url, long_clip, "?every=1")
    assert r.status_code == 422, r.text
    assert "--max-video-frames" in r.json()["error"]
    assert decoded_frames(url) - before == MAX_FRAMES + 1  # stopped at the frame past it


def test_uploads_in_progress_hold_their_places(video_server, held_clip):
    """1 computing + 1 waiting: two clients that are still sending their bodies take both places, so a third
    is refused at once; when they hang up, the places are free again."""
    host, port = video_server.url.removeprefix("http://").split(":")
    held = []
    for _ in range(2):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(f"POST /v1/video HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n\r\n".encode() + b"x" * 10)
        held.append(s)
    try:
        time.sleep(0.5)  # their requests reach the route
        r = post(video_server.url, held_clip, "?every=20")
        assert r.status_code == 503 and "video clips" in r.json()["error"], r.text
    finally:
        for s in held:
            s.close()
    for _ in range(40):  # the hang-ups are seen by the server's reads
        r = post(video_server.url, held_clip, "?every=20")
        if r.status_code != 503:
            break
        time.sleep(0.25)
    assert r.status_code == 200, r.text


def test_a_zero_queue_is_accepted_and_unbounded_values_are_not():
    from effnet.serve.config import ServeConfig

    assert ServeConfig(video_queue=0, explain_queue=0).video_queue == 0
    for field, value in (("video_timeout_s", 1e12), ("max_video_mb", float("inf")), ("max_image_mp", float("nan"))):
        with pytest.raises(ValueError, match=field):
            ServeConfig(**{field: value})
