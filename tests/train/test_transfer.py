"""The real transfer task: animal vs object on the ImageNet sample, from Lite0's real weights, with the defaults.

70 images are the training folder (the run holds out 20 % of them for its own validation, model selection
and calibration); the other 30 are scored only afterwards, through `effnet classify`, and never seen by the
run: always answering "object" scores 63 % on them. Both the linear probe (``--freeze body``) and full
fine-tuning (LP-FT) run with the defaults; fine-tuning starts from Lite0's real weights saved with a
128 px crop (``lite0_128_weights``) so that its >= 50 steps cost about a minute on two cores.
"""

from __future__ import annotations

import json

from tests.testutils import run_cli


def _score_held_out(run, held_out, backend: str = "torch") -> tuple[int, int, list[dict]]:
    """(correct, always-"object" correct, results) of RUN/model.safetensors on the held-out images."""
    proc = run_cli(
        "classify", str(held_out), "--model", "efficientnet-lite0", "--weights", str(run / "model.safetensors"),
        "--json", "--no-progress", "--top-k", "2", "--backend", backend,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == 30
    correct = sum(r["predictions"][0]["label"] == r["path"].split("/")[-2] for r in results)
    majority = sum(r["path"].split("/")[-2] == "object" for r in results)
    return correct, majority, results


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

    correct, majority, results = _score_held_out(run, held_out)
    assert all({p["label"] for p in r["predictions"]} == {"animal", "object"} for r in results)
    assert majority == 19
    # The issue asks >= 70 % (21); measured 29 / 30. The probe on the head embedding alone (before it chose
    # among stages) scored 21-26 here: 27 keeps two images of slack and still catches a return to it.
    assert correct >= 27, (correct, majority)
    # The probe chose its embedding by cross-validation, and the saved network is cut where it chose: the
    # ONNX export of the file (built from its metadata) answers as torch does.
    candidates = log[0]["probe_candidates"]
    assert "head" in candidates and len(candidates) == 5
    assert log[0]["probe_embedding"] in candidates
    _, _, onnx_results = _score_held_out(run, held_out, backend="onnxruntime")
    assert [r["predictions"][0]["label"] for r in onnx_results] == [r["predictions"][0]["label"] for r in results]


def test_full_fine_tuning_defaults_learn_animal_vs_object(transfer_task, lite0_128_weights, tmp_path):
    """LP-FT with every default (probe head, >= 50 steps, body at 0.1x, BN statistics frozen, crops >= 35 %,
    validation-selected epoch): >= 70 % on the 30 images the run never saw (always "object": 63 %)."""
    train_dir, held_out = transfer_task
    run = tmp_path / "run"
    proc = run_cli(
        "train", str(train_dir), "--model", "efficientnet-lite0", "--weights", str(lite0_128_weights),
        "--output", str(run), "--val-split", "0.2", "--workers", "2", "--json", "--no-progress", timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["classes"] == ["animal", "object"] and not summary["learned_nothing"]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[0]["phase"] == "linear probe" and {r["phase"] for r in log[1:]} == {"fine-tune"}
    assert log[-1]["step"] >= 50  # the schedule is sized in optimizer steps
    correct, majority, _ = _score_held_out(run, held_out)
    assert majority == 19
    # The issue asks >= 70 % (21); measured 29 / 30. The probe on the head embedding alone (before it chose
    # among stages) scored 21-26 here: 27 keeps two images of slack and still catches a return to it.
    assert correct >= 27, (correct, majority)
