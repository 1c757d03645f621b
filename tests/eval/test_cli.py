"""`effnet eval`: end to end in a subprocess once, then in-process for exit codes and error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import effnet.backends
import effnet.evaluate
import effnet.predict
from effnet.cli import main
from effnet.evaluate import EvalReport

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command gets as far as loading a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although the arguments or data are bad")

    monkeypatch.setattr(effnet.predict, "Classifier", refuse)


@pytest.fixture
def reuse_lite0(monkeypatch: pytest.MonkeyPatch, lite0_classifier) -> None:
    """In-process runs reuse the session's Lite0 classifier instead of loading it again."""
    monkeypatch.setattr(effnet.predict, "Classifier", lambda *a, **k: lite0_classifier)


@pytest.mark.slow
def test_end_to_end_subprocess(sample_dir: Path, sample_report: EvalReport, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "effnet",
            "eval",
            str(sample_dir),
            "--model",
            "efficientnet-lite0",
            "--batch-size",
            "16",
            "--workers",
            "2",
            "--json",
            str(out),
            "--min-top1",
            "85",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads(out.read_text())
    # No --backend: the CLI default `auto` picks the fastest installed backend, always at fp32.
    expected_backend = effnet.backends.resolve_auto("fp32")[0]
    assert (report["count"], report["failed"], report["backend"], report["precision"]) == (
        100,
        0,
        expected_backend,
        "fp32",
    )
    # Same numbers as the library call on the same data.
    assert (report["top1_correct"], report["top5_correct"]) == (sample_report.top1_correct, sample_report.top5_correct)
    assert f"top-1       {sample_report.top1:.2f} %  ({sample_report.top1_correct}/100)" in proc.stdout
    assert "reference  top-1 75.10 %" in proc.stdout and "img/s" in proc.stdout
    assert "most confused" in proc.stdout


@pytest.mark.slow
def test_min_top1_sets_the_exit_code(
    monkeypatch: pytest.MonkeyPatch,
    reuse_lite0,
    sample_report: EvalReport,
    sample_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(effnet.evaluate, "evaluate", lambda *a, **k: sample_report)
    base = ["eval", str(sample_dir), "--model", "efficientnet-lite0", "--no-progress"]
    assert main([*base, "--min-top1", str(sample_report.top1)]) == 0  # equal passes
    assert main([*base, "--min-top1", str(sample_report.top1 + 0.5)]) == 1
    err = capsys.readouterr().err
    assert f"top-1 {sample_report.top1:.2f} % is below --min-top1 {sample_report.top1 + 0.5:g}" in err


@pytest.mark.slow
def test_unreadable_image_is_reported_and_fails(
    reuse_lite0, sample_images: list[Path], tmp_path: Path, build_layout, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = build_layout(sample_images[:2], tmp_path / "data", "synset-prefix")
    (data / "n01440764_broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "r.json"
    assert main(["eval", str(data), "--model", "efficientnet-lite0", "--no-progress", "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert "n01440764_broken.JPEG" in captured.err
    assert "1 of 3 images could not be read; the accuracy above is over the 2 that could" in captured.err
    assert "2 evaluated, 1 failed" in captured.out
    report = json.loads(out.read_text())  # written even though the run fails
    assert (report["count"], report["failed"]) == (2, 1)
    assert report["failures"][0]["path"].endswith("n01440764_broken.JPEG") and report["failures"][0]["error"]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--limit", "0"], 2, "--limit must be >= 1"),
        (["--batch-size", "0"], 2, "--batch-size must be >= 1"),
        (["--workers", "0"], 2, "--workers must be >= 1"),
        (["--min-top1", "150"], 2, "--min-top1 is a percentage between 0 and 100"),
        (["--json", "no/such/folder/r.json"], 2, "folder no/such/folder does not exist"),
        (["--annotations", "missing.txt"], 1, "annotation file missing.txt does not exist"),
    ],
    ids=["limit", "batch-size", "workers", "min-top1", "json-folder", "annotations"],
)
def test_bad_arguments_fail_before_the_model_loads(
    no_model, sample_dir: Path, args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(sample_dir), *args]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "layout, message",
    [
        ("empty", "no images in"),
        ("unknown-synset", "unknown synset in n99999999_x.JPEG"),
        ("missing-entry", "1 of 2 images in"),
    ],
)
def test_bad_data_fails_before_the_model_loads(
    no_model, tmp_path: Path, layout: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    extra: list[str] = []
    if layout == "unknown-synset":
        (data / "n99999999_x.JPEG").write_bytes(b"x")
    elif layout == "missing-entry":
        (data / "a.JPEG").write_bytes(b"x")
        (data / "b.JPEG").write_bytes(b"x")
        (tmp_path / "val.txt").write_text("a.JPEG 0\n")
        extra = ["--annotations", str(tmp_path / "val.txt")]
    assert main(["eval", str(data), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("effnet: error: ") and message in err


def test_backend_options_pass_through(sample_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["eval", str(sample_dir), "--model", "efficientnet-lite0", "--no-progress"]
    assert main([*base, "--backend", "no-such-backend"]) == 1
    assert "unknown backend 'no-such-backend'" in capsys.readouterr().err
    assert main([*base, "--precision", "int3"]) == 1  # no backend runs it: refused, naming the choices
    err = capsys.readouterr().err
    assert "precision" in err and "'int3'" in err
