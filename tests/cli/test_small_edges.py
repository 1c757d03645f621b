"""Issue 28's smaller edges: eval shows top-k only below the class count; `effnet info --weights FILE`
describes a fine-tuned file."""

from __future__ import annotations

import json
import os

from tests.testutils import run_cli, write_finetuned_model


def test_eval_of_a_two_class_model_shows_no_top5(tmp_path, sample_images):
    weights = write_finetuned_model(tmp_path / "run" / "model.safetensors", ("cat", "dog"))
    for name, images in (("cat", sample_images[:3]), ("dog", sample_images[3:6])):
        (tmp_path / "data" / name).mkdir(parents=True)
        for p in images:
            os.symlink(p, tmp_path / "data" / name / p.name)
    r = run_cli("eval", str(tmp_path / "data"), "--weights", str(weights), "--backend", "torch", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "top-1" in r.stdout and "top-5" not in r.stdout  # every image is in a 2-class model's top 5


def test_info_describes_a_finetuned_file(tmp_path):
    weights = write_finetuned_model(tmp_path / "run" / "model.safetensors", ("cat", "dog", "fox"))
    r = run_cli("info", "--weights", str(weights), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["model"] == "efficientnet-lite0" and info["output"]["shape"] == [1, 3]
    assert info["input"]["shape"] == [1, 3, 64, 64] and "cat, dog, fox" in info["output"]["meaning"]
    assert info["weights"]["name"] == "file:model.safetensors"
