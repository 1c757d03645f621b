"""effnet train: data, schedule, freezing, exact resume, the CLI's errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import effnet
from effnet.evaluate import DatasetError
from effnet.train import TrainConfig, TrainError, find_class_folders, train
from effnet.train.config import freeze
from effnet.train.data import random_resized_crop_box, split_samples
from effnet.train.optim import lr_at
from effnet.weights.native import read_native_info
from tests.testutils import run_cli


def test_class_folders_with_any_names(tmp_path, sample_images):
    for name, images in (("zebra crossing", sample_images[:2]), ("Alpha", sample_images[2:5])):
        (tmp_path / name / "sub").mkdir(parents=True)
        for p in images:
            (tmp_path / name / "sub" / p.name).symlink_to(p)
    (tmp_path / "Alpha" / ".hidden.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    data = find_class_folders(tmp_path)
    assert [c.label for c in data.labels] == ["Alpha", "zebra crossing"]  # sorted folder names
    assert sorted(s.label for s in data.samples) == [0, 0, 0, 1, 1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty has no images"):
        find_class_folders(tmp_path)


def test_stray_images_and_missing_folders_are_errors(tmp_path, sample_images):
    with pytest.raises(DatasetError, match="does not exist"):
        find_class_folders(tmp_path / "nope")
    (tmp_path / sample_images[0].name).symlink_to(sample_images[0])
    with pytest.raises(DatasetError, match="no class folders"):
        find_class_folders(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetError, match="beside its class folders"):
        find_class_folders(tmp_path)


def test_split_is_stratified_and_seeded(transfer_task):
    data = find_class_folders(transfer_task[0])
    train_a, val_a = split_samples(data.samples, 0.2, seed=1)
    train_b, val_b = split_samples(data.samples, 0.2, seed=1)
    assert (train_a, val_a) == (train_b, val_b)
    assert set(train_a).isdisjoint(val_a) and len(train_a) + len(val_a) == len(data.samples)
    counts = np.bincount([s.label for s in data.samples])
    assert np.bincount([s.label for s in val_a]).tolist() == [round(0.2 * c) for c in counts]
    assert split_samples(data.samples, 0.2, seed=2)[1] != val_a


def test_random_resized_crop_box_stays_inside_and_covers_scale():
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(500):
        left, top, w, h = random_resized_crop_box(500, 375, rng, (0.08, 1.0), (3 / 4, 4 / 3))
        assert 0 <= left and 0 <= top and left + w <= 500 and top + h <= 375 and w > 0 and h > 0
        areas.append(w * h / (500 * 375))
    assert min(areas) < 0.15 and max(areas) > 0.8
    # A strip far outside the ratio range falls back to the largest centered crop within it.
    assert random_resized_crop_box(1000, 10, rng, (0.9, 1.0), (3 / 4, 4 / 3)) == (493, 0, 13, 10)


def test_lr_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[55] == pytest.approx(0.5, abs=1e-9) and lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)


def test_freeze_stops_gradients():
    model = effnet.create_model("efficientnet-lite0", num_classes=2).train()
    frozen = freeze(model, "body")
    for m in frozen:
        m.eval()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    for name, p in model.named_parameters():
        trainable = name.startswith("classifier.")
        assert p.requires_grad == trainable and (p.grad is not None) == trainable, name
    for spec, message in (("stages:9", "only 7 stages"), ("head", "none, body or stages:K")):
        with pytest.raises(TrainError, match=message):
            freeze(effnet.create_model("efficientnet-lite0"), spec)


def _config(tiny_task, tiny_weights, output: Path, **kw) -> TrainConfig:
    base = dict(
        data=tiny_task[0],
        val=tiny_task[1],
        output=output,
        model="efficientnet-lite0",
        weights=str(tiny_weights),
        epochs=2,
        batch_size=4,
        probe=False,  # the loop's mechanics, from the zero head, exactly 2 epochs of 2 steps
        min_steps=0,
        bn_stats="train",
        workers=0,
        progress=False,
        seed=3,
    )
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("spec, frozen_prefixes", [("body", ("stem.", "stages.", "head.")), ("stages:2", None)])
def test_frozen_weights_do_not_change(tiny_task, tiny_weights, tmp_path, spec, frozen_prefixes):
    if frozen_prefixes is None:
        frozen_prefixes = ("stem.", "stages.0.", "stages.1.")
    before = effnet.create_model("efficientnet-lite0", pretrained=tiny_weights).state_dict()
    train(_config(tiny_task, tiny_weights, tmp_path, epochs=1, freeze=spec, ema_decay=0.0))
    after = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    for k, v in after.items():
        if k.startswith("classifier."):
            assert v.abs().sum() > 0, k  # trained from the zero init
        elif k.startswith(frozen_prefixes):
            assert torch.equal(v, before[k]), k  # weights and BN statistics
        elif v.is_floating_point():
            assert not torch.equal(v, before[k]), k  # trained (BN statistics: updated)


class _Stop(Exception):
    pass


def _stop_after_first(record: dict) -> None:
    if record["epoch"] == 1:
        raise _Stop


def test_resume_gives_the_uninterrupted_run(tiny_task, tiny_weights, tmp_path):
    cfg = _config(tiny_task, tiny_weights, tmp_path / "straight", trivial_augment=True)
    straight = train(cfg)

    with pytest.raises(_Stop):
        train(replace(cfg, output=tmp_path / "resumed"), on_epoch=_stop_after_first)
    # Resumed from the CLI with nothing but the run folder: the run definition comes from the checkpoint.
    # It loads with 2 worker processes where the first half used none: the augmentation must not care.
    proc = run_cli("train", "--output", str(tmp_path / "resumed"), "--resume", "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["classes"] == ["animal", "object"] and summary["epochs"] == 2

    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 4)
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part} {k}"
    fa, fb = load_file(straight.output), load_file(tmp_path / "resumed" / "model.safetensors")
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
    log = [json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    same = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "best")
    assert [{k: r[k] for k in same} for r in log] == [{k: r[k] for k in same} for r in straight.history]


def test_resume_rebuilds_the_network_the_probe_cut(tiny_task, tiny_weights, tmp_path):
    # With the probe on, it chooses its embedding; where it cut the network (a stage, not the head), a
    # resumed run must rebuild the cut network from its checkpoint before loading it, and end the same.
    cfg = _config(tiny_task, tiny_weights, tmp_path / "straight", probe=True)
    straight = train(cfg)
    stage = straight.history[0]["probe_embedding"]
    assert straight.history[0]["phase"] == "linear probe" and stage.startswith("stage ")

    with pytest.raises(_Stop):
        train(replace(cfg, output=tmp_path / "resumed"), on_epoch=_stop_after_first)
    proc = run_cli("train", "--output", str(tmp_path / "resumed"), "--resume", "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert a["embedding_stage"] == b["embedding_stage"] == int(stage.split()[1])
    assert a["model"].keys() == b["model"].keys() and not any(k.startswith("head.") for k in a["model"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    info = read_native_info(tmp_path / "resumed" / "model.safetensors")
    assert info is not None and info.embedding_stage == a["embedding_stage"]


def test_cli_errors_are_one_line(tiny_task, tiny_weights, tmp_path):
    proc = run_cli("train", "--output", str(tmp_path / "run"))
    assert proc.returncode == 2 and "DATA" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("train", str(tiny_task[0]), "--output", str(tmp_path / "run"), "--freeze", "head")
    assert proc.returncode == 2 and "--freeze must be" in proc.stderr
    proc = run_cli("train", "--output", str(tmp_path / "none"), "--resume")
    assert proc.returncode == 1 and "nothing to resume" in proc.stderr
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"x")
    args = ("train", str(tiny_task[0]), "--model", "efficientnet-lite0", "--weights", str(tiny_weights))
    proc = run_cli(*args, "--output", str(tmp_path / "run"))
    assert proc.returncode == 1 and "already holds a training run" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_val_sharing_an_image_with_data_is_an_error(tiny_task, tiny_weights, tmp_path):
    train_dir, val_dir = tiny_task
    first = next(p for p in sorted(train_dir.rglob("*.JPEG")))
    (val_dir / first.parent.name / ("copy-" + first.name)).symlink_to(first.resolve())
    with pytest.raises(TrainError, match="shares images with .*" + first.name.split(".")[0]):
        train(_config((train_dir, val_dir), tiny_weights, tmp_path / "run"))
    (val_dir / first.parent.name / ("copy-" + first.name)).unlink()


def test_a_full_disk_is_one_line_naming_the_file(tiny_task, tiny_weights, tmp_path, monkeypatch):
    # The boundary only: torch.save on a full disk raises "RuntimeError: ... unexpected pos ..."; a tmpfs
    # mount is not allowed in this sandbox, so the writer is made to fail the way torch.save does.
    import effnet.train.loop as loop

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 832 vs 726")

    monkeypatch.setattr(loop, "save_checkpoint", full)
    with pytest.raises(TrainError, match=r"cannot write .*checkpoint\.pt: .*unexpected pos.*disk full"):
        train(_config(tiny_task, tiny_weights, tmp_path / "run", epochs=1))
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
