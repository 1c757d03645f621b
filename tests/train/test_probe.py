"""The linear probe's solver, the DDP batch sampler and temperature scaling: pure functions, seconds."""

from __future__ import annotations

import math

import pytest
import torch

import effnet
from effnet.train.calibrate import ece, fit_temperature, nll
from effnet.train.data import GlobalBatchSampler
from effnet.train.probe import cross_validate, fit_logistic, fit_probe, select_embedding
from effnet.weights.native import NativeInfo, read_native_info, save_native
from effnet.weights.records import Preprocess


def _blobs(n: int, d: int, seed: int, shift: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[:, 0] += shift * (2 * y - 1)
    return x, y


def test_logistic_regression_reaches_the_penalized_optimum():
    x, y = _blobs(60, 5, 0)
    w, b = fit_logistic(x, y, 2, l2=0.1)
    w.requires_grad_(True), b.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(x @ w.T + b, y) + 0.05 * (w * w).sum()
    gw, gb = torch.autograd.grad(loss, (w, b))
    assert gw.abs().max() < 1e-6 and gb.abs().max() < 1e-6  # stationary point of a convex objective
    assert float(((x @ w.T + b).argmax(1) == y).double().mean()) > 0.8
    # A stronger penalty gives smaller weights.
    assert fit_logistic(x, y, 2, l2=10.0)[0].norm() < w.norm()


def test_cross_validation_chooses_the_penalty_the_data_supports():
    # Informative features: a mild penalty; labels that are noise: the strongest (near-uniform answers).
    x, y = _blobs(40, 50, 1, shift=2.0)
    nll_by_l2, _, folds = cross_validate([x], y, 2, (1e-2, 1e3), seed=0)
    assert folds == 5 and nll_by_l2[1e-2] < nll_by_l2[1e3]
    noise = y[torch.randperm(40, generator=torch.Generator().manual_seed(3))]
    x_noise = _blobs(40, 50, 2, shift=0.0)[0]
    assert fit_probe([x_noise], noise, 2, seed=0, grid=(1e-2, 1e3)).l2 == 1e3
    fit = fit_probe([x], y, 2, seed=0, grid=(1e-2, 1e3))
    assert fit.l2 == 1e-2
    assert torch.equal(fit.weight, fit_probe([x], y, 2, seed=0, grid=(1e-2, 1e3)).weight)  # deterministic


def test_the_probe_reads_the_embedding_that_cross_validates_best():
    # Two candidate embeddings of the same 40 images: the "head" one carries no label information, stage 4's
    # does. The selection must find stage 4 from the training images alone, and report both candidates.
    x, y = _blobs(40, 20, 4, shift=2.5)
    noise = _blobs(40, 30, 5, shift=0.0)[0]
    fit = select_embedding({None: [noise], 4: [x]}, y, 2, seed=0)
    assert fit.embedding_stage == 4 and fit.weight.shape == (2, 20)
    scores = {stage: (nll, acc) for stage, nll, acc in fit.candidates}
    assert set(scores) == {None, 4} and scores[4][0] < scores[None][0] and scores[4][1] > 0.8
    # Equal candidates: the first one (the head's, the paper's network) is kept.
    assert select_embedding({None: [x], 4: [x.clone()]}, y, 2, seed=0).embedding_stage is None
    with pytest.raises(ValueError, match="no candidate"):
        select_embedding({}, y, 2, seed=0)


@pytest.mark.parametrize("n, batch, world", [(10, 6, 3), (8, 6, 3), (13, 4, 2), (7, 7, 1)])
def test_global_batches_hold_each_image_once(n, batch, world):
    shards = [GlobalBatchSampler(n, batch, world, r, seed=4) for r in range(world)]
    for epoch in (0, 1):
        for s in shards:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in shards]
        assert all(len(p) == len(shards[0]) for p in per_rank)  # every rank runs every step
        assert all(len(b) >= 1 for p in per_rank for b in p)
        flat = [i for p in per_rank for b in p for i in b]
        assert sorted(flat) == list(range(n))  # no DistributedSampler padding: each image exactly once
        # The union of the ranks' k-th batches is the one-process k-th batch.
        single = GlobalBatchSampler(n, batch, 1, 0, seed=4)
        single.set_epoch(epoch)
        if single.global_sizes() == shards[0].global_sizes():
            assert [sorted(b) for b in single] == [
                sorted(i for p in per_rank for i in p[k]) for k in range(len(single))
            ]
        assert sum(shards[0].global_sizes()) == n


def test_temperature_scaling_calibrates_an_overconfident_model():
    # Over-confident by construction: the true class probability is softmax(z), the model says softmax(5 z).
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 3, generator=g, dtype=torch.float64)
    labels = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)
    c = fit_temperature(5 * z, labels)
    assert c.temperature == pytest.approx(5.0, rel=0.15)
    assert c.nll_after < c.nll_before - 0.1
    assert c.ece_after < c.ece_before / 2
    assert c.nll_after == pytest.approx(nll(z, labels), abs=0.01)
    assert ece(z, labels) < 0.05 and math.isfinite(c.ece_after)


def test_a_validation_split_with_no_error_fits_no_temperature():
    # Separable validation logits (every argmax right): minimizing the NLL over T would run T to its lower
    # bound and make every later answer ~100 % sure. Seen in a real small-folder run (T = 0.05 on 14 images).
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (14,), generator=g)
    z = torch.randn(14, 3, generator=g, dtype=torch.float64)
    z[torch.arange(14), labels] += 4.0  # right, but not sure: softmax top-1 around 0.9
    c = fit_temperature(z, labels)
    assert c.temperature == 1.0 and "14 validation images" in c.skipped
    assert c.nll_after == c.nll_before
    # one error is enough for a finite optimum, and it is fitted
    z[0] = -z[0]
    assert fit_temperature(z, labels).skipped == ""


def test_a_native_files_temperature_divides_the_logits(lite0_checkpoint, tmp_path):
    model = effnet.create_model("efficientnet-lite0", pretrained=lite0_checkpoint)
    info = NativeInfo(model="efficientnet-lite0", preprocess=Preprocess(64, 73, mean=(127.0,) * 3, std=(128.0,) * 3))
    plain = save_native(model.state_dict(), tmp_path / "plain.safetensors", info)
    hot = save_native(
        model.state_dict(), tmp_path / "hot.safetensors", NativeInfo(**{**info.__dict__, "temperature": 2.5})
    )
    assert read_native_info(hot).temperature == 2.5 and read_native_info(plain).temperature == 1.0
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = effnet.create_model("efficientnet-lite0", pretrained=plain)(x)
        b = effnet.create_model("efficientnet-lite0", pretrained=hot)(x)
    torch.testing.assert_close(b, a / 2.5, rtol=1e-5, atol=1e-5)
