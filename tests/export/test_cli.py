"""`effnet export onnx|openvino` and `effnet classify --backend`, as a user runs them."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import openvino as ov
import pytest

from effnet.cli import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m effnet ...` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "effnet", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def test_export_onnx_and_openvino_write_exactly_the_artifacts(tmp_path, lite0_checkpoint):
    out = tmp_path / "onnx"
    proc = run_cli("export", "onnx", "--model", "efficientnet-lite0", "-o", str(out / "lite0.onnx"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["files"] == [str(out / "lite0.onnx")] and summary["output"] == "prob"
    assert summary["weights"] == "efficientnet-lite0.pypi"
    assert [p.name for p in out.iterdir()] == ["lite0.onnx"]
    onnx.checker.check_model(onnx.load(str(out / "lite0.onnx")))

    proc = run_cli("export", "openvino", "--model", "efficientnet-lite0", "-o", str(tmp_path / "ir"), "--fp16")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / "ir" / f"efficientnet-lite0.{s}") for s in ("xml", "bin")]
    assert sorted(p.name for p in (tmp_path / "ir").iterdir()) == ["efficientnet-lite0.bin", "efficientnet-lite0.xml"]
    model = ov.Core().read_model(str(tmp_path / "ir" / "efficientnet-lite0.xml"))
    assert model.input(0).get_names() >= {"data"} and model.output(0).get_names() >= {"prob"}


def test_classify_gives_the_same_answers_on_every_backend(tmp_path, sample_images):
    images = [str(p) for p in sample_images[::20]]
    env = {"EFFNET_HOME": str(tmp_path / "home")}
    answers = {}
    for backend in ("torch", "onnxruntime", "openvino"):
        proc = run_cli(
            "classify",
            "--model",
            "efficientnet-lite0",
            "--backend",
            backend,
            "--json",
            "--top-k",
            "3",
            "--no-progress",
            *images,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        answers[backend] = [json.loads(line) for line in proc.stdout.splitlines()]
    for backend in ("onnxruntime", "openvino"):
        for ours, ref in zip(answers[backend], answers["torch"], strict=True):
            assert ours["path"] == ref["path"]
            assert [p["class_index"] for p in ours["predictions"]] == [p["class_index"] for p in ref["predictions"]]
            assert abs(ours["predictions"][0]["probability"] - ref["predictions"][0]["probability"]) < 1e-5


@pytest.mark.parametrize(
    "fmt,target", [("onnx", "blocker/out.onnx"), ("openvino", "blocker/ir"), ("openvino", "blocker")]
)
def test_unwritable_output_is_one_clear_line_and_writes_nothing(tmp_path, capsys, lite0_checkpoint, fmt, target):
    (tmp_path / "blocker").write_text("a file where a directory is expected")
    rc = main(["export", fmt, "--model", "efficientnet-lite0", "-o", str(tmp_path / target)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("effnet: error: ") and "not a directory" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]


def test_failed_onnx_write_leaves_no_partial_file(tmp_path, capsys, monkeypatch, lite0_checkpoint):
    def disk_full(proto, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", disk_full)
    rc = main(["export", "onnx", "--model", "efficientnet-lite0", "-o", str(tmp_path / "m.onnx")])
    assert rc == 1 and "No space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_failed_openvino_write_leaves_no_partial_files(tmp_path, capsys, monkeypatch, lite0_checkpoint):
    def disk_full(model, path, *args, **kwargs):
        with open(path, "w") as f:
            f.write("<net")
        raise RuntimeError("Can't open bin file: No space left on device")

    monkeypatch.setattr(ov, "save_model", disk_full)
    out = tmp_path / "ir"
    rc = main(["export", "openvino", "--model", "efficientnet-lite0", "-o", str(out)])
    assert rc == 1 and "No space left on device" in capsys.readouterr().err
    assert not out.exists()  # no partial file, and no empty folder the export made (issue 24)


def test_missing_openvino_package_names_the_extra(tmp_path, capsys, monkeypatch, lite0_checkpoint):
    monkeypatch.setitem(sys.modules, "openvino", None)
    rc = main(["export", "openvino", "--model", "efficientnet-lite0", "-o", str(tmp_path / "ir")])
    assert rc == 1 and "pip install 'effnet[openvino]'" in capsys.readouterr().err
    assert not any((tmp_path / "ir").glob("*.xml"))


@pytest.mark.parametrize("args", [["--opset", "9"], ["--batch-size", "0"]])
def test_bad_options_are_usage_errors(tmp_path, capsys, args):
    rc = main(["export", "onnx", "--model", "efficientnet-lite0", "-o", str(tmp_path / "m.onnx"), *args])
    assert rc == 2 and "effnet: error:" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_default_exports_are_the_cards_static_1x3xhxw_and_benchmark_app_runs_them(tmp_path, lite0_checkpoint):
    """What a user points OpenVINO's own tools at must run as it is (a dynamic batch made benchmark_app stop
    with "Input data is dynamic. Provide data shapes!")."""
    ir = tmp_path / "ir"
    assert run_cli("export", "openvino", "--model", "efficientnet-lite0", "-o", str(ir)).returncode == 0
    model = ov.Core().read_model(str(ir / "efficientnet-lite0.xml"))
    assert str(model.input(0).get_partial_shape()) == "[1,3,224,224]"
    path = tmp_path / "lite0.onnx"
    assert run_cli("export", "onnx", "--model", "efficientnet-lite0", "-o", str(path)).returncode == 0
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 224, 224]
    dyn = tmp_path / "dyn"
    proc = run_cli("export", "openvino", "--model", "efficientnet-lite0", "-o", str(dyn), "--dynamic-batch")
    assert proc.returncode == 0, proc.stderr
    assert str(ov.Core().read_model(str(dyn / "efficientnet-lite0.xml")).input(0).get_partial_shape()) == (
        "[?,3,224,224]"
    )
    tool = Path(sys.executable).with_name("benchmark_app")
    proc = subprocess.run(
        [str(tool), "-m", str(ir / "efficientnet-lite0.xml"), "-niter", "2", "-nireq", "1", "-hint", "latency"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Throughput" in proc.stdout
