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
    # every image's outcome, listed in the dataset's order as locally, though Ray's rows arrive in any order
    assert on_ray["images"] == local["images"] and on_ray["failures"] == local["failures"]
    # calibration and the top-k curve from the terms the actors computed (lean rows: no probability vector
    # comes back), the same to the last digit: same function, same probabilities, summed in the same order
    assert on_ray["topk_accuracy"] == local["topk_accuracy"] and len(local["topk_accuracy"]) == 10
    for key in ("ece", "nll", "brier"):
        assert on_ray["calibration"][key] == local["calibration"][key], key
    assert on_ray["calibration"]["reliability"] == local["calibration"]["reliability"]


def test_each_input_row_carries_its_label_whichever_way_it_is_read(ray_cluster, sample_images, tmp_path):
    """An eval's labels ride in the input rows: files streamed from the driver's node, --shared-inputs files
    (one the driver lacks included), and a Ray Client driver's shipped blocks; the label stays with its path."""
    import ray

    from effnet.distributed.inputs import _ship, read_paths

    paths = [str(p) for p in sample_images[:5]] + [str(tmp_path / "gone.jpg")]
    labels = [11, 22, 33, 44, 55, 66]
    expected = dict(zip(paths, labels, strict=True))
    for shared in (False, True):
        rows = read_paths(paths, shared=shared, labels=labels).dataset.take_all()
        assert {r["path"]: r["label"] for r in rows} == expected, shared
        assert {r["path"] for r in rows if r["error"]} == {paths[-1]}, shared
    refs, _, missing = _ship([(p, p) for p in paths], 4, labels)
    shipped = [row for ref in refs for row in ray.get(ref).to_pylist()]
    assert missing == 1 and {r["path"]: r["label"] for r in shipped} == expected
