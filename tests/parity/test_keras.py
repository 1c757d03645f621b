"""Parity with Keras 3 (`keras.applications.EfficientNetB0`, torch backend) through effnet's Keras reader.

Keras writes random weights and its own logits in a subprocess (tests/parity/keras_reference.py). Both
file layouts (`.weights.h5`, legacy `.h5`) are read by effnet.weights.keras: conv HWIO -> OIHW, depthwise
H W C 1 -> C 1 H W, dense (in, out) -> (out, in), and the in-graph Rescaling(1/255) + Normalization turned
into the preprocessing mean/std. Keras pads stride-2 convs with ZeroPadding2D(correct_pad) + a valid conv,
computed from the static input size: that is TF SAME at that size, so effnet is built with padding="same"
and TF's BN eps 1e-3. Inputs are 0-255 pixels; effnet gets them normalized by the converted preprocessing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import effnet
from effnet.model import EfficientNet
from effnet.specs import get_variant
from effnet.weights.keras import read_keras_layers
from effnet.weights.to_native import read_as_native
from tests.testutils import REPO, run_cli

SIZES = (224, 257)  # B0's size, and an odd one where TF SAME pads symmetrically at every stride-2 layer


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory) -> Path:
    pytest.importorskip("h5py")
    out = tmp_path_factory.mktemp("keras")
    script = REPO / "tests" / "parity" / "keras_reference.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(out), "EfficientNetB0", *map(str, SIZES)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _logits(model: torch.nn.Module, x_nhwc: np.ndarray, mean, std) -> np.ndarray:
    x = (torch.from_numpy(x_nhwc) - torch.tensor(mean)) / torch.tensor(std)
    with torch.inference_mode():
        return model(x.permute(0, 3, 1, 2).contiguous()).numpy()


@pytest.mark.parametrize("file", ["model.weights.h5", "model.h5"])
def test_logits_match_keras(keras_files, file):
    state, info = read_as_native(keras_files / file)
    assert (info.model, info.padding, info.bn_eps) == ("efficientnet-b0", "same", 1e-3)
    np.testing.assert_allclose(info.preprocess.mean, (123.675, 116.28, 103.53), rtol=1e-6)
    np.testing.assert_allclose(info.preprocess.std, (58.395, 57.12, 57.375), rtol=1e-6)
    ours = EfficientNet(get_variant("efficientnet-b0"), padding=info.padding, bn_eps=info.bn_eps)
    ours.load_state_dict(state, strict=False)
    ours.eval()
    for size in SIZES:
        ref = np.load(keras_files / f"logits_{size}.npy")
        out = _logits(ours, np.load(keras_files / f"x_{size}.npy"), info.preprocess.mean, info.preprocess.std)
        delta = float(np.abs(out - ref).max())
        print(f"keras {file} b0 {size}px: max |d logits| = {delta:.2e} (max |logit| {np.abs(ref).max():.2f})")
        assert np.abs(ref).max() > 1.0 and np.abs(ref[0] - ref[1]).max() > 0.5  # input-dependent logits
        assert delta < 1e-4, (file, size, delta)


def test_both_layouts_hold_the_same_tensors(keras_files):
    new, legacy = read_keras_layers(keras_files / "model.weights.h5"), read_keras_layers(keras_files / "model.h5")
    assert set(new) == set(legacy) and "block1a_dwconv" in new and "normalization" in new
    for name in new:
        assert [a.shape for _, a in new[name]] == [a.shape for _, a in legacy[name]], name
    assert legacy["stem_bn"][0][0] == "gamma" and new["stem_bn"][0][0] is None  # names vs build() order


def test_convert_round_trip(keras_files, tmp_path):
    """Keras .weights.h5 -> `effnet weights convert` -> safetensors -> create_model(pretrained=OUT): Keras' logits."""
    out = tmp_path / "b0_keras.safetensors"
    proc = run_cli("weights", "convert", str(keras_files / "model.weights.h5"), str(out))
    assert proc.returncode == 0, proc.stderr
    ours = effnet.create_model("efficientnet-b0", pretrained=out)
    pre = effnet.weights.native.read_native_info(out).preprocess
    size = SIZES[1]
    ref = np.load(keras_files / f"logits_{size}.npy")
    delta = float(np.abs(_logits(ours, np.load(keras_files / f"x_{size}.npy"), pre.mean, pre.std) - ref).max())
    print(f"keras round trip b0 {size}px: max |d logits| = {delta:.2e}")
    assert delta < 1e-4


def test_symmetric_padding_does_not_match_keras(keras_files):
    """The control: Keras' stride-2 pads at 224 are (0, 1) / (1, 2); PyTorch-style symmetric ones differ."""
    state, info = read_as_native(keras_files / "model.weights.h5")
    ours = EfficientNet(get_variant("efficientnet-b0"), padding="symmetric", bn_eps=info.bn_eps)
    ours.load_state_dict(state, strict=False)
    ref = np.load(keras_files / "logits_224.npy")
    out = _logits(ours.eval(), np.load(keras_files / "x_224.npy"), info.preprocess.mean, info.preprocess.std)
    assert np.abs(out - ref).max() > 1e-3
