"""Parity with torchvision's own EfficientNet code (random weights), and its checkpoints through
`effnet weights convert`.

torchvision cannot be imported beside the CPU torch (its wheel's C++ extension is a CUDA build); its
pure-Python model file is run straight from the unmodified wheel: see tests/parity/torchvision_reference.py.
The state dict goes through a .pth file and effnet's torchvision rename table into an effnet model built with
torchvision's conventions (symmetric padding (k - 1) // 2; BN eps 1e-5 for B0-B4, 1e-3 for B5-B7), and the
logits must agree at the model's size and at another (odd) size.
"""

from __future__ import annotations

import pytest
import torch

import effnet
from effnet.model import EfficientNet
from effnet.specs import get_variant
from effnet.weights.to_native import read_as_native
from tests.parity.torchvision_reference import load_torchvision_efficientnet
from tests.testutils import randomize_batchnorm, run_cli


@pytest.fixture(scope="module")
def tv():
    return load_torchvision_efficientnet()


def _reference(tv, model: str, tmp_path, seed: int = 0):
    torch.manual_seed(seed)
    ref = randomize_batchnorm(getattr(tv, model.replace("-", "_"))(), seed=seed)
    # torchvision's init (kaiming fan_out, which for a depthwise conv counts all its channels) makes the signal
    # vanish with random BN statistics: the logits would not depend on the input, and any padding would "match".
    # So the BN statistics are measured on random images (a cumulative average in train mode) and the
    # classifier widened; the tests check that the logits differ between inputs.
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        ref.train()(torch.randn(4, 3, 128, 128))
    ref.classifier[1].weight.data.normal_(0.0, 0.1)
    ref.eval()
    path = tmp_path / f"{model}_torchvision.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


def _delta(ref, ours, size: int) -> tuple[float, float]:
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        a, b = ref(x), ours(x)
    assert (a[0] - a[1]).abs().max() > 0.5, "the reference's logits do not depend on its input"
    return (a - b).abs().max().item(), a.abs().max().item()


@pytest.mark.parametrize(
    "model,sizes,eps", [("efficientnet-b0", (224, 257), 1e-5), pytest.param("efficientnet-b5", (456, 333), 1e-3)]
)
def test_logits_match_torchvision(tv, model, sizes, eps, tmp_path):
    ref, path = _reference(tv, model, tmp_path)
    state, info = read_as_native(path)  # format and model detected from the keys and shapes
    assert (info.model, info.padding, info.bn_eps) == (model, "symmetric", eps)
    ours = EfficientNet(get_variant(model), padding=info.padding, bn_eps=info.bn_eps)
    ours.load_state_dict(state, strict=False)
    ours.eval()
    for size in sizes:
        delta, scale = _delta(ref, ours, size)
        print(f"torchvision {model} {size}px: max |d logits| = {delta:.2e} (max |logit| {scale:.2f})")
        assert scale > 1.0  # not two near-zero outputs
        assert delta < 1e-4, (model, size, delta)


def test_tf_conventions_do_not_fit_torchvision_weights(tv, tmp_path):
    """The control: the same weights in a TF SAME / eps 1e-3 model give different logits."""
    ref, path = _reference(tv, "efficientnet-b0", tmp_path)
    state, _ = read_as_native(path)
    ours = EfficientNet(get_variant("efficientnet-b0"), padding="same", bn_eps=1e-3)
    ours.load_state_dict(state, strict=False)
    delta, _ = _delta(ref, ours.eval(), 224)
    assert delta > 1e-3  # ten times the parity tolerance; the matching conventions give ~1e-6


def test_convert_round_trip(tv, tmp_path):
    """torchvision .pth -> `effnet weights convert` -> safetensors -> create_model(pretrained=OUT): same logits."""
    ref, path = _reference(tv, "efficientnet-b0", tmp_path, seed=3)
    out = tmp_path / "b0.safetensors"
    proc = run_cli("weights", "convert", str(path), str(out), "--from", "torchvision", "--json")
    assert proc.returncode == 0, proc.stderr
    ours = effnet.create_model("efficientnet-b0", pretrained=out)  # padding and eps come from the file
    delta, _ = _delta(ref, ours, 240)
    print(f"torchvision b0 round trip 240px: max |d logits| = {delta:.2e}")
    assert delta < 1e-4
