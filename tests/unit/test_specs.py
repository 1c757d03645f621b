"""Architecture as data: channel/depth rounding and the resolved plans."""

from __future__ import annotations

import pytest

from effnet.specs import VARIANTS, build_plan, get_variant, round_channels, round_repeats


@pytest.mark.parametrize(
    "channels,mult,expected",
    [
        (32, 1.6, 48),
        (16, 1.6, 24),
        (24, 1.6, 40),
        (40, 1.6, 64),
        (80, 1.6, 128),
        (112, 1.6, 176),
        (192, 1.6, 304),
        (320, 1.6, 512),
        (1280, 1.6, 2048),
        (32, 1.0, 32),
        (16, 1.1, 16),
        (112, 1.1, 120),
        (24, 1.2, 32),
        (40, 1.8, 72),
        (1280, 2.0, 2560),
    ],
)
def test_round_channels(channels, mult, expected):
    assert round_channels(channels, mult) == expected
    assert expected % 8 == 0 or mult == 1.0


def test_round_channels_never_drops_more_than_ten_percent():
    for c in range(8, 400, 4):
        for m in (1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0):
            assert round_channels(c, m) >= 0.9 * c * m


@pytest.mark.parametrize("repeats,mult,expected", [(1, 2.2, 3), (2, 2.2, 5), (3, 2.2, 7), (4, 2.2, 9), (1, 1.0, 1)])
def test_round_repeats_rounds_up(repeats, mult, expected):
    assert round_repeats(repeats, mult) == expected


def test_b5_plan():
    plan = build_plan(get_variant("efficientnet-b5"))
    assert plan.stem_channels == 48 and plan.head_channels == 2048
    assert plan.stage_repeats == (3, 5, 5, 7, 7, 9, 3)
    assert len(plan.blocks) == 39
    assert plan.stage_channels == (24, 40, 64, 128, 176, 304, 512)
    first = plan.blocks[0]
    assert (first.in_channels, first.out_channels, first.has_expand, first.se_channels) == (48, 24, False, 12)
    strides = [b.stride for b in plan.blocks if b.index == 0]
    assert strides == [1, 2, 2, 2, 1, 2, 1]
    assert all(b.stride == 1 for b in plan.blocks if b.index > 0)
    # SE width is a quarter of the block *input* channels (TF), not of the expanded width
    assert all(b.se_channels == b.in_channels // 4 for b in plan.blocks)


def test_lite0_plan_fixes_stem_head_and_end_repeats():
    lite4 = build_plan(get_variant("efficientnet-lite4"))
    assert lite4.stem_channels == 32 and lite4.head_channels == 1280
    assert lite4.stage_repeats[0] == 1 and lite4.stage_repeats[-1] == 1
    assert lite4.stage_repeats[1] == 4  # ceil(2 * 1.8)
    assert all(b.se_channels == 0 for b in lite4.blocks)
    assert get_variant("efficientnet-lite4").activation == "relu6"


def test_variant_lookup():
    assert get_variant("EfficientNet_B5").name == "efficientnet-b5"
    assert len(VARIANTS) == 13
    with pytest.raises(ValueError, match="unknown model 'efficientnet-b9'"):
        get_variant("efficientnet-b9")
