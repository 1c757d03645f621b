"""What a Ray worker does with one video, without Ray (effnet.distributed.video_rows): the rows of a copy made
from the streamed bytes name the user's path, the copy is removed, and the ways a video can fail to reach the
worker are one error row each."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

pytest.importorskip("av", reason="PyAV (effnet[video]) is not installed")
pytest.importorskip("pyarrow", reason="the ray extra is not installed (pip install 'effnet[ray]')")

from effnet.distributed.video_rows import (  # noqa: E402
    VideoRequest,
    VideoSummary,
    classify_one,
    frame_result,
    frame_row_dict,
    too_big_to_stream,
)
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
