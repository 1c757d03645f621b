"""effnet explain: Captum attribution maps of the fp32 torch model, checked the way the saliency literature
checks them (tests/saliency_checks.py), on Lite0's real weights; the CLI end to end in a subprocess."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import effnet
from effnet._optional import MissingExtraError
from effnet.errors import EffnetError
from effnet.preprocess import decode_crop
from effnet.saliency import Explainer, resolve_target
from effnet.source import resolve_source
from tests.saliency_checks import QUADRANTS, composite, randomize_top, spearman
from tests.testutils import EXAMPLES, run_cli

LITE0 = "efficientnet-lite0"


@pytest.fixture(scope="module")
def explainer(lite0_checkpoint) -> Explainer:
    return Explainer(resolve_source(LITE0))


def test_gradcam_finds_the_photo_in_its_quadrant(explainer, sample_images):
    """A photo shrunk into one quadrant of a plain or noise canvas: the largest share of positive Grad-CAM
    attribution falls in that quadrant. Every 13th sample image (8 composites, every quadrant on both
    canvases); benchmarks/explain_sanity.py scores all 100."""
    size = explainer.preprocess.input_size
    hits = []
    for i, photo in enumerate(sample_images[::13]):
        quadrant, canvas = i % 4, ("plain", "noise")[i % 2]
        e = explainer.explain_crop(composite(photo, size, quadrant, canvas, seed=i), name=photo.name)
        shares = e.quadrant_shares()
        hits.append(max(shares, key=shares.__getitem__) == QUADRANTS[quadrant])
    assert len(hits) == 8
    assert sum(hits) / len(hits) >= 0.8, hits


def test_randomized_top_changes_the_map(lite0_checkpoint, sample_images):
    """Adebayo et al. (2018): with the last two stages, the head and the classifier re-initialized, a map
    that explains the model (not the image's edges) changes: rank correlation with the real map < 0.5."""
    ex = Explainer(resolve_source(LITE0))
    photos = [EXAMPLES / "chelsea.png", sample_images[0], sample_images[40]]
    crops = [decode_crop(p, ex.preprocess) for p in photos]
    real = [ex.explain_crop(c).attribution for c in crops]
    randomize_top(ex.model)
    rhos = [spearman(r, ex.explain_crop(c).attribution) for r, c in zip(real, crops, strict=True)]
    assert all(rho < 0.5 for rho in rhos), rhos
    assert spearman(real[0], real[0]) == pytest.approx(1.0)  # the measure itself: identical maps give 1


def test_same_input_same_map(explainer):
    a, b = (explainer.explain([EXAMPLES / "coffee.png"])[0] for _ in range(2))
    assert a.attribution is not None and b.attribution is not None
    assert a.attribution.max() > 0
    np.testing.assert_array_equal(a.attribution, b.attribution)
    assert a.summary() == b.summary()


def test_target_by_name_explains_that_class(explainer):
    e = explainer.explain([EXAMPLES / "chelsea.png"], target="Egyptian cat")[0]
    assert e.target is not None and e.target.label == "Egyptian cat" and e.target.class_index == 285
    assert e.predictions[0].label == "tiger cat"  # the top-5 stays the model's own
    summary = e.summary()
    assert summary["target"]["class_index"] == 285 and 0 <= summary["centre_share"] <= 1


def test_resolve_target():
    labels = resolve_source(LITE0, False).labels
    assert resolve_target("top1", labels) is None
    assert resolve_target("282", labels) == 282
    assert resolve_target("n02123159", labels) == 282
    assert resolve_target("tabby", labels) == 281  # one of "tabby, tabby cat"
    with pytest.raises(EffnetError, match="unknown target class 'no such thing'"):
        resolve_target("no such thing", labels)
    with pytest.raises(EffnetError, match="out of range: this model has 1000 classes"):
        resolve_target(1000, labels)


def test_integrated_gradients_and_occlusion_give_maps(lite0_checkpoint, tmp_path):
    """The two other methods, on Lite0's real weights asked for 112 px crops (an effnet-native file: four
    times fewer pixels, so that IG's 32 passes and occlusion's 169 stay cheap in CI): both maps cover the
    crop, are not empty, repeat (to float rounding); IG puts more than an even share in the centre of a centred cup."""
    from effnet.weights.native import NativeInfo, save_native
    from effnet.weights.records import Preprocess

    model = effnet.create_model(LITE0, pretrained=lite0_checkpoint)
    small = Preprocess(input_size=112, resize_size=128, mean=(127.0,) * 3, std=(128.0,) * 3)
    path = save_native(model.state_dict(), tmp_path / "lite0-112.safetensors", NativeInfo(LITE0, small))
    ex = Explainer(resolve_source(LITE0, path))
    crop = decode_crop(EXAMPLES / "coffee.png", ex.preprocess)
    for method in ("integrated-gradients", "occlusion"):
        e = ex.explain_crop(crop, method=method)
        assert e.attribution is not None and e.attribution.shape == crop.shape[:2], method
        assert e.attribution.max() > 0, method
        # Repeats up to float rounding: torch's threaded CPU reductions may sum in another order from run to
        # run on a loaded machine (CI runs saw 1.8e-7, and 8.6e-6 absolute at 1.7e-4 relative); a different map
        # would differ by far more.
        again = ex.explain_crop(crop, method=method).attribution
        np.testing.assert_allclose(e.attribution, again, rtol=1e-3, atol=1e-5)
        if method == "integrated-gradients":  # above an even spread: it looked at the cup (occlusion's coarse
            assert e.centre_share() > 0.25, e.summary()  # 16 px patches at 112 px also credit the saucer's rim)


def test_fine_tuned_native_model_with_its_own_labels(lite0_checkpoint, tmp_path):
    """A RUN/model.safetensors-style file (effnet-native, 3 classes with names): explained with its labels."""
    from effnet.weights.native import NativeInfo, save_native

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = effnet.create_model(LITE0, pretrained=lite0_checkpoint, num_classes=3)
    names = ("cat", "coffee", "other")
    path = save_native(
        model.state_dict(),
        tmp_path / "model.safetensors",
        NativeInfo(model=LITE0, preprocess=resolve_source(LITE0).preprocess, labels=names, num_classes=3),
    )
    (e,) = effnet.explain(EXAMPLES / "chelsea.png", LITE0, path, target="coffee")
    assert e.target is not None and e.target.label == "coffee" and e.target.class_index == 1
    assert [p.label for p in e.predictions] and {p.label for p in e.predictions} == set(names)
    clf = effnet.Classifier(LITE0, path)  # the same through Classifier.explain
    (f,) = clf.explain(EXAMPLES / "chelsea.png", target="coffee")
    np.testing.assert_array_equal(e.attribution, f.attribution)


def test_missing_extra_names_the_pip_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # `import captum.attr` now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'effnet\[explain\]'"):
        Explainer(resolve_source(LITE0, False))


def test_cli_explain_writes_overlays_and_reports_bad_images(lite0_checkpoint, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "maps"
    r = run_cli("explain", str(EXAMPLES), str(bad), "--model", LITE0, "--output", str(out), "--json")
    assert r.returncode == 1, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(row["path"]).name for row in rows] == ["chelsea.png", "coffee.png", "broken.jpg"]
    assert "cannot open image" in rows[2]["error"] or "not an image" in rows[2]["error"]
    assert "1 of 3 images could not be explained" in r.stderr and "Traceback" not in r.stderr
    assert rows[0]["target"]["label"] == "tiger cat" and rows[0]["method"] == "gradcam"
    root = Path(os.path.commonpath([str(EXAMPLES), str(tmp_path)]))  # effnet.outputs: below the common folder
    for row in rows[:2]:
        png = Path(row["overlay"])
        assert png == out / (str(Path(row["path"]).relative_to(root)) + ".gradcam.png")
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width > 2 * im.height  # crop | overlay | top-5 bars
            pixels = np.asarray(im.convert("RGB"))
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000  # a photo and a heatmap, not a blank page
    assert sorted(p.name for p in out.rglob("*.png")) == ["chelsea.png.gradcam.png", "coffee.png.gradcam.png"]
    assert not (tmp_path / "maps" / "broken.jpg.gradcam.png").exists()


def test_cli_explain_never_writes_two_images_onto_one_file(tmp_path):
    """The issue's case: train/cat/1.jpg, val/cat/1.jpg, c/photo.jpg, c/photo.png gave 2 files for 4 images (and
    a model whose class names look like TeX, `a$^$b`, crashed matplotlib's mathtext parser)."""
    from tests.testutils import write_finetuned_model

    weights = write_finetuned_model(tmp_path / "model.safetensors", ("a$^$b", "x_{1}^2 ünï 猫 " + "long" * 30))
    photo = Image.open(EXAMPLES / "chelsea.png").convert("RGB")
    inputs = ["train/cat/1.jpg", "val/cat/1.jpg", "c/photo.jpg", "c/photo.png"]
    for i, name in enumerate(inputs):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        photo.rotate(90 * i).save(tmp_path / name)
    out = tmp_path / "maps"
    r = run_cli("explain", *(str(tmp_path / n) for n in inputs), "--weights", str(weights), "-o", str(out), "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == sorted(f"{n}.gradcam.png" for n in inputs)
    assert [json.loads(line)["overlay"] for line in r.stdout.splitlines()] == [
        str(out / f"{n}.gradcam.png") for n in inputs
    ]


def test_cli_explain_same_file_given_thrice_is_explained_once(tmp_path):
    """`cat/1.jpg cat/1.jpg ./cat/1.jpg` is one input: one computation, one line, one file (it printed three)."""
    from tests.testutils import write_finetuned_model

    weights = write_finetuned_model(tmp_path / "model.safetensors", ("cat", "dog"))
    (tmp_path / "cat").mkdir()
    Image.open(EXAMPLES / "chelsea.png").convert("RGB").save(tmp_path / "cat" / "1.jpg")
    out = tmp_path / "maps"
    r = run_cli(
        "explain", "cat/1.jpg", "cat/1.jpg", "./cat/1.jpg", "--weights", str(weights), "-o", str(out), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stdout.splitlines()) == 1, r.stdout
    assert [p.name for p in out.rglob("*.png")] == ["1.jpg.gradcam.png"]


def test_cli_explain_bad_target_is_one_line(lite0_checkpoint, tmp_path):
    r = run_cli("explain", str(EXAMPLES), "--model", LITE0, "-o", str(tmp_path / "o"), "--target", "zebra crossing")
    assert r.returncode == 1 and "unknown target class 'zebra crossing'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()
