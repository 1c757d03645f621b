"""What a Ray worker does with one video, without Ray (effnet.distributed.video_rows): the rows of a copy made
from the streamed bytes name the user's path, the copy is removed, and the ways a video can fail to reach the
worker are one error row each."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("av", reason="PyAV (effnet[video]) is not installed")
pytest.importorskip("pyarrow", reason="the ray extra is not installed (pip install 'effnet[ray]')")

from effnet.distributed.video_rows import (  # noqa: E402
    VideoRequest,
    VideoSummary,
    actor_temp_dir,
    classify_one,
    frame_result,
    frame_row_dict,
    renamed,
    too_big_to_stream,
)
from effnet.distributed.videos import list_media, names_by_entry, positional_names, refused_stream  # noqa: E402
from effnet.errors import EffnetError  # noqa: E402
from effnet.predict import Classifier  # noqa: E402
from tests.video.clips import held, photo, write_clip  # noqa: E402

LITE0 = "efficientnet-lite0"


def rows_of(tables) -> list[dict]:
    return [row for table in tables for row in table.to_pylist()]


def test_a_copy_of_the_bytes_gives_rows_named_as_the_user_named_the_video(sample_images, tmp_path):
    frames, times = held([photo(p) for p in sample_images[:2]], 1.0)
    whole = write_clip(tmp_path / "whole.mp4", frames, times, faststart=True).read_bytes()
    clf = Classifier(LITE0, backend="torch", progress=False)
    request = VideoRequest(fps=2, top_k=2, batch_size=4, segments=3)
    before = set(Path(tempfile.gettempdir()).glob("effnet-video-*"))
    summary = VideoSummary("cams/cut.mp4")
    cut = whole[: int(len(whole) * 0.6)]  # damaged: rows up to the damage, then the reader's error row
    rows = rows_of(classify_one(clf, "cams/cut.mp4", cut, None, request, summary, node="10.0.0.7"))
    assert set(Path(tempfile.gettempdir()).glob("effnet-video-*")) == before  # the copy is gone
    assert len(rows) >= 2 and {r["path"] for r in rows} == {"cams/cut.mp4"}
    assert all(r["error"] is None and len(r["class_index"]) == 2 for r in rows[:-1])
    assert rows[-1]["error"].startswith("cams/cut.mp4: truncated: "), rows[-1]["error"]  # not the copy's name
    assert [r["time"] for r in rows[:-1]] == [i / 2 for i in range(len(rows) - 1)]
    assert summary.error == rows[-1]["error"] and summary.opened and summary.node == "10.0.0.7"
    assert summary.classified == len(rows) - 1 and summary.sampled >= summary.classified and summary.segments
    line = frame_row_dict(rows[0])
    assert list(line) == ["path", "frame", "time", "predictions"] and line["frame"] == 0
    assert frame_result(rows[0]).predictions[0].class_index == rows[0]["class_index"][0]


def test_a_video_that_never_reached_the_worker_is_one_error_row(tmp_path):
    request = VideoRequest()
    summary = VideoSummary("a.mp4")
    missing = str(tmp_path / "a.mp4")  # --shared-inputs promised every node sees it; this one does not
    (row,) = rows_of(classify_one(None, "a.mp4", None, missing, request, summary, node="10.0.0.7"))
    assert row["error"] == "a.mp4: no such file on node 10.0.0.7 (--shared-inputs: every node must see it)"
    assert frame_row_dict(row) == {"path": "a.mp4", "error": row["error"]} and not summary.opened
    summary = VideoSummary("b.mp4")
    (row,) = rows_of(classify_one(None, "b.mp4", None, None, request, summary, read_error="b.mp4: no such file"))
    assert frame_row_dict(row) == {"path": "b.mp4", "error": "b.mp4: no such file"} and summary.error == row["error"]


def test_a_local_video_too_big_for_one_streamed_value_is_an_error_row_naming_shared_inputs(tmp_path):
    big, small = tmp_path / "big.mp4", tmp_path / "small.mp4"
    with big.open("wb") as f:
        f.truncate(2**31)  # sparse: 2 GiB that take no disk; one byte over an Arrow binary value's limit
    small.write_bytes(b"x")
    errors = too_big_to_stream([str(big), str(small), f"file://{big}", "s3://bucket/huge.mp4", str(tmp_path / "gone")])
    assert set(errors) == {str(big), f"file://{big}"}
    assert errors[str(big)].startswith(f"{big}: 2.0 GiB, more than") and "--shared-inputs" in errors[str(big)]


def test_a_full_temp_disk_is_that_video_s_error_row_and_leaves_no_partial_copy(tmp_path, monkeypatch):
    real_fdopen = os.fdopen

    class Full:  # the worker's temp disk fills after a few bytes (ENOSPC), as a real full disk does
        def __init__(self, fd: int, mode: str) -> None:
            self.f = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

        def write(self, data: bytes) -> int:
            self.f.write(data[:10])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdopen", Full)
    folder = tmp_path / "worker"
    folder.mkdir()
    summary = VideoSummary("cams/a.mp4")
    rows = rows_of(classify_one(None, "cams/a.mp4", b"x" * 100, None, VideoRequest(), summary, "10.0.0.7",
                                temp_dir=str(folder)))  # fmt: skip
    (row,) = rows
    assert row["path"] == "cams/a.mp4" and row["frame"] is None
    assert row["error"].startswith(
        f"cams/a.mp4: cannot copy it to the worker's temp folder {folder} on node 10.0.0.7 ("
    )
    assert "No space left on device" in row["error"] and "--shared-inputs" in row["error"]
    assert summary.error == row["error"] and not summary.opened
    assert list(folder.iterdir()) == []  # the partial copy is gone


def test_a_worker_clears_the_copies_of_killed_workers_on_its_node_and_keeps_live_ones(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, live = tmp_path / f"effnet-videos-{int(gone.stdout)}", tmp_path / f"effnet-videos-{os.getppid()}"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "effnet-video-abc.mp4").write_bytes(b"left by a killed worker")
    mine = Path(actor_temp_dir(str(tmp_path)))
    assert mine == tmp_path / f"effnet-videos-{os.getpid()}" and mine.is_dir()
    assert not dead.exists()  # its worker is gone: nothing will remove its copy but this
    assert (live / "effnet-video-abc.mp4").exists()  # a running worker's copy is its own


def test_each_command_line_entry_keeps_its_name_even_when_the_same_video_is_given_twice(tmp_path, monkeypatch):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "clip.mp4").write_bytes(b"x")
    (tmp_path / "c" / "cat.jpg").write_bytes(b"x")
    listed = tmp_path / "list.txt"
    listed.write_text("c/clip.mp4\ns3://bucket/v.mkv\nc/cat.jpg\n")
    monkeypatch.chdir(tmp_path)
    absolute = str(tmp_path / "c" / "clip.mp4")
    entries, names, images = list_media(["c/clip.mp4", absolute, "c/clip.mp4"], [str(listed)])
    assert entries == [absolute] * 4 + ["s3://bucket/v.mkv"] and images == 1
    assert names == ["c/clip.mp4", absolute, "c/clip.mp4", "c/clip.mp4", "s3://bucket/v.mkv"]  # as written
    by_entry = names_by_entry(entries, names)
    assert by_entry[absolute] == ["c/clip.mp4", absolute, "c/clip.mp4", "c/clip.mp4"]
    assert positional_names(entries, by_entry) == names  # one summary per entry, in the order given
    table = _error_table("c/clip.mp4", "c/clip.mp4: truncated")
    (row,) = renamed(table, "c/clip.mp4", absolute).to_pylist()
    assert (row["path"], row["error"]) == (absolute, f"{absolute}: truncated")


def _error_table(name: str, error: str):
    summary = VideoSummary(name)
    (table,) = classify_one(None, name, None, None, VideoRequest(), summary, read_error=error)
    return table


def test_engine_ray_refuses_live_streams_but_not_files_over_http():
    assert refused_stream("http://host/live.m3u8") and refused_stream("https://host/manifest.mpd")
    assert refused_stream("rtsp://cam/1") and refused_stream("/dev/video0") and refused_stream("https://host/live")
    assert not refused_stream("https://host/clip.mp4?sig=1") and not refused_stream("s3://b/clip.mp4")
    with pytest.raises(EffnetError, match="live.m3u8: streams and cameras are classified locally only"):
        list_media(["http://host/live.m3u8"])
