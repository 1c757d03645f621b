"""Parity with the reference implementations, through the converters.

geffnet (gen-efficientnet-pytorch, where the card's weights were ported) and
efficientnet_pytorch (lukemelas) with random weights and randomized BN: their
state dicts go through a checkpoint file and effnet's rename tables, and the
logits must agree at the declared size and at another size (dynamic SAME path).
"""

from __future__ import annotations

import pytest
import torch

import effnet
from effnet.weights.convert import rename_table
from tests.testutils import randomize_batchnorm

geffnet = pytest.importorskip("geffnet", reason="reference implementation geffnet not installed")
efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch", reason="efficientnet_pytorch not installed")


def _max_logit_delta(reference, ckpt, size, tmp_path, model="efficientnet-b5"):
    path = tmp_path / "ref.pth"
    torch.save(reference.state_dict(), path)
    ours = effnet.create_model(model, pretrained=path)
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        a, b = reference.eval()(x), ours(x)
    return (a - b).abs().max().item(), a.abs().max().item()


@pytest.mark.slow
@pytest.mark.parametrize("size", [456, 380])
def test_geffnet_tf_efficientnet_b5(size, tmp_path):
    torch.manual_seed(0)
    ref = randomize_batchnorm(geffnet.tf_efficientnet_b5())
    delta, scale = _max_logit_delta(ref, None, size, tmp_path)
    assert scale > 1.0  # the comparison is not between two near-zero outputs
    assert delta < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("size", [456, 380])
def test_lukemelas_efficientnet_b5(size, tmp_path):
    torch.manual_seed(0)
    # lukemelas pads statically for the image_size it is built with
    ref = randomize_batchnorm(efficientnet_pytorch.EfficientNet.from_name("efficientnet-b5", image_size=size))
    delta, scale = _max_logit_delta(ref, None, size, tmp_path)
    assert scale > 0.1
    assert delta < 1e-4


def test_geffnet_lite0_structure_and_parity(tmp_path):
    torch.manual_seed(0)
    ref = randomize_batchnorm(geffnet.tf_efficientnet_lite0())
    delta, _ = _max_logit_delta(ref, None, 224, tmp_path, model="efficientnet-lite0")
    assert delta < 1e-4


@pytest.mark.parametrize(
    "fmt,reference",
    [
        ("timm", lambda: geffnet.tf_efficientnet_b5()),
        ("lukemelas", lambda: efficientnet_pytorch.EfficientNet.from_name("efficientnet-b5")),
    ],
)
def test_rename_tables_are_exact_bijections(fmt, reference):
    """The table covers every reference key, maps onto every effnet key, and is one-to-one."""
    ours = effnet.create_model("efficientnet-b5")
    table = rename_table(ours.plan, fmt)
    ref_keys = set(reference().state_dict())
    assert set(table) == ref_keys
    assert set(table.values()) == set(ours.state_dict())
    assert len(set(table.values())) == len(table)
