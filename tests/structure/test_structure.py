"""Structure of the built networks: parameter counts, stage shapes, where pads are static."""

from __future__ import annotations

import pytest
import torch

import effnet
from effnet.flops import count_complexity
from effnet.padding import SameConv2d


@pytest.fixture(scope="module")
def b5():
    return effnet.create_model("efficientnet-b5")


def _counted(model, size: int):
    """effnet.flops' count and an independent one from the same forward pass: torch's FlopCounterMode counts
    aten conv/addmm ops as 2 x MACs (bias excluded), the convention effnet.flops states; it sees the
    SAME-padded dynamic convs and the SE 1x1 convs too."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        complexity = count_complexity(model, (size, size))
    return complexity, counter.get_total_flops()


def test_b5_parameter_counts(b5):
    assert sum(p.numel() for p in b5.parameters()) == 30_389_784
    c, torch_flops = _counted(b5, 456)
    assert c.flops == torch_flops
    # The card's 30.303 M is the count with BN folded into conv biases.
    assert c.params_bn_folded == 30_303_416
    assert round(c.flops / 1e9, 3) == 20.533  # 2 x MACs of conv + linear; see `effnet info`


def test_lite0_flops_match_torch_flop_counter():
    c, torch_flops = _counted(effnet.create_model("efficientnet-lite0"), 224)
    assert c.flops == torch_flops


def test_macs_of_one_block_by_hand(b5):
    # B5 stage 1, block 0 at 228 x 228: MBConv1, k3, 48 -> 24 channels, SE 48 -> 12 -> 48 (0.25 x 48).
    depthwise = 228 * 228 * 48 * 3 * 3  # one 3x3 tap per output element and channel
    squeeze_excite = 48 * 12 + 12 * 48  # two 1x1 convs on the pooled 1x1 map
    project = 228 * 228 * 48 * 24
    assert depthwise + squeeze_excite + project == 82_343_808
    assert count_complexity(b5.stages[0][0], (228, 228), in_channels=48).macs == 82_343_808


def test_b5_stage_shapes_at_456(b5):
    shapes = []
    hooks = [s.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for s in b5.stages]
    with torch.inference_mode():
        feats = b5.forward_features(torch.zeros(1, 3, 456, 456))
    for h in hooks:
        h.remove()
    assert shapes == [
        (24, 228, 228),
        (40, 114, 114),
        (64, 57, 57),
        (128, 29, 29),
        (176, 29, 29),
        (304, 15, 15),
        (512, 15, 15),
    ]
    assert tuple(feats.shape) == (1, 2048, 15, 15)
    assert b5.feature_size == (15, 15)


def test_b5_pads_are_fixed_at_construction(b5):
    """Every strided conv knows its pads before any forward: (0,1) at even sizes, symmetric at odd ones."""
    found = {}
    for name, m in b5.named_modules():
        if isinstance(m, SameConv2d):
            found[name] = (m.input_size[0], m.kernel_size[0], m.static_pad, m.padding)
    assert found == {
        "stem.conv": (456, 3, (0, 1, 0, 1), (0, 0)),
        "stages.1.0.depthwise.conv": (228, 3, (0, 1, 0, 1), (0, 0)),
        "stages.2.0.depthwise.conv": (114, 5, (1, 2, 1, 2), (0, 0)),
        "stages.3.0.depthwise.conv": (57, 3, None, (1, 1)),
        "stages.5.0.depthwise.conv": (29, 5, None, (2, 2)),
    }


def test_embedding_and_new_head():
    m = effnet.create_model("efficientnet-lite0", num_classes=10)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert tuple(m(x).shape) == (2, 10)
        assert tuple(m.forward_embedding(x).shape) == (2, 1280)
    assert not m.training


def test_lite0_structure():
    m = effnet.create_model("efficientnet-lite0")
    assert sum(p.numel() for p in m.parameters()) == 4_652_008
    assert not any(isinstance(x, torch.nn.SiLU) for x in m.modules())
    assert all(b.se is None for s in m.stages for b in s)


def test_tf_compatibility_is_parameters():
    m = effnet.create_model("efficientnet-b0", padding="symmetric", bn_eps=1e-5)
    assert not any(isinstance(x, SameConv2d) for x in m.modules())
    assert m.stem.bn.eps == 1e-5
    assert effnet.create_model("efficientnet-b0").stem.bn.eps == 1e-3


def test_bad_input_shape_is_a_clear_error():
    m = effnet.create_model("efficientnet-b0")
    with pytest.raises(ValueError, match="3 channels"):
        m(torch.zeros(1, 4, 224, 224))
