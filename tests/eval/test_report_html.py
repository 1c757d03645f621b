"""Calibration numbers against a hand computation, and `effnet eval --report`'s page opened in Chromium:
every figure loads, no request leaves the file, the ECE on the page is the JSON report's."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from effnet.evaluate.datasets import Sample
from effnet.evaluate.html import write_html_report
from effnet.evaluate.report import Calibration
from effnet.evaluate.run import Tally
from effnet.labels import get_labels
from tests.testutils import run_cli

# 4 images, 3 classes; rows chosen so that every top-1 probability falls in a different 1/15 bin, away from edges
PROBS = np.array([[0.7, 0.2, 0.1], [0.62, 0.28, 0.10], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
LABELS = [0, 1, 2, 0]


def test_calibration_by_hand():
    tally = Tally(get_labels(("a", "b", "c")), 3)
    tally.add([Sample(Path(f"{i}.jpg"), y) for i, y in enumerate(LABELS)], PROBS)
    cal = tally.calibration()
    assert cal is not None
    # ECE: one image per bin, so the mean of |hit - confidence|: hits 1, 0, 1, 0
    assert cal.ece == pytest.approx((0.3 + 0.62 + 0.2 + 0.4) / 4)
    # NLL: -ln of p(true) = 0.7, 0.28, 0.8, 0.3
    assert cal.nll == pytest.approx(-(math.log(0.7) + math.log(0.28) + math.log(0.8) + math.log(0.3)) / 4)
    # Brier: sum over classes of (p - onehot)^2 per image: 0.14, 0.9128, 0.06, 0.74
    assert cal.brier == pytest.approx((0.14 + 0.9128 + 0.06 + 0.74) / 4)
    assert [b.count for b in cal.bins if b.count] == [1, 1, 1, 1] and len(cal.bins) == 15
    # top-k: the truth ranks 0, 1, 0, 1 (image 4: 0.4 ahead; the tie at 0.3 goes to the lower index, the truth)
    assert tally.topk_accuracy() == (50.0, 100.0, 100.0)


def test_ece_pools_images_in_a_bin():
    """Two images in one bin: |mean hit - mean confidence| weighted by 2/3, not per image."""
    cal = Calibration.from_arrays(
        np.array([0.94, 0.96, 0.5]), np.array([True, False, True]), np.array([0.94, 0.01, 0.5]), np.ones(3)
    )  # 0.94 and 0.96 share the last bin (14/15, 1]
    assert cal.ece == pytest.approx(2 / 3 * abs(0.5 - 0.95) + 1 / 3 * abs(1 - 0.5))
    assert cal.nll == pytest.approx(-(math.log(0.94) + math.log(0.01) + math.log(0.5)) / 3)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")
def test_report_page_in_chromium(sample_report, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install 'effnet[test]'")
    page_path = write_html_report(sample_report, tmp_path / "report")
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    for name in ("accuracy", "per_class", "confused", "reliability", "topk"):
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 5_000, name
        assert (tmp_path / "report" / f"{name}.svg").read_text().lstrip().startswith("<?xml"), name
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate(
                "[...document.images].map(i => ({src: i.src.slice(0, 22), ok: i.complete && i.naturalWidth > 0}))"
            )
            ece_text = page.locator("#ece").inner_text()
            ece_value = float(page.locator("#ece").get_attribute("data-value"))
            top1 = page.locator("#top1").inner_text()
        finally:
            browser.close()
    assert len(images) >= 5 + 1  # five figures and at least one thumbnail of a miss
    assert all(i["ok"] for i in images), [i for i in images if not i["ok"]]
    assert all(i["src"].startswith("data:image/") for i in images)
    outside = [u for u in requests if not u.startswith("data:") and u != page_path.as_uri()]
    assert not outside, outside
    assert ece_value == saved["calibration"]["ece"] == sample_report.calibration.ece
    assert ece_text == f"{saved['calibration']['ece']:.4f}"
    assert top1 == f"{saved['top1']:.2f}"


def test_cli_report_folder(lite0_checkpoint, sample_dir, tmp_path):
    out = tmp_path / "rep"
    r = run_cli(
        "eval", str(sample_dir), "--model", "efficientnet-lite0", "--backend", "torch", "--limit", "6",
        "--no-progress", "--report", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = json.loads((out / "report.json").read_text())
    assert data["count"] == 6 and len(data["topk_accuracy"]) == 10
    assert 0 <= data["calibration"]["ece"] <= 1 and data["calibration"]["nll"] > 0
    assert f"ECE {data['calibration']['ece']:.4f}" in r.stdout
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and 'src="data:image/png;base64,' in html


def test_cli_report_refuses_a_file(tmp_path, sample_dir):
    f = tmp_path / "x"
    f.write_text("")
    r = run_cli("eval", str(sample_dir), "--report", str(f), "--model", "efficientnet-lite0")
    assert r.returncode == 2 and "is not a folder" in r.stderr and "Traceback" not in r.stderr


def test_cli_report_refuses_a_folder_of_other_files_before_the_work(tmp_path, sample_dir):
    """Issue 29: a --report DIR holding a user's files is refused before the evaluation (not replaced, and not
    after the work); the report is written whole into a fresh folder that then takes DIR's place."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep")
    r = run_cli("eval", str(sample_dir), "--report", str(notes), "--model", "efficientnet-lite0", "--no-progress")
    assert r.returncode != 0 and "holds other files" in r.stderr and "Traceback" not in r.stderr
    assert "top-1" not in r.stdout  # refused before the evaluation ran
    assert [p.name for p in notes.iterdir()] == ["mine.txt"]


def test_cli_report_refuses_an_earlier_report_holding_a_users_file(tmp_path, sample_dir):
    """An earlier report folder into which the user put notes.txt: refused before the evaluation, notes kept
    (the folder would be replaced whole, deleting it)."""
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "report.html").write_text("run 1")
    (rep / "notes.txt").write_text("keep")
    r = run_cli("eval", str(sample_dir), "--report", str(rep), "--model", "efficientnet-lite0", "--no-progress")
    assert r.returncode != 0 and "notes.txt" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "top-1" not in r.stdout  # refused before the evaluation ran
    assert (rep / "notes.txt").read_text() == "keep"
