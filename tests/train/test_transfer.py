"""The real transfer task: animal vs object on the ImageNet sample, from Lite0's real weights with a frozen body.

70 images train a new two-class head, the other 30 validate: always answering "object" scores 60 %.
The run's model then classifies through `effnet classify` with the new labels and no other flag.
"""

from __future__ import annotations

import json

from tests.testutils import run_cli


def test_frozen_lite0_learns_animal_vs_object(transfer_task, lite0_checkpoint, tmp_path):
    train_dir, val_dir = transfer_task
    run = tmp_path / "run"
    args = ["train", str(train_dir), "--val", str(val_dir), "--model", "efficientnet-lite0", "--output", str(run)]
    args += ["--freeze", "body", "--epochs", "5", "--batch-size", "10", "--lr", "2e-3", "--min-scale", "0.35"]
    proc = run_cli(*args, "--seed", "0", "--workers", "2", "--json", "--no-progress", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["classes"] == ["animal", "object"]
    assert summary["best_val_acc"] >= 0.70, summary
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5]
    assert max(r["val_acc"] for r in log) == summary["best_val_acc"]

    proc = run_cli(
        "classify", str(val_dir), "--model", "efficientnet-lite0", "--weights", str(run / "model.safetensors"),
        "--json", "--no-progress", "--top-k", "2", "--backend", "torch",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == 30
    assert all({p["label"] for p in r["predictions"]} == {"animal", "object"} for r in results)
    correct = sum(r["predictions"][0]["label"] == r["path"].split("/")[-2] for r in results)
    # classify runs the record's eval preprocessing, as validation did: the same accuracy.
    assert correct == round(summary["best_val_acc"] * 30)
