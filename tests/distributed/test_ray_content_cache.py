"""Issue 23 through `--engine ray`: two fine-tuning runs (both `RUN/model.safetensors`) classified one after
the other on the session's Ray cluster, whose actors share one export cache, each answer their own model."""

from __future__ import annotations

import json

import pytest

from effnet.predict import Classifier
from tests.distributed.ray_fixtures import LITE0
from tests.testutils import run_cli, write_fine_tuned_lite0

pytestmark = pytest.mark.slow

RUN_A = {"n01440764": "animal", "n01530575": "object"}
RUN_B = {"n01440764": "alpha", "n01530575": "beta", "n01641577": "gamma"}
IMAGES = ("n01440764_tench.JPEG", "n01530575_brambling.JPEG", "n01641577_bullfrog.JPEG")


def test_two_runs_through_ray_answer_like_torch(ray_cluster, sample_dir, tmp_path):
    images = [str(sample_dir / name) for name in IMAGES]
    for name, classes in (("A", RUN_A), ("B", RUN_B)):
        weights = write_fine_tuned_lite0(tmp_path / f"run{name}" / "model.safetensors", classes)
        want = Classifier(LITE0, weights, backend="torch", progress=False).classify(images, top_k=1)
        out = tmp_path / f"{name}.jsonl"
        r = run_cli(
            "classify", "--engine", "ray", "--ray-address", ray_cluster.address, "--no-progress", "--workers", "1",
            "--weights", str(weights), "--output", str(out), *images,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        got = {row["path"]: row["predictions"][0]["label"] for row in map(json.loads, out.read_text().splitlines())}
        assert got == {w.path: w.predictions[0].label for w in want}, name
    assert "gamma" in got.values()  # run B's own third class: run A's two-class IR can never answer it
