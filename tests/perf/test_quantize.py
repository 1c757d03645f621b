"""`effnet quantize` (NNCF post-training INT8) and the int8 OpenVINO path, on Lite0's real weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from effnet.backends import create_backend
from tests.perf.perf_helpers import run_batches, top1_agreement
from tests.testutils import run_cli

pytest.importorskip("nncf", reason="nncf not installed (pip install 'effnet[quantize]')")
pytest.importorskip("openvino", reason="openvino not installed")


CALIBRATION = slice(1, None, 5)  # 20 of the 100 sample images (every 5th): a small calibration set


@pytest.fixture(scope="module")
def calibration_images(sample_images: list[Path]) -> list[Path]:
    return sample_images[CALIBRATION]


@pytest.fixture(scope="module")
def scoring_index(sample_images: list[Path]) -> list[int]:
    """The other 80 images: accuracy is scored on images the quantizer never saw."""
    calibration = set(range(len(sample_images))[CALIBRATION])
    held_out = [i for i in range(len(sample_images)) if i not in calibration]
    assert len(held_out) == len(sample_images) - len(calibration) > 0
    return held_out


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, calibration_images, lite0_checkpoint) -> dict:
    out = tmp_path_factory.mktemp("int8")
    r = run_cli(
        "quantize",
        "--model",
        "efficientnet-lite0",
        "--calibration",
        *map(str, calibration_images),
        "--subset-size",
        "20",
        "--bias-correction",
        "full",
        "-o",
        str(out),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # stdout is the JSON alone: NNCF's progress bars go to stderr


def test_quantize_writes_an_int8_ir(quantized):
    xml = Path(quantized["path"])
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert quantized["calibration_images"] == 20 and not quantized["skipped_images"]
    assert quantized["quantized_ops"]["Convolution"] > 0 and quantized["quantized_ops"]["GroupConvolution"] > 0
    assert "FakeQuantize" in xml.read_text()
    meta = json.loads((xml.parent / "quantize.json").read_text())
    assert meta["settings"]["preset"] == "performance" and meta["settings"]["model_type"] is None
    assert meta["settings"]["fast_bias_correction"] is False


def test_int8_top1_agreement_on_lite0(quantized, lite0_source, sample_crops, fp32_probs, scoring_index):
    """>= 97 % of the 80 held-out sample images keep their fp32 top-1 (measured 80/80 with full bias correction)."""
    backend = create_backend("openvino", lite0_source, precision="int8", model_path=quantized["path"])
    assert backend.precision == "int8"
    held_out = sample_crops[scoring_index]
    agreement, flips = top1_agreement(run_batches(backend, held_out), fp32_probs[scoring_index])
    assert agreement >= 0.97, f"int8 top-1 agreement {agreement:.0%}, flipped images {flips}"


def test_bench_runs_the_int8_ir(quantized):
    r = run_cli(
        "bench",
        "--model",
        "efficientnet-lite0",
        "--backend",
        "openvino",
        "--precision",
        "int8",
        "--model-path",
        quantized["path"],
        "--float-precision",
        "bf16",
        "--iterations",
        "2",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)["config"]
    assert cfg["precision"] == "int8" and cfg["backend_details"]["inference_precision"] == "bf16"


def test_quantize_into_the_cache_is_found_by_precision_int8(tmp_path, calibration_images, lite0_checkpoint):
    env = {"EFFNET_HOME": str(tmp_path)}
    missing = run_cli(
        "bench",
        "--model",
        "efficientnet-lite0",
        "--backend",
        "openvino",
        "--precision",
        "int8",
        "--iterations",
        "1",
        env=env,
    )
    assert missing.returncode == 1 and "effnet quantize" in missing.stderr and "Traceback" not in missing.stderr
    r = run_cli(
        "quantize",
        "--model",
        "efficientnet-lite0",
        "--calibration",
        *map(str, calibration_images[:4]),
        "--subset-size",
        "4",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.splitlines()[0]).is_relative_to(tmp_path)
    found = run_cli(
        "bench",
        "--model",
        "efficientnet-lite0",
        "--backend",
        "openvino",
        "--precision",
        "int8",
        "--iterations",
        "1",
        "--json",
        env=env,
    )
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["config"]["precision"] == "int8"


def test_quantize_errors_are_one_line(tmp_path, lite0_checkpoint):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("quantize", "--model", "efficientnet-lite0", "--calibration", str(empty), "-o", str(tmp_path / "o"))
    assert r.returncode == 1 and "no images found" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("quantize", "--model", "efficientnet-lite0", "--calibration", str(tmp_path / "nope"))
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = run_cli("quantize", "--model", "efficientnet-lite0", "--calibration", str(empty), "--subset-size", "0")
    assert r.returncode == 2
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_the_int8_ir_alone_answers_as_torch_within_its_gate(quantized, sample_images, fp32_probs, scoring_index):
    """Issue 28's round trip for the INT8 IR: `--model-path model.xml` with no other flag reads the model, the
    preprocessing and the labels from the IR itself, and keeps the fp32 top-1 on >= 97 % of the held-out images
    (the int8 gate, as above)."""
    from effnet.artifact import read_artifact_info

    art = read_artifact_info(Path(quantized["path"]))
    assert art.info is not None and art.info.model == "efficientnet-lite0" and art.output == "prob"
    calibrated = json.loads((Path(quantized["path"]).parent / "quantize.json").read_text())["calibration_set"]
    assert calibrated["images"] == 20 and len(calibrated["sha256"]) == 64  # which images made it
    held_out = [sample_images[i] for i in scoring_index]
    r = run_cli("classify", "--json", "--no-progress", "--model-path", quantized["path"], *map(str, held_out))
    assert r.returncode == 0, r.stderr
    top1 = {
        Path(row["path"]).name: row["predictions"][0]["class_index"] for row in map(json.loads, r.stdout.splitlines())
    }
    expected = {sample_images[i].name: int(fp32_probs[i].argmax()) for i in scoring_index}
    agreement = sum(top1[name] == cls for name, cls in expected.items()) / len(expected)
    assert agreement >= 0.97, f"int8 --model-path top-1 agreement {agreement:.0%}"
