"""`effnet audit --engine ray`: the embedding pass on the session's Ray cluster gives the local audit's findings
and embeddings, through the driver's content-keyed cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.distributed.ray_fixtures import LITE0
from tests.testutils import run_cli
from tests.train.conftest import class_index, task_label

pytestmark = pytest.mark.slow

# The findings that depend on the embeddings; timings and cache counts are the run's own.
FINDINGS = ("label_issues", "duplicates", "leakage", "outliers", "unreadable", "tiny", "classes", "label_check")


def _folders(sample_images: list[Path], root: Path) -> dict[str, object]:
    """12 photos (6 animal, 6 object) with one in the wrong folder, a re-encoded copy, a byte-identical copy
    and a non-image in DATA; in --val a re-encoded copy of a DATA photo."""
    index = class_index()
    animals = [p for p in sample_images if task_label(p, index) == "animal"][:6]
    objects = [p for p in sample_images if task_label(p, index) == "object"][:6]
    data, val = root / "data", root / "val"
    for label, photos in (("animal", animals[:5] + objects[:1]), ("object", objects[1:] + animals[5:])):
        (data / label).mkdir(parents=True)
        for p in photos:
            os.symlink(p, data / label / p.name)
    copy = data / "animal" / "copy.jpg"
    Image.open(animals[1]).convert("RGB").save(copy, format="JPEG", quality=60)
    shutil.copyfile(animals[2], data / "animal" / "exact.jpg")
    (data / "object" / "broken.jpg").write_bytes(b"not a JPEG\n" * 20)
    (val / "animal").mkdir(parents=True)
    Image.open(animals[3]).convert("RGB").save(val / "animal" / "leak.jpg", format="JPEG", quality=60)
    return {"data": data, "val": val, "copy": (str(data / "animal" / animals[1].name), str(copy))}


def _audit(folders: dict, out: Path, home: Path, *engine: str):
    return run_cli(
        "audit", str(folders["data"]), "--val", str(folders["val"]), "--model", LITE0, "--no-progress",
        "--json", str(out), *engine, env={"EFFNET_HOME": str(home)}, timeout=600,
    )  # fmt: skip


def _cache(home: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p) for p in (home / "embeddings").rglob("*.npy")}


def test_audit_on_ray_finds_what_the_local_audit_finds(ray_cluster, sample_images, tmp_path):
    folders = _folders(sample_images, tmp_path)
    local = _audit(folders, tmp_path / "local.json", tmp_path / "home-local")
    assert local.returncode == 0, local.stderr
    ray_args = ("--engine", "ray", "--ray-address", ray_cluster.address, "--workers", "1")
    on_ray = _audit(folders, tmp_path / "ray.json", tmp_path / "home-ray", *ray_args)
    assert on_ray.returncode == 0, on_ray.stderr
    assert "embedded on Ray" in on_ray.stderr and "Traceback" not in on_ray.stderr
    want, got = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("local", "ray"))

    # The rows Ray computed land in the driver's cache: one entry per distinct readable content (15 readable
    # files, one of them a byte-identical copy), each the local row within float tolerance.
    local_rows, ray_rows = _cache(tmp_path / "home-local"), _cache(tmp_path / "home-ray")
    assert len(ray_rows) == 14 and set(ray_rows) == set(local_rows)
    for sha, row in ray_rows.items():
        np.testing.assert_allclose(row, local_rows[sha], rtol=1e-4, atol=1e-4, err_msg=sha)

    # Same findings; the scores and similarities, computed from rows equal within tolerance, equal within 1e-3.
    for key in FINDINGS:
        a, b = json.dumps(want[key], sort_keys=True), json.dumps(got[key], sort_keys=True)
        if a != b:
            assert key in ("label_issues", "duplicates", "leakage", "outliers", "label_check"), key
            _close(want[key], got[key], key)
    assert [u["path"] for u in got["unreadable"]] == [str(folders["data"] / "object" / "broken.jpg")]
    assert any(set(folders["copy"]) <= set(d["paths"]) for d in got["duplicates"])
    assert [leak["val"] for leak in got["leakage"]] == [str(folders["val"] / "animal" / "leak.jpg")]
    assert got["embedded_from_cache"] == 0
    # A cached image never reaches the engine: tests/audit/test_audit.py (in-process, without a cluster).


def _close(a: object, b: object, where: str) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= 1e-3, (where, a, b)
    else:
        assert a == b, (where, a, b)
