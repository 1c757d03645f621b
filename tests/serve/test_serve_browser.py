"""The page at / in headless Chromium: upload an example photo, see the expected top-1 label as a bar.

Needs Debian's `chromium` (/usr/bin/chromium, installed by scripts/setup.sh) and the `playwright` Python
package driving it; Playwright's own browser download is not used.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.serve.serve_fixtures import (  # noqa: F401 - pytest fixtures
    TWO_CLASSES,
    lite0_classifier,
    server,
    two_class_server,
    two_class_weights,
)

CHELSEA = Path(__file__).resolve().parents[2] / "examples" / "chelsea.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium is not installed (apt-get install -y chromium; "
        "scripts/setup.sh does it where apt-get exists and runs as root)",
    ),
]


def test_page_upload_shows_top5_bars(server, lite0_classifier, tmp_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip install 'effnet[test]')"
    )
    expected = lite0_classifier.classify([CHELSEA], top_k=5)[0].predictions
    screenshot = tmp_path / "serve_page.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 640})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('efficientnet-lite0')")
            page.set_input_files("#file", str(CHELSEA))
            page.wait_for_selector("#results li:nth-child(5) .label", timeout=60_000)
            labels = page.locator("#results .label").all_inner_texts()
            percents = page.locator("#results .pct").all_inner_texts()
            page.wait_for_function("parseFloat(document.querySelector('#results .bar').style.width) > 0")
            assert page.locator("#preview").evaluate("img => img.complete && img.naturalWidth > 0")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    print(f"\nbrowser screenshot: {screenshot}")
    assert labels == [p.label for p in expected]
    assert percents[0] == f"{100 * expected[0].probability:.1f}%"
    assert not errors, errors
    assert screenshot.stat().st_size > 10_000


def test_page_works_for_a_model_with_fewer_than_5_classes(two_class_server):
    """A fine-tuned 2-class model: the page asks for min(5, classes) labels and shows both (issue 24)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip install 'effnet[test]')"
    )
    asked: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda r: asked.append(r.url) if "/v1/classify" in r.url else None)
            page.goto(two_class_server.url + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('efficientnet-lite0')")
            page.set_input_files("#file", str(CHELSEA))
            page.wait_for_selector("#results li:nth-child(2) .label", timeout=60_000)
            labels = page.locator("#results .label").all_inner_texts()
            status = page.locator("#status").inner_text()
            status_class = page.locator("#status").get_attribute("class")
        finally:
            browser.close()
    assert sorted(labels) == sorted(TWO_CLASSES)
    assert status_class != "error", status
    assert asked and all(url.endswith("top_k=2") for url in asked), asked


def test_page_where_did_it_look_switch_draws_the_map(server, tmp_path):
    """The switch on, a photo chosen: the map from /v1/explain lies over the photo's centre crop. Screenshots
    of the photo with the switch on and off differ inside the crop and nowhere outside it."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install 'effnet[test]'")
    import io

    import numpy as np
    from PIL import Image

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 640})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.check("#explain")
            page.set_input_files("#file", str(CHELSEA))
            page.wait_for_selector("#heatmap.shown", timeout=120_000)
            page.wait_for_function("document.getElementById('heatmap').complete")
            assert "tiger cat" in page.locator("#lookinfo").inner_text()
            box = page.locator("#heatmap").bounding_box()
            photo = page.locator("#preview").bounding_box()
            on = page.locator("#stage").screenshot()
            page.screenshot(path=str(tmp_path / "page_explain.png"))
            page.uncheck("#explain")
            page.wait_for_selector("#heatmap:not(.shown)", state="attached")
            off = page.locator("#stage").screenshot()
        finally:
            browser.close()
    assert not errors, errors
    a = np.asarray(Image.open(io.BytesIO(on)).convert("RGB"), np.int16)
    b = np.asarray(Image.open(io.BytesIO(off)).convert("RGB"), np.int16)
    diff = np.abs(a - b).sum(axis=2)
    x0, y0 = round(box["x"] - photo["x"]), round(box["y"] - photo["y"])
    x1, y1 = x0 + round(box["width"]), y0 + round(box["height"])
    # the crop in the photo's pixels is 263.1 x 262.5 at (93.96, 18.75) (test_serve_explain), shown scaled
    scale = diff.shape[1] / 451
    assert abs(x0 - 93.96 * scale) <= 2 and abs(y0 - 18.75 * scale) <= 2 and abs(x1 - x0 - 263.1 * scale) <= 2
    inside = diff[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]
    assert (inside > 30).mean() > 0.3  # a coloured map over a good part of the crop
    outside = [diff[:, : x0 - 2], diff[:, x1 + 2 :], diff[: y0 - 2], diff[y1 + 2 :]]
    assert all(part.size and part.max() == 0 for part in outside)  # nothing drawn outside it


def test_page_takes_a_clip_and_shows_its_timeline_and_the_frame_under_the_cursor(server, sample_dir, tmp_path):
    """A clip of three sample photos held 2 s each: the page draws three labelled segments over the clip's 6 s,
    and the mouse over the last third of the bar shows that frame's top-5 and seeks the video to it."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install 'effnet[test]'")
    pytest.importorskip("av", reason="PyAV (effnet[video]) is not installed")
    import httpx

    from tests.video.clips import held, photo, write_clip

    names = ("n01440764_tench", "n01601694_water_ouzel", "n01860187_black_swan")
    clip = write_clip(tmp_path / "held.mp4", *held([photo(sample_dir / f"{n}.JPEG") for n in names], 2.0))
    # what the page must show: the server's own answer for the clip (checked against the stills in
    # test_serve_video), first word of each segment's label, and the top-5 of the frame at 5.0 s
    answer = httpx.post(f"{server.url}/v1/video?top_k=5", content=clip.read_bytes(), timeout=120).json()
    expected_segments = [s["label"].split(",")[0] for s in answer["segments"]]
    at_5s = next(f for f in answer["frames"] if f["time"] == 5.0)
    assert len(expected_segments) == 3
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 700})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('efficientnet-lite0')")
            page.set_input_files("#file", str(clip))
            page.wait_for_selector("#segments .seg:nth-of-type(3)", timeout=120_000)
            segments = page.locator("#segments .seg").all_inner_texts()
            bar = page.locator("#segments").bounding_box()
            # 5.25 s of 6 s: the sampled frame shown then is the one at 5.0 s
            page.mouse.move(bar["x"] + bar["width"] * 5.25 / 6, bar["y"] + bar["height"] / 2)
            page.wait_for_function(f"document.getElementById('frameinfo').dataset.frame === '{at_5s['frame']}'")
            labels = page.locator("#results .label").all_inner_texts()
            seeked = page.locator("#clipvideo").evaluate("v => v.currentTime")
            page.screenshot(path=str(tmp_path / "page_clip.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert segments == expected_segments
    assert labels == [p["label"] for p in at_5s["predictions"]]
    assert seeked == pytest.approx(5.0, abs=1e-3)
