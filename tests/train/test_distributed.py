"""Data-parallel training on CPU processes (torchrun, Gloo) against one process with the same global batch.

With ``--freeze body`` the whole body is a fixed function (eval mode: BN uses its running statistics,
stochastic depth is off) and ``--drop-rate 0`` removes the one per-process random choice left (head
dropout), so the only differences are the sharding of each global batch and DDP's gradient average:
equal up to float summation order. With trainable BN (``--freeze none --bn-stats train``) each CPU
process normalizes with its own share of the batch (SyncBatchNorm, which fixes that on CUDA, does not
run on the CPU), so the weights agree only as closely as those statistics do; every image must still be
trained exactly once per epoch, on an uneven dataset too (no DistributedSampler padding).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import effnet
from effnet.checkpointing import _frozen_bn_stats
from effnet.train import TrainConfig, train
from effnet.train.optim import is_bn as _is_bn
from effnet.weights.native import NativeInfo, save_native
from tests.testutils import REPO


def _torchrun(n: int, data, val, out, weights, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n)]
    cmd += ["-m", "effnet", "train", str(data), "--val", str(val), "--output", str(out)]
    cmd += ["--model", "efficientnet-lite0", "--weights", str(weights), "--workers", "0", "--no-progress", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([*cmd, *extra], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def _single(data, val, out, weights, **options) -> None:
    train(
        TrainConfig(
            data=data,
            val=val,
            output=out,
            model="efficientnet-lite0",
            weights=str(weights),
            workers=0,
            progress=False,
            **options,
        )
    )


def test_two_gloo_processes_match_one(tiny_task, tiny_weights, tmp_path):
    options = dict(epochs=2, batch_size=4, freeze="body", drop_rate=0.0, seed=5, probe=False, min_steps=0)
    _single(*tiny_task, tmp_path / "single", tiny_weights, **options)
    args = ["--epochs", "2", "--batch-size", "4", "--freeze", "body", "--drop-rate", "0", "--seed", "5"]
    proc = _torchrun(2, *tiny_task, tmp_path / "ddp", tiny_weights, *args, "--no-probe", "--min-steps", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"best_epoch"') == 1  # only rank 0 reports

    a = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert b["step"] == a["step"] == 4
    assert [r["train_images"] for r in b["history"]] == [8, 8]  # each image once per epoch, over both ranks
    for part in ("model", "ema"):
        for k, v in a[part].items():
            torch.testing.assert_close(b[part][k], v, rtol=0, atol=1e-6, msg=f"{part} {k}")
    assert a["model"]["classifier.weight"].abs().sum() > 0  # it did train
    for rs, rd in zip(a["history"], b["history"], strict=True):
        assert abs(rs["train_loss"] - rd["train_loss"]) < 1e-5 and rs["val_acc"] == rd["val_acc"]
    leftovers = [p.name for p in (tmp_path / "ddp").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers


@pytest.mark.parametrize("bn_stats", ["frozen", "train"])
def test_three_ranks_full_fine_tuning_uneven_data(uneven_task, tiny_weights, tmp_path, bn_stats):
    # 10 training images, global batch 6: global batches of 6 and 4, the ranks hold 2/2/2 then 2/1/1 images.
    # DistributedSampler would pad 10 to 12 and train two images twice per epoch.
    options = dict(epochs=2, batch_size=6, freeze="none", bn_stats=bn_stats, drop_rate=0.0, drop_path_rate=0.0)
    options.update(seed=2, probe=False, min_steps=0, ema_decay=0.0, lr=1e-3)
    _single(*uneven_task, tmp_path / "single", tiny_weights, **options)
    args = ["--epochs", "2", "--batch-size", "6", "--freeze", "none", "--bn-stats", bn_stats, "--drop-rate", "0"]
    args += ["--drop-path-rate", "0", "--seed", "2", "--no-probe", "--min-steps", "0", "--ema-decay", "0"]
    proc = _torchrun(3, *uneven_task, tmp_path / "ddp", tiny_weights, *args, "--lr", "1e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    assert [r["train_images"] for r in b["history"]] == [10, 10]  # each image exactly once per epoch
    assert [r["val_images"] for r in b["history"]] == [4, 4]  # validation: each image once
    before = effnet.create_model("efficientnet-lite0", pretrained=tiny_weights).state_dict()
    moved = sum(
        float((v - before[k]).pow(2).sum()) for k, v in a["model"].items() if k in before and v.shape == before[k].shape
    )
    assert moved > 0
    if bn_stats == "frozen":
        # BN normalizes with its running statistics: a sample's gradient does not depend on which rank holds
        # it, so the global-batch mean over uneven shards must give one process's weights up to float order
        # (which AdamW amplifies where a gradient is near zero: compared as a whole, relative to the update).
        # Two images trained twice (DistributedSampler's padding) would move them far more than this.
        diff = sum(float((b["model"][k] - v).pow(2).sum()) for k, v in a["model"].items() if v.is_floating_point())
        assert diff < 1e-3 * moved, (diff, moved)
        torch.testing.assert_close(b["model"]["classifier.weight"], a["model"]["classifier.weight"], rtol=0, atol=1e-4)
        for rs, rd in zip(a["history"], b["history"], strict=True):
            assert abs(rs["train_loss"] - rd["train_loss"]) < 1e-4 and rs["val_acc"] == rd["val_acc"]
    else:
        # Each CPU process normalizes with its own 1-2 images (no SyncBatchNorm on the CPU): the weights
        # differ from one process's by as much as training moved them (measured ratio ~1.9), so only the
        # counts are compared; the BN statistics did train.
        key = "stages.3.0.expand.bn.running_mean"
        assert not torch.equal(b["model"][key], before[key])


def test_sync_batchnorm_conversion_is_read_like_batchnorm(lite0_checkpoint, tmp_path):
    net = effnet.create_model("efficientnet-lite0", pretrained=lite0_checkpoint)
    eps = net.stem.bn.eps
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # what a CUDA DDP run does; needs no CUDA
    assert not any(isinstance(m, nn.BatchNorm2d) for m in synced.modules())  # the old eps lookup's StopIteration
    norms = [m for m in synced.modules() if _is_bn(m)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    assert next(m.eps for m in synced.modules() if _is_bn(m)) == eps == 1e-3
    with _frozen_bn_stats(synced):  # gradient checkpointing's recomputation: no second statistics update
        assert all(m.momentum == 0.0 for m in norms)
    assert all(m.momentum != 0.0 for m in norms)
    # Its state dict has BatchNorm2d's keys: the native file loads into a plain model, same outputs (eval).
    info = NativeInfo(model="efficientnet-lite0", preprocess=effnet.get_record("efficientnet-lite0.pypi").preprocess)
    path = save_native(synced.state_dict(), tmp_path / "synced.safetensors", info)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(effnet.create_model("efficientnet-lite0", pretrained=path)(x), net.eval()(x))
