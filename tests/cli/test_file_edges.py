"""Issue 28, second round: a file is described and run by the one rule every command reads it with, never
silently as the default B5 (`info --weights FILE`, `--weights FILE` without --model, a metadata-free
--model-path), and a file of the wrong kind is named as such."""

from __future__ import annotations

import json

import pytest
import torch

import effnet
from effnet.weights.convert import to_foreign
from tests.testutils import run_cli


@pytest.fixture(scope="module")
def timm_lite0(tmp_path_factory):
    """The real Lite0 weights re-keyed as timm's tf_efficientnet_lite0 file (matches no record's sha256)."""
    ours = effnet.create_model("efficientnet-lite0", pretrained=True)
    path = tmp_path_factory.mktemp("timm") / "tf_efficientnet_lite0.pth"
    torch.save(to_foreign(ours.state_dict(), ours.plan, "timm"), path)
    return path


def _one_line_error(proc) -> str:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_weights_without_model_takes_the_model_from_the_file_name(timm_lite0, sample_images):
    r = run_cli("classify", "--weights", str(timm_lite0), "--backend", "torch", "--json", str(sample_images[0]))
    assert r.returncode == 0, r.stderr
    assert "read as timm weights for efficientnet-lite0" in r.stderr
    line = _one_line_error(
        run_cli("classify", "--model", "efficientnet-b5", "--weights", str(timm_lite0), str(sample_images[0]))
    )
    assert "timm's tf_efficientnet_lite0" in line and "efficientnet-b5" in line
