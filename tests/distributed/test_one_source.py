"""`--engine ray` ships the driver's resolution of the model source with the weights' bytes: the actors
build on it and never resolve the weights file again (issue 32).

Seen from outside the actors: resolving a weights file identifies it by its sha256 through the sha256 index
of the node's own EFFNET_HOME (`effnet.weights.digest`), which leaves an entry (and its lock file) there;
shipped bytes are verified without that index. So a run whose actors resolved the file again would leave
new files in a node's index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.distributed.ray_fixtures import LITE0
from tests.testutils import run_cli

pytestmark = pytest.mark.slow


def _index_files(homes) -> set[Path]:
    return {p for home in homes for p in (Path(home) / "sha256-index").glob("*")}


@pytest.mark.parametrize("command", ["classify", "eval"])
def test_actors_build_on_the_drivers_source_without_identifying_the_file_again(
    command, ray_cluster, node_homes, lite0_checkpoint, sample_dir, sample_images, tmp_path
):
    weights = tmp_path / f"lite0-{command}.pth"  # a path of its own: no earlier run hashed it anywhere
    shutil.copy(lite0_checkpoint, weights)
    before = _index_files(node_homes)
    common = [
        "--engine",
        "ray",
        "--ray-address",
        ray_cluster.address,
        "--no-progress",
        "--backend",
        "torch",
        "--workers",
        "1",
    ]
    common += ["--model", LITE0, "--weights", str(weights)]
    if command == "classify":
        out = tmp_path / "out.jsonl"
        r = run_cli("classify", *common, "--output", str(out), *map(str, sample_images[:2]))
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 2 and all(row["predictions"] for row in rows), rows
    else:
        r = run_cli("eval", str(sample_dir), *common, "--limit", "2")
        assert r.returncode == 0, r.stderr
        assert "top-1" in r.stdout and "images     2 evaluated, 0 failed" in r.stdout, r.stdout
    assert "Traceback" not in r.stderr
    assert _index_files(node_homes) == before, "an actor identified the weights file again"
