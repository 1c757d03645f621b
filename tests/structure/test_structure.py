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


def test_embedding_stage_ends_the_network_after_that_stage():
    # The B0 stage table (Tan & Le 2019, table 1) has 7 MBConv stages with 16, 24, 40, 80, 112, 192, 320
    # output channels; Lite0 keeps them. Cut after stage 5: 6 stages, no 1x1 head conv, a 192-d embedding.
    from effnet.model import EfficientNet
    from effnet.weights.convert import param_shapes

    cut = EfficientNet("efficientnet-lite0", num_classes=3, embedding_stage=5, input_size=224).eval()
    assert len(cut.stages) == 6 and isinstance(cut.head, torch.nn.Identity)
    assert cut.num_features == 192 and cut.classifier.weight.shape == (3, 192)
    assert cut.feature_size == (7, 7)  # stage 5 is already at stride 32
    assert {k: tuple(v.shape) for k, v in cut.state_dict().items()} == param_shapes(cut.plan, 3)
    assert not any(k.startswith(("head.", "stages.6.")) for k in cut.state_dict())
    for bad in (-1, 7):
        with pytest.raises(ValueError, match=r"0\.\.6"):
            EfficientNet("efficientnet-lite0", embedding_stage=bad)


def test_truncate_keeps_the_weights_and_reads_the_stage_output():
    full = effnet.create_model("efficientnet-lite0", num_classes=3)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        h = full.stem(x)
        for stage in list(full.stages)[:4]:
            h = stage(h)
        stage3 = h.mean((2, 3))
        taps = full.pooled_embeddings(x, [3, None])
        assert torch.allclose(taps[0], stage3) and torch.allclose(taps[1], full.forward_embedding(x))
        full.truncate(3)
        assert torch.allclose(full.forward_embedding(x), stage3)
        assert tuple(full(x).shape) == (2, 3) and full.num_features == 80
    # The constructor's cut network is the same module tree (same keys, same drop-path rates).
    built = effnet.model.EfficientNet("efficientnet-lite0", num_classes=3, embedding_stage=3, input_size=224)
    assert str(built) == str(full)
    with pytest.raises(ValueError, match="already ends at stage 3"):
        full.truncate(5)


def test_create_model_cuts_a_pretrained_body(lite0_checkpoint, tmp_path):
    """``embedding_stage`` on pretrained weights: the body's tensors as loaded, a new classifier; a native file
    of a cut network is rebuilt cut, with nothing asked."""
    from effnet.weights.native import NativeInfo, save_native
    from effnet.weights.records import default_record

    whole = effnet.create_model("efficientnet-lite0", pretrained=lite0_checkpoint)
    cut = effnet.create_model("efficientnet-lite0", pretrained=lite0_checkpoint, num_classes=2, embedding_stage=5)
    assert len(cut.stages) == 6 and cut.classifier.weight.shape == (2, 192)
    for k, v in cut.state_dict().items():
        if not k.startswith("classifier."):
            assert torch.equal(v, whole.state_dict()[k]), k
    info = NativeInfo(
        model="efficientnet-lite0",
        preprocess=default_record("efficientnet-lite0").preprocess,
        labels=("a", "b"),
        num_classes=2,
        embedding_stage=5,
    )
    path = save_native(cut.state_dict(), tmp_path / "cut.safetensors", info)
    again = effnet.create_model("efficientnet-lite0", pretrained=path)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(again(x), cut(x))
    with pytest.raises(effnet.EffnetError, match="ends at stage 5"):
        effnet.create_model("efficientnet-lite0", pretrained=path, embedding_stage=None)
