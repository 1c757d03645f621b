"""`effnet bench --plot` and effnet.bench.plot_latencies: one row per path, the figure written atomically."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from effnet.bench import plot_latencies
from effnet.errors import EffnetError
from tests.testutils import run_cli


def test_plot_latencies_png_and_svg(tmp_path):
    rng = np.random.default_rng(0)
    paths = {"fast path": rng.normal(5, 0.5, 30), "slow path": rng.normal(80, 5, 30), "empty": []}
    png = plot_latencies(paths, tmp_path / "lat.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 500
    svg = plot_latencies(paths, tmp_path / "lat.svg").read_text()
    # both drawn paths are labelled, the empty one is left out; 16x apart: a log axis
    assert "fast path" in svg and "slow path" in svg and "empty" not in svg
    assert "10^{1}" in svg or "10^{2}" in svg or "$\\mathdefault{10^{" in svg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lat.png", "lat.svg"]  # no temporary file left
    with pytest.raises(EffnetError, match="must end in .png or .svg"):
        plot_latencies(paths, tmp_path / "lat.jpg")
    with pytest.raises(EffnetError, match="no latencies"):
        plot_latencies({"x": []}, tmp_path / "none.png")


def test_cli_bench_plot(lite0_checkpoint, tmp_path):
    out = tmp_path / "bench.png"
    r = run_cli(
        "bench", "--model", "efficientnet-lite0", "--backend", "torch", "--iterations", "4", "--warmup", "0",
        "--plot", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    with Image.open(out) as im:
        assert im.format == "PNG"
    bad = run_cli("bench", "--model", "efficientnet-lite0", "--plot", str(tmp_path / "x.gif"))
    assert bad.returncode == 2 and "must end in .png or .svg" in bad.stderr
