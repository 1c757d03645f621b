"""One top-k rule for the CLI and the server: a top_k above the model's classes is clamped, and the answer
says so (issue 24: the page asked for 5 labels of a 2-class fine-tuned model and got a 400 on every upload)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.serve.serve_fixtures import TWO_CLASSES, two_class_server, two_class_weights  # noqa: F401 - fixtures
from tests.testutils import run_cli

CHELSEA = Path(__file__).resolve().parents[2] / "examples" / "chelsea.png"


def test_server_clamps_top_k_to_the_classes_and_says_so(two_class_server):
    with httpx.Client(base_url=two_class_server.url, timeout=60) as c:
        assert c.get("/v1/model").json()["num_classes"] == 2  # what the page reads to ask for min(5, classes)
        clamped = c.post("/v1/classify?top_k=5", content=CHELSEA.read_bytes())
        assert clamped.status_code == 200, clamped.text
        body = clamped.json()
        assert body["top_k"] == 2 and body["top_k_requested"] == 5
        assert sorted(p["label"] for p in body["predictions"]) == sorted(TWO_CLASSES)
        exact = c.post("/v1/classify?top_k=2", content=CHELSEA.read_bytes()).json()
        assert exact["top_k"] == 2 and "top_k_requested" not in exact  # nothing clamped, nothing said
        assert exact["predictions"] == body["predictions"]
        default = c.post("/v1/classify", content=CHELSEA.read_bytes())  # the default 5 is clamped too
        assert default.status_code == 200 and default.json()["top_k_requested"] == 5
        assert c.post("/v1/classify?top_k=0", content=CHELSEA.read_bytes()).status_code == 400


def test_cli_clamps_top_k_the_same_way(two_class_weights):
    r = run_cli(
        "classify",
        "--weights",
        str(two_class_weights),
        "--backend",
        "torch",
        "--top-k",
        "5",
        "--json",
        "--no-progress",
        str(CHELSEA),
    )
    assert r.returncode == 0, r.stderr
    assert "--top-k 5 is more than the model's 2 classes" in r.stderr
    assert len(json.loads(r.stdout)["predictions"]) == 2
