"""Backbone options: multi-scale features, in_chans, stochastic depth, dropout, grad checkpointing, torch.export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effnet.factory import create_model
from effnet.features import EfficientNetFeatures
from effnet.layers import drop_path
from effnet.model import EfficientNet, adapt_input_conv
from effnet.preprocess import load_image, normalize, resize_crop
from effnet.weights.records import default_record


def test_b5_features_at_456_match_timm_feature_info():
    # timm tf_efficientnet_b5 features_only: feature_info.channels() == [24, 40, 64, 176, 512],
    # reduction() == [2, 4, 8, 16, 32], modules blocks.0, blocks.1, blocks.2, blocks.4, blocks.6
    # (the last block of each stage before a stride change, and of the last stage).
    model = create_model("efficientnet-b5", features_only=True)
    assert isinstance(model, EfficientNetFeatures)
    assert model.feature_info.channels() == [24, 40, 64, 176, 512]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert model.feature_info.module_name() == ["stages.0", "stages.1", "stages.2", "stages.4", "stages.6"]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 456, 456))
    assert [tuple(m.shape) for m in maps] == [
        (1, 24, 228, 228),
        (1, 40, 114, 114),
        (1, 64, 57, 57),
        (1, 176, 29, 29),
        (1, 512, 15, 15),
    ]
    assert not any(k.startswith(("head.", "classifier.")) for k in model.state_dict())


@pytest.fixture(scope="module")
def lite0(lite0_checkpoint) -> EfficientNet:
    return create_model("efficientnet-lite0", pretrained=True)


@pytest.fixture(scope="module")
def cat_batch(sample_images) -> torch.Tensor:
    p = default_record("efficientnet-lite0").preprocess
    crops = np.stack([np.asarray(resize_crop(load_image(path), p)) for path in sample_images[:2]])
    return torch.from_numpy(normalize(crops, p))


def test_lite0_features_are_the_classifier_body(lite0, cat_batch):
    feats = create_model("efficientnet-lite0", pretrained=True, features_only=True)
    assert feats.feature_info.channels() == [16, 24, 40, 112, 320]
    assert feats.feature_info.reduction() == [2, 4, 8, 16, 32]
    with torch.no_grad():
        maps = feats(cat_batch)
        logits = lite0.forward_head(lite0.head(maps[-1]))
        expected = lite0(cat_batch)
    assert [m.shape[-1] for m in maps] == [112, 56, 28, 14, 7]
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def test_out_indices_select_and_trim():
    model = create_model("efficientnet-lite0", features_only=True, out_indices=(1, 3))
    assert model.feature_info.reduction() == [4, 16]
    assert len(model.stages) == 5  # stages after the deepest selected map (stage 4) are dropped
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(24, 16, 16), (112, 4, 4)]
    for bad in ((5,), (3, 1), ()):
        with pytest.raises(ValueError):
            create_model("efficientnet-lite0", features_only=True, out_indices=bad)


def test_in_chans_1_equals_rgb_model_on_a_grey_image(lite0, sample_images):
    grey_model = create_model("efficientnet-lite0", pretrained=True, in_chans=1)
    assert grey_model.stem.conv.weight.shape[1] == 1
    p = default_record("efficientnet-lite0").preprocess
    grey = np.asarray(resize_crop(load_image(sample_images[0]), p).convert("L"))
    # Lite0's mean and std are the same for R, G and B, so the grey channel normalizes like each of them.
    rgb = torch.from_numpy(normalize(np.stack([grey] * 3, axis=-1)[None], p))
    with torch.no_grad():
        torch.testing.assert_close(grey_model(rgb[:, :1]), lite0(rgb), rtol=1e-4, atol=1e-4)


def test_adapt_input_conv_follows_timm():
    w = torch.randn(8, 3, 3, 3)
    torch.testing.assert_close(adapt_input_conv(w, 1), w.sum(1, keepdim=True))
    torch.testing.assert_close(adapt_input_conv(w, 2), w[:, :2] * 1.5)
    w5 = adapt_input_conv(w, 5)
    torch.testing.assert_close(w5, torch.cat([w, w[:, :2]], 1) * 0.6)
    assert adapt_input_conv(w, 3) is w
    with pytest.raises(ValueError):
        adapt_input_conv(torch.randn(8, 4, 3, 3), 1)


def test_stochastic_depth_rises_linearly_and_drops_whole_samples():
    model = EfficientNet("efficientnet-lite0", drop_path_rate=0.3, drop_rate=0.1)
    blocks = [b for stage in model.stages for b in stage]
    # TF reference efficientnet_model.py: drop_rate * float(idx) / len(blocks)
    assert [b.drop_path_rate for b in blocks] == pytest.approx([0.3 * i / len(blocks) for i in range(len(blocks))])
    assert model.dropout.p == 0.1
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 3, 3)
    y = drop_path(x, 0.25, training=True)
    kept = (y != 0).flatten(1).all(1)
    assert ((y == 0).flatten(1).all(1) | kept).all()  # a sample is dropped whole or kept whole
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.75))
    assert drop_path(x, 0.25, training=False) is x
    with pytest.raises(ValueError):
        EfficientNet("efficientnet-lite0", drop_path_rate=1.0)


def test_grad_checkpointing_gives_the_same_gradients_and_bn_statistics():
    def step(checkpointing: bool) -> tuple[dict, dict]:
        torch.manual_seed(0)
        model = EfficientNet("efficientnet-lite0", num_classes=3, drop_path_rate=0.5, input_size=32).train()
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(1)  # same stochastic-depth masks in both runs
        x = torch.randn(2, 3, 32, 32)
        model(x).logsumexp(1).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        return grads, {k: v.clone() for k, v in model.state_dict().items() if "running" in k}

    grads, stats = step(False)
    grads_ckpt, stats_ckpt = step(True)
    torch.testing.assert_close(grads_ckpt, grads, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats_ckpt, stats, rtol=0, atol=0)  # updated once, not again in recompute


@pytest.mark.parametrize("features_only", [False, True])
def test_torch_export_round_trip(lite0_checkpoint, cat_batch, features_only):
    model = create_model("efficientnet-lite0", pretrained=True, features_only=features_only)
    program = torch.export.export(model, (cat_batch,))
    with torch.no_grad():
        expected = model(cat_batch)
        got = program.module()(cat_batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
