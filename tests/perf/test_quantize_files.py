"""`effnet quantize -o DIR` writes beside DIR's other files (`-o .` too), and `classify`, `eval` and `serve`
run the quantized or exported file with `--model-path` (issue 24, items 2 and 8)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import httpx
import pytest

from tests.serve.serve_fixtures import start_server  # noqa: F401  (fixture)
from tests.testutils import EXAMPLES, run_cli

pytest.importorskip("nncf", reason="nncf not installed (pip install 'effnet[quantize]')")
pytest.importorskip("openvino", reason="openvino not installed")

LITE0 = ("--model", "efficientnet-lite0")


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory, sample_images, lite0_checkpoint) -> Path:
    """A folder holding the user's own files, quantized into with `-o .` from inside it."""
    folder = tmp_path_factory.mktemp("project")
    (folder / "notes.txt").write_text("mine")
    (folder / "data").mkdir()
    (folder / "data" / "keep.txt").write_text("also mine")
    r = run_cli(
        "quantize",
        *LITE0,
        "--calibration",
        *map(str, sample_images[::25]),
        "--subset-size",
        "4",
        "-o",
        ".",
        cwd=folder,
    )
    assert r.returncode == 0, r.stderr
    return folder


def test_quantize_o_keeps_the_folders_other_files_and_o_dot_works(int8_dir):
    assert (int8_dir / "notes.txt").read_text() == "mine"
    assert (int8_dir / "data" / "keep.txt").read_text() == "also mine"
    names = sorted(p.name for p in int8_dir.iterdir())
    assert names == ["data", "model.bin", "model.xml", "notes.txt", "quantize.json"]  # nothing temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((int8_dir / "model.xml").stat().st_mode) == 0o666 & ~umask
    assert json.loads((int8_dir / "quantize.json").read_text())["calibration_images"] == 4


def test_model_path_runs_the_int8_ir_in_classify_eval_and_serve(int8_dir, sample_dir, tmp_path, start_server):  # noqa: F811
    xml = str(int8_dir / "model.xml")
    r = run_cli("classify", *LITE0, "--model-path", xml, "--json", str(EXAMPLES / "coffee.png"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["predictions"][0]["label"] == "espresso"
    # the file given is the file run: a broken copy fails, naming it
    broken = tmp_path / "broken.xml"
    broken.write_text(Path(xml).read_text()[:5000])
    shutil.copy(int8_dir / "model.bin", tmp_path / "broken.bin")
    r = run_cli("classify", *LITE0, "--model-path", str(broken), str(EXAMPLES / "coffee.png"))
    assert r.returncode == 1 and str(broken) in r.stderr and "Traceback" not in r.stderr

    report = tmp_path / "report.json"
    r = run_cli("eval", str(sample_dir), *LITE0, "--model-path", xml, "--limit", "4", "--json", str(report))
    assert r.returncode == 0, r.stderr
    got = json.loads(report.read_text())
    assert (got["backend"], got["precision"], got["count"]) == ("openvino", "int8", 4)

    server = start_server(*LITE0, "--model-path", xml)
    summary = httpx.get(f"{server.url}/v1/model", timeout=30).json()
    assert (summary["backend"], summary["precision"]) == ("openvino", "int8")
    answer = httpx.post(f"{server.url}/v1/classify", content=(EXAMPLES / "coffee.png").read_bytes(), timeout=60).json()
    assert answer["predictions"][0]["label"] == "espresso"


def test_model_path_runs_an_exported_onnx_file_at_any_batch(tmp_path, sample_dir, lite0_checkpoint):
    onnx_file = tmp_path / "lite0.onnx"  # `export onnx` writes the card's static batch of 1
    assert run_cli("export", "onnx", *LITE0, "-o", str(onnx_file)).returncode == 0
    report = tmp_path / "report.json"
    args = ("eval", str(sample_dir), *LITE0, "--limit", "6", "--batch-size", "3", "--json", str(report))
    r = run_cli(*args, "--model-path", str(onnx_file))
    assert r.returncode == 0, r.stderr
    got = json.loads(report.read_text())
    assert (got["backend"], got["count"]) == ("onnxruntime", 6)
    r = run_cli(*args, "--model-path", str(onnx_file), "--backend", "openvino")
    assert r.returncode == 2 and "runs on --backend onnxruntime" in r.stderr
