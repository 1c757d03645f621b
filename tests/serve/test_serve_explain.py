"""POST /v1/explain on a real `effnet serve` process (Lite0; the map comes from the fp32 torch model whatever
backend serves /v1/classify): PNG and JSON answers, and the 4xx answers of bad requests."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from tests.serve.serve_fixtures import client, lite0_classifier, server  # noqa: F401 - pytest fixtures
from tests.testutils import EXAMPLES

CHELSEA = (EXAMPLES / "chelsea.png").read_bytes()


def test_explain_png_and_json(client, lite0_classifier):
    r = client.post("/v1/explain", content=CHELSEA)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.format == "PNG" and im.width > 2 * im.height
    r = client.post("/v1/explain?format=json&target=Egyptian%20cat", files={"image": ("c.png", CHELSEA)})
    assert r.status_code == 200, r.text
    a = r.json()
    local = lite0_classifier.explain(CHELSEA, target="Egyptian cat")[0]
    assert a["target"]["label"] == "Egyptian cat" and a["method"] == "gradcam"
    assert a["peak"] == local.summary()["peak"] and a["centre_share"] == local.summary()["centre_share"]
    # 451x300 photo: Lite0 resizes it to 384x256 and crops 224 at (80, 16); back in the photo's pixels
    # (x 451/384, y 300/256) that is 263.1 x 262.5 at (93.96, 18.75)
    left, top, width, height = a["crop_box"]
    assert (round(left), round(top), round(width), round(height)) == (94, 19, 263, 262)
    with Image.open(io.BytesIO(base64.b64decode(a["heatmap_png"]))) as heat:
        assert heat.mode == "RGBA" and heat.size == (224, 224)
        alpha = np.asarray(heat)[..., 3]
    assert alpha.max() > 100 and alpha.min() < alpha.max()


def test_explain_bad_requests_are_4xx(client):
    bad = client.post("/v1/explain", content=b"\x89PNG\r\n\x1a\n broken")
    assert bad.status_code == 400 and "image" in bad.json()["error"]
    assert client.post("/v1/explain", content=b"").status_code == 400
    r = client.post("/v1/explain?method=lime", content=CHELSEA)
    assert r.status_code == 400 and "gradcam" in r.json()["error"]
    r = client.post("/v1/explain?target=unicorn", content=CHELSEA)
    assert r.status_code == 400 and "unknown target class 'unicorn'" in r.json()["error"]
    assert client.post("/v1/explain?top_k=3", content=CHELSEA).status_code == 400
    assert client.get("/v1/explain").status_code == 405
    spec = client.get("/openapi.json").json()
    assert {"200", "400", "413"} <= set(spec["paths"]["/v1/explain"]["post"]["responses"])
