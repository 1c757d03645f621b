"""Issue 29: one output-naming rule (effnet.outputs), outputs written whole with the modes a user expects,
symlinked outputs written through, report folders replaced whole, and literal text in every picture."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from effnet.errors import EffnetError
from effnet.fileio import atomic_write, check_replaceable_dir, whole_dir
from effnet.outputs import per_input_names


def test_names_keep_relative_paths_and_whole_file_names(tmp_path, monkeypatch):
    """The issue's case: 4 images, 2 of them named 1.jpg, two named photo.*: 4 different names."""
    monkeypatch.chdir(tmp_path)
    inputs = ["train/cat/1.jpg", "val/cat/1.jpg", "c/photo.jpg", "c/photo.png"]
    assert per_input_names(inputs, "gradcam.png") == [
        Path("train/cat/1.jpg.gradcam.png"),
        Path("val/cat/1.jpg.gradcam.png"),
        Path("c/photo.jpg.gradcam.png"),
        Path("c/photo.png.gradcam.png"),
    ]
    assert per_input_names(["only/x.jpg"], "m.png") == [Path("x.jpg.m.png")]
    assert per_input_names(["a/x.jpg", "./a/x.jpg"], "m.png") == [Path("x.jpg.m.png")] * 2  # one input, twice


def test_existing_file_keeps_its_mode_and_new_files_follow_the_umask(tmp_path):
    private = tmp_path / "r.json"
    private.write_text("old")
    private.chmod(0o600)
    atomic_write(private, lambda tmp: tmp.write_text("new"), "the report")
    assert private.read_text() == "new" and stat.S_IMODE(private.stat().st_mode) == 0o600
    old = os.umask(0o027)
    try:
        fresh = atomic_write(tmp_path / "n.json", lambda tmp: tmp.write_text("x"), "the report")
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640


def test_symlinked_output_is_written_through(tmp_path):
    real = tmp_path / "elsewhere" / "out.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "out.json"
    link.symlink_to(real)
    atomic_write(link, lambda tmp: tmp.write_text("new"), "the report")
    assert link.is_symlink() and real.read_text() == "new"


def test_report_folder_is_replaced_whole_or_not_at_all(tmp_path):
    report = tmp_path / "rep"
    with whole_dir(report, "the report") as d:
        (d / "report.html").write_text("run 1")
        (d / "a.png").write_text("1")
    with pytest.raises(EffnetError, match="No space left"), whole_dir(report, "the report") as d:  # disk full
        (d / "report.html").write_text("run 2")
        raise OSError(28, "No space left on device")
    assert sorted(p.name for p in report.iterdir()) == ["a.png", "report.html"]
    assert (report / "report.html").read_text() == "run 1"
    with whole_dir(report, "the report") as d:
        (d / "report.html").write_text("run 3")
    assert sorted(p.name for p in report.iterdir()) == ["report.html"]  # no figure of run 1 beside run 3
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no temporary folder left


def test_symlinked_report_folder_is_written_through(tmp_path):
    real = tmp_path / "real"
    with whole_dir(real, "the report") as d:
        (d / "report.html").write_text("run 1")
    link = tmp_path / "link"
    link.symlink_to(real)
    with whole_dir(link, "the report") as d:
        (d / "report.html").write_text("run 2")
    assert link.is_symlink() and (real / "report.html").read_text() == "run 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_report_folder_checked_before_the_work(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep")
    with pytest.raises(EffnetError, match="holds other files"):
        check_replaceable_dir(notes, "report.html", "the report")
    blocker = tmp_path / "a-file"  # unwritable even for root (tests run as root here): a file where a folder goes
    blocker.write_text("")
    with pytest.raises(EffnetError, match="cannot write the report"):
        check_replaceable_dir(blocker / "rep", "report.html", "the report")


def test_earlier_report_holding_a_users_file_is_refused(tmp_path):
    """A user's notes.txt put into an earlier report folder would be deleted when the folder is replaced whole:
    refused before the work, naming the file; an earlier report of only report files is replaceable."""
    rep = tmp_path / "rep"
    rep.mkdir()
    for name in ("report.html", "report.json", "accuracy.png", "accuracy.svg"):
        (rep / name).write_text("run 1")
    owned = {"report.html", "report.json", "accuracy.png", "accuracy.svg"}
    assert check_replaceable_dir(rep, "report.html", "the report", owned) == rep
    (rep / "notes.txt").write_text("mine")
    with pytest.raises(EffnetError, match="notes.txt"):
        check_replaceable_dir(rep, "report.html", "the report", owned)
    assert (rep / "notes.txt").read_text() == "mine"


def test_mount_point_report_folder_is_refused_before_the_work(tmp_path):
    """A mount point cannot be replaced by a rename (EBUSY, found only after the whole evaluation): refused up
    front, directly or through a symlink. /proc is a mount point on every Linux machine."""
    import os

    if not os.path.ismount("/proc"):
        raise AssertionError("this test needs Linux's /proc mount")
    with pytest.raises(EffnetError, match="mount point"):
        check_replaceable_dir("/proc", "report.html", "the report")
    (tmp_path / "link").symlink_to("/proc")
    with pytest.raises(EffnetError, match="mount point"):
        check_replaceable_dir(tmp_path / "link", "report.html", "the report")


def test_tex_like_labels_are_drawn_literally(tmp_path):
    """`a$^$b` as a class name crashed matplotlib's mathtext parser; now every label is literal text."""
    pytest.importorskip("matplotlib")
    from effnet.figures import figure_bytes, pyplot

    plt = pyplot("a test")
    fig, ax = plt.subplots()
    ax.set_title("a$^$b x_{1}^2 $\\frac{1}{0 ")
    ax.set_yticks([0, 1], ["ünïcödé 猫", "x" * 300])
    assert figure_bytes(fig, "png")[:4] == b"\x89PNG"
    import matplotlib

    # only our figures: a library user's own plots keep mathtext (it was switched off process-wide)
    assert matplotlib.rcParams["text.parse_math"] is True


def test_training_confusion_figure_draws_tex_like_class_names(tmp_path):
    """`effnet train` on class folders named like TeX crashed drawing RUN/confusion.png (after saving the model)."""
    pytest.importorskip("matplotlib")
    import torch

    from effnet.train.plots import plot_confusion

    classes = ["a$^$b", "x_{1}^2", "猫 " + "long" * 40]
    logits = torch.eye(3)
    target = plot_confusion(logits, torch.tensor([0, 1, 2]), classes, tmp_path / "confusion.png")
    assert target.read_bytes()[:4] == b"\x89PNG"
