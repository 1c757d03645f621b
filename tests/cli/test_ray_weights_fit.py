"""Weights that do not fit the model fail on the driver before Ray starts, with the local engine's one-line
error (issue 32's attack: Lite1 weights for Lite0 died in every actor's constructor with ~450 lines of Ray
internals). The address is one nothing listens on: the check must come before any connection."""

from __future__ import annotations

import pytest
import torch

import effnet
from tests.testutils import run_cli

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'effnet[ray]')")


@pytest.mark.parametrize("command", ["classify", "eval"])
def test_weights_for_another_model_are_refused_before_ray_starts(command, tmp_path, sample_dir, sample_images):
    weights = tmp_path / "rand_lite1.pth"
    torch.save(effnet.create_model("efficientnet-lite1").state_dict(), weights)
    common = ["--engine", "ray", "--ray-address", "127.0.0.1:9", "--model", "efficientnet-lite0"]
    common += ["--weights", str(weights), "--backend", "torch"]
    if command == "classify":
        r = run_cli("classify", *common, "--output", str(tmp_path / "out.jsonl"), str(sample_images[0]))
    else:
        r = run_cli("eval", str(sample_dir), *common, "--limit", "2")
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.startswith("effnet: error:")]
    assert len(lines) == 1 and "does not fit efficientnet-lite0" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "cannot connect" not in r.stderr, r.stderr
