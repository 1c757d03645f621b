"""The real transfer task: animal vs object on the ImageNet sample, from Lite0's real weights, with the defaults.

70 images are the training folder (the run holds out 20 % of them for its own validation, model selection
and calibration); the other 30 are scored only afterwards, through `effnet classify`, and never seen by the
run: always answering "object" scores 63 % on them.
"""

from __future__ import annotations

import json

from tests.testutils import run_cli


def test_linear_probe_defaults_learn_animal_vs_object(transfer_task, lite0_checkpoint, tmp_path):
    train_dir, held_out = transfer_task
    run = tmp_path / "run"
    args = ["train", str(train_dir), "--model", "efficientnet-lite0", "--output", str(run), "--freeze", "body"]
    proc = run_cli(*args, "--val-split", "0.2", "--workers", "2", "--json", "--no-progress", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["classes"] == ["animal", "object"] and summary["majority_class"] == "object"
    assert summary["val_images"] == 14 and summary["temperature"] > 0
    assert "majority class" in proc.stderr and "temperature" in proc.stderr
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log] == ["linear probe"]
    for name in ("curves.png", "confusion.png"):
        from PIL import Image

        with Image.open(run / name) as im:
            assert im.format == "PNG" and im.width >= 300 and im.height >= 300

    proc = run_cli(
        "classify", str(held_out), "--model", "efficientnet-lite0", "--weights", str(run / "model.safetensors"),
        "--json", "--no-progress", "--top-k", "2", "--backend", "torch",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == 30
    assert all({p["label"] for p in r["predictions"]} == {"animal", "object"} for r in results)
    correct = sum(r["predictions"][0]["label"] == r["path"].split("/")[-2] for r in results)
    majority = sum(r["path"].split("/")[-2] == "object" for r in results)
    assert majority == 19
    assert correct >= 21, (correct, majority)  # >= 70 % on images the run never saw
