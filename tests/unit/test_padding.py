"""TF SAME padding: the pure function, and the conv module's static and dynamic paths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from effnet.padding import SameConv2d, make_conv, same_output_size, same_pad


# B5 at 456: (size, kernel, stride) -> (before, after), from design.md / the TF formula.
@pytest.mark.parametrize(
    "size,kernel,stride,expected",
    [
        (456, 3, 2, (0, 1)),  # stem
        (228, 3, 2, (0, 1)),  # stage 2 first depthwise
        (114, 5, 2, (1, 2)),  # stage 3
        (57, 3, 2, (1, 1)),  # stage 4: odd size -> symmetric
        (29, 5, 2, (2, 2)),  # stage 6: odd size -> symmetric
        (228, 3, 1, (1, 1)),
        (57, 5, 1, (2, 2)),
        (15, 1, 1, (0, 0)),
        (380, 3, 2, (0, 1)),
        (95, 5, 2, (2, 2)),  # B4 at 380: 190 -> 95 (odd)
        (1, 3, 2, (1, 1)),
        (2, 5, 2, (1, 2)),
    ],
)
def test_same_pad_known_values(size, kernel, stride, expected):
    assert same_pad(size, kernel, stride) == expected


@pytest.mark.parametrize("kernel", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_same_pad_gives_ceil_output_for_every_size(kernel, stride):
    for size in range(1, 80):
        before, after = same_pad(size, kernel, stride)
        out = (size + before + after - kernel) // stride + 1
        assert out == math.ceil(size / stride) == same_output_size(size, stride)
        assert 0 <= after - before <= 1  # TF puts the odd pixel after


def test_same_pad_rejects_nonsense():
    with pytest.raises(ValueError, match="positive"):
        same_pad(0, 3, 2)


def _reference_same_conv(x, conv):
    """The same weights through other implementations of TF SAME, which write the TF formula out themselves:
    efficientnet_pytorch's (lukemelas) Conv2dDynamicSamePadding and geffnet's conv2d_same."""
    lukemelas = pytest.importorskip("efficientnet_pytorch.utils", reason="efficientnet_pytorch not installed")
    geffnet = pytest.importorskip("geffnet.conv2d_layers", reason="geffnet not installed")
    ref = lukemelas.Conv2dDynamicSamePadding(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        ref.weight.copy_(conv.weight)
        if conv.bias is not None:
            ref.bias.copy_(conv.bias)
        a = ref(x)
        b = geffnet.conv2d_same(x, conv.weight, conv.bias, conv.stride, (0, 0), (1, 1), conv.groups)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    return a


# (size, kernel) at stride 2 -> (before, after), written out (design.md: B5 at 456, and one odd size).
LITERAL_PADS = {(456, 3): (0, 1), (114, 5): (1, 2), (57, 3): (1, 1), (29, 5): (2, 2), (31, 3): (1, 1)}


@pytest.mark.parametrize("size,kernel", [(456, 3), (114, 5), (57, 3), (29, 5), (31, 3)])
def test_static_path_equals_dynamic_path_at_declared_size(size, kernel):
    torch.manual_seed(0)
    conv = SameConv2d(4, 4, kernel, stride=2, groups=4, input_size=(size, size))
    x = torch.randn(1, 4, size, size)
    before, after = LITERAL_PADS[(size, kernel)]
    symmetric = before == after
    # symmetric pads live in the conv's own padding, asymmetric ones in an explicit pad
    assert (conv.static_pad is None) == symmetric
    assert conv.padding == ((before,) * 2 if symmetric else (0, 0))
    torch.testing.assert_close(conv(x), conv.forward_dynamic(x), rtol=0, atol=0)
    torch.testing.assert_close(conv(x), _reference_same_conv(x, conv), rtol=0, atol=0)
    padded = F.pad(x, (before, after, before, after))
    torch.testing.assert_close(conv(x), F.conv2d(padded, conv.weight, conv.bias, 2, 0, 1, conv.groups), rtol=0, atol=0)


def test_other_sizes_take_the_dynamic_path():
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, 3, stride=2, input_size=(456, 456))
    for size in (224, 57, 30):
        x = torch.randn(1, 2, size, size + 1)
        y = conv(x)
        assert y.shape[-2:] == (math.ceil(size / 2), math.ceil((size + 1) / 2))
        torch.testing.assert_close(y, _reference_same_conv(x, conv), rtol=0, atol=0)


def test_make_conv_uses_plain_conv_where_same_is_size_independent():
    assert type(make_conv(8, 8, 3, 1, padding="same")) is torch.nn.Conv2d  # stride 1, odd kernel: k//2
    assert type(make_conv(8, 8, 1, 1, padding="same")) is torch.nn.Conv2d
    assert isinstance(make_conv(8, 8, 3, 2, padding="same", input_size=(456, 456)), SameConv2d)
    sym = make_conv(8, 8, 3, 2, padding="symmetric")
    assert type(sym) is torch.nn.Conv2d and sym.padding == (1, 1)
    with pytest.raises(ValueError, match="padding"):
        make_conv(8, 8, 3, 2, padding="valid")  # type: ignore[arg-type]
