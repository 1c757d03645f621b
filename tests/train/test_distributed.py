"""Two CPU processes under torchrun (Gloo) train to the weights one process reaches with the same global batch.

With ``--freeze body`` the whole body is a fixed function (eval mode: BN uses its running statistics,
stochastic depth is off) and ``--drop-rate 0`` removes the one per-process random choice left (head
dropout), so the only differences are the sharding of each global batch and DDP's gradient average:
equal up to float summation order. (Training BN layers would see per-process batch statistics;
SyncBatchNorm, which fixes that on CUDA, does not run on the CPU.)
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from effnet.train import TrainConfig, train
from tests.testutils import REPO


def test_two_gloo_processes_match_one(tiny_task, tiny_weights, tmp_path):
    options = dict(epochs=2, batch_size=4, freeze="body", drop_rate=0.0, seed=5, probe=False, min_steps=0)
    single = train(
        TrainConfig(
            data=tiny_task[0],
            val=tiny_task[1],
            output=tmp_path / "single",
            model="efficientnet-lite0",
            weights=str(tiny_weights),
            workers=0,
            progress=False,
            **options,  # type: ignore[arg-type]
        )
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "effnet", "train", str(tiny_task[0]), "--val", str(tiny_task[1]), "--output", str(tmp_path / "ddp")]
    cmd += ["--model", "efficientnet-lite0", "--weights", str(tiny_weights), "--workers", "0", "--no-progress"]
    cmd += ["--epochs", "2", "--batch-size", "4", "--freeze", "body", "--drop-rate", "0", "--seed", "5", "--json"]
    cmd += ["--no-probe", "--min-steps", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
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
    for rs, rd in zip(single.history, b["history"], strict=True):
        assert abs(rs["train_loss"] - rd["train_loss"]) < 1e-5 and rs["val_acc"] == rd["val_acc"]
    leftovers = [p.name for p in (tmp_path / "ddp").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers
