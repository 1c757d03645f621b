"""`effnet eval --engine ray` gives the local eval's report (same code fills it) from rows computed on Ray."""

from __future__ import annotations

import json

import pytest

from tests.distributed.ray_fixtures import LITE0
from tests.testutils import run_cli

pytestmark = pytest.mark.slow


def test_eval_on_ray_reports_what_the_local_eval_reports(ray_cluster, sample_dir, tmp_path):
    reports = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.json"
        extra = ["--ray-address", ray_cluster.address] if engine == "ray" else []
        r = run_cli(
            "eval",
            str(sample_dir),
            "--model",
            LITE0,
            "--engine",
            engine,
            *extra,
            "--limit",
            "40",
            "--no-progress",
            "--json",
            str(out),
        )
        assert r.returncode == 0, r.stderr
        assert "top-1" in r.stdout and "Traceback" not in r.stderr
        reports[engine] = json.loads(out.read_text())
        if engine == "ray":  # what each node's actors built, as they reported it (both nodes run actors here)
            nodes = [line for line in r.stdout.splitlines() if line.startswith("  on Ray     node ")]
            built = f": {reports['local']['backend']} {reports['local']['precision']} on cpu"
            assert nodes and all(line.lower().endswith(built.lower()) for line in nodes), r.stdout  # CPU or cpu
    local, on_ray = reports["local"], reports["ray"]
    assert on_ray["schema"] == local["schema"] and on_ray["backend"].endswith("on Ray")
    # What the actors built on their nodes (auto resolved there) and measured: not the driver's guess or 0.0.
    assert on_ray["backend"] == f"{local['backend']} on Ray" and on_ray["precision"] == local["precision"]
    assert 0 < on_ray["throughput"]["inference_seconds"] and 0 < on_ray["throughput"]["decode_wait_seconds"]
    # `workers` counts what ran: decoding threads locally, inference actors on Ray (whose start-up is timed).
    assert (local["throughput"]["workers_are"], on_ray["throughput"]["workers_are"]) == (
        "decoding threads",
        "inference actors",
    )
    for key in ("total", "count", "failed", "top1_correct", "top5_correct", "per_class", "weights", "dataset"):
        assert on_ray[key] == local[key], key
    by_path = {i["path"]: i for i in local["images"]}
    assert sorted(i["path"] for i in on_ray["images"]) == sorted(by_path)
    for image in on_ray["images"]:
        assert image == by_path[image["path"]]
    # calibration and the top-k curve from the probabilities the Ray rows carry back, as computed locally
    assert on_ray["topk_accuracy"] == local["topk_accuracy"] and len(local["topk_accuracy"]) == 10
    for key in ("ece", "nll", "brier"):
        assert on_ray["calibration"][key] == pytest.approx(local["calibration"][key], rel=1e-5, abs=1e-7), key
