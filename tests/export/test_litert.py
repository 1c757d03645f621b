"""The LiteRT backend (runtime only: ``ai-edge-litert``), on a tiny real .tflite in effnet's input convention.

The converter's tests (a real Lite0 export: fp32 parity, int8 agreement) need ``effnet[litert]`` and live in
``tests/litert_convert`` (docs/export.md says why they are not in the default install).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from effnet.backends import (
    ACCURACY_GATE,
    AUTO_RANKING,
    accuracy_status,
    auto_candidates,
    create_backend,
    installed_backends,
)
from effnet.errors import EffnetError
from effnet.export.tflite import cache_tflite, tflite_metadata
from effnet.predict import Classifier
from effnet.preprocess import load_image, resize_crop
from effnet.source import resolve_source
from tests.export.tiny_tflite import reference, weights, write_tiny_tflite
from tests.testutils import run_cli

pytest.importorskip("ai_edge_litert", reason="no LiteRT runtime (pip install 'effnet[litert-runtime]')")


@pytest.fixture(scope="module")
def fc():
    return weights(1000)


@pytest.fixture(scope="module")
def tiny_lite0(tmp_path_factory, fc):
    """A .tflite at Lite0's crop size (224), with the sidecar an effnet export writes."""
    path = write_tiny_tflite(tmp_path_factory.mktemp("tflite") / "tiny.tflite", 224, *fc)
    source = resolve_source("efficientnet-lite0", None, progress=False)
    path.with_suffix(".json").write_text(json.dumps(tflite_metadata(source, "fp32")))
    return path


@pytest.fixture(scope="module")
def crops(sample_images):
    source = resolve_source("efficientnet-lite0", None, progress=False)
    return np.stack([np.asarray(resize_crop(load_image(p), source.preprocess)) for p in sample_images[:3]])


def test_litert_backend_feeds_the_uint8_crop_as_it_is_in_batch_order(tiny_lite0, fc, crops):
    source = resolve_source("efficientnet-lite0", None, progress=False)
    backend = create_backend("litert", source, model_path=tiny_lite0, threads=2)
    assert backend.name == "litert" and backend.precision == "fp32" and backend.describe()["threads"] == 2
    probs = backend(crops)
    expected = reference(crops, *fc)
    assert probs.shape == (3, 1000) and probs.dtype == np.float32
    assert np.abs(probs - expected).max() < 1e-5
    # A channel swap (BGR) or reading the crop as NCHW would change the answer: the check has teeth.
    assert np.abs(reference(crops[..., ::-1], *fc) - expected).max() > 1e-3
    # The KServe v2 tensor path: normalized NCHW float in, the same probabilities out.
    p = source.preprocess
    x = (crops.astype(np.float32) - np.array(p.mean, np.float32)) / np.array(p.std, np.float32)
    assert np.abs(backend.infer_normalized(x.transpose(0, 3, 1, 2)) - expected).max() < 1e-5


def test_litert_backend_rejects_wrong_input_and_wrong_files_clearly(tiny_lite0, tmp_path, crops):
    source = resolve_source("efficientnet-lite0", None, progress=False)
    backend = create_backend("litert", source, model_path=tiny_lite0)
    with pytest.raises(EffnetError, match=r"expected a batch of RGB crops of shape \[N, 224, 224, 3\]"):
        backend(crops[:, :200])
    b5 = resolve_source("efficientnet-b5", False, progress=False)  # random init: a 456 model
    with pytest.raises(EffnetError, match=r"takes uint8 \[1, 224, 224, 3\]; expected .* \[1, 456, 456, 3\]"):
        create_backend("litert", b5, model_path=tiny_lite0)
    with pytest.raises(EffnetError, match="no .tflite file at"):
        create_backend("litert", source, model_path=tmp_path / "missing.tflite")
    with pytest.raises(EffnetError, match="precision must be one of fp32, fp16, int8, int8-float-act"):
        create_backend("litert", source, model_path=tiny_lite0, precision="bf16")


def test_without_an_export_the_litert_backend_says_how_to_make_one(tmp_path, sample_images):
    r = run_cli(
        "classify",
        "--backend",
        "litert",
        "--precision",
        "int8",
        "--model",
        "efficientnet-lite0",
        str(sample_images[0]),
        env={"EFFNET_HOME": str(tmp_path)},
    )
    assert r.returncode == 1
    (line,) = [x for x in r.stderr.splitlines() if x.strip()]
    assert "no int8 .tflite of efficientnet-lite0" in line
    assert "effnet export tflite --model efficientnet-lite0" in line and "--calibration" in line


def test_classify_runs_the_cached_tflite_end_to_end(tmp_path, tiny_lite0, fc, sample_images):
    """An export in the cache (as `effnet export tflite` leaves it) is what `--backend litert` runs."""
    home = tmp_path / "home"
    source = resolve_source("efficientnet-lite0", None, progress=False)
    cached = cache_tflite(source, tiny_lite0, "fp32", home / "exports")
    assert cached.is_file() and json.loads(cached.with_suffix(".json").read_text())["input_dtype"] == "uint8"
    r = run_cli(
        "classify",
        "--backend",
        "litert",
        "--model",
        "efficientnet-lite0",
        "--json",
        "--top-k",
        "1",
        str(sample_images[0]),
        str(sample_images[1]),
        env={"EFFNET_HOME": str(home)},
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    crops = np.stack([np.asarray(resize_crop(load_image(p), source.preprocess)) for p in sample_images[:2]])
    expected = reference(crops, *fc).argmax(1).tolist()
    assert [row["predictions"][0]["class_index"] for row in rows] == expected
    clf = Classifier("efficientnet-lite0", backend="litert", cache_dir=home / "exports")
    assert clf.backend.model_path == cached


def test_auto_never_picks_an_unverified_path_and_litert_int8_on_b5_says_so(tmp_path, fc, capfd):
    assert "litert" in installed_backends()
    int8 = AUTO_RANKING.paths["int8"]
    assert any(c.backend == "litert" and c.accuracy == "unverified" for c in int8)
    assert all(name != "litert" for name, _ in auto_candidates("int8"))
    assert all(name != "litert" for name, _ in auto_candidates("int8", model="efficientnet-b5"))
    assert all(name != "litert" for name, _ in auto_candidates("int8", model="efficientnet-lite4"))  # no weights
    # verified where measured (backends/accuracy.py, tests/litert_convert): Lite0/1/2
    # ... behind OpenVINO int8, which was faster in the same interleaved run (docs/performance.md)
    assert auto_candidates("int8", model="efficientnet-lite0") == [
        ("openvino", {"precision": "int8"}),
        ("litert", {"precision": "int8"}),
    ]
    for precision in ("int8", "int8-float-act", "fp16"):
        assert accuracy_status("efficientnet-lite2", "litert", precision) == "verified"
        assert accuracy_status("efficientnet-b5", "litert", precision).startswith("unverified for this model")
    assert accuracy_status("efficientnet-lite0", "litert", "fp32") == "verified"
    assert accuracy_status("efficientnet-b5", "openvino", "int8") == "verified"
    assert 0.9 < ACCURACY_GATE < 1
    b5 = resolve_source("efficientnet-b5", False, progress=False)
    path = write_tiny_tflite(tmp_path / "b5.tflite", 456, *fc)
    capfd.readouterr()
    create_backend("litert", b5, model_path=path, precision="int8")
    err = [x for x in capfd.readouterr().err.splitlines() if x.startswith("effnet:")]
    assert err == [
        "effnet: litert int8 on efficientnet-b5: accuracy " + accuracy_status("efficientnet-b5", "litert", "int8")
    ]


def test_auto_takes_the_cached_litert_int8_export_of_a_verified_model(tmp_path, tiny_lite0, capfd):
    """Lite0's full-int8 .tflite met the gate, so `auto --precision int8` runs it when it is in the cache and
    no INT8 IR is (OpenVINO int8 is ranked first: faster where both were measured), and says nothing about
    accuracy."""
    source = resolve_source("efficientnet-lite0", None, progress=False)
    made = tmp_path / "int8.tflite"
    made.write_bytes(tiny_lite0.read_bytes())
    made.with_suffix(".json").write_text(json.dumps(tflite_metadata(source, "int8")))
    cache_tflite(source, made, "int8", tmp_path / "exports")
    capfd.readouterr()
    backend = create_backend("auto", source, precision="int8", cache_dir=tmp_path / "exports")
    assert (backend.name, backend.precision) == ("litert", "int8")
    assert [f.split(":")[0] for f in backend.auto_choice["fallbacks"]] == ["openvino"]
    assert "no INT8 model" in backend.auto_choice["fallbacks"][0]
    said = [x for x in capfd.readouterr().err.splitlines() if x.startswith("effnet:")]
    assert len(said) == 1 and "openvino did not load" in said[0]  # the fallback, and no accuracy line


def test_bench_measures_a_litert_file(tiny_lite0):
    r = run_cli(
        "bench",
        "--model",
        "efficientnet-lite0",
        "--backend",
        "litert",
        "--model-path",
        str(tiny_lite0),
        "--json",
        "--iterations",
        "2",
        "--threads",
        "1",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["config"]["backend"], report["config"]["precision"]) == ("litert", "fp32")
    assert report["iterations"] == 2 and report["throughput_img_s"] > 0


def test_export_tflite_errors_are_one_line(sample_images):
    r = run_cli("export", "tflite", "--model", "efficientnet-lite0", "--precision", "int8")
    assert r.returncode == 2 and "--precision int8 needs --calibration" in r.stderr and "Traceback" not in r.stderr
    import importlib.util

    if importlib.util.find_spec("litert_torch") is None:  # the default install: the runtime without the converter
        r = run_cli("export", "tflite", "--model", "efficientnet-lite0")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "pip install 'effnet[litert]'" in r.stderr.strip().splitlines()[-1]


def test_a_tflite_for_another_class_count_is_refused_naming_both(tmp_path, sample_images):
    """Issue 28: a 2-class file run as Lite0 answered "tench 99.98 %"; a 1000-class file with a 3-class run's
    --weights ended in IndexError. Both are one-line errors now, as on every other backend."""
    from tests.testutils import write_finetuned_model

    two = write_tiny_tflite(tmp_path / "two.tflite", 224, *weights(2))  # made elsewhere: no sidecar
    r = run_cli("classify", "--model", "efficientnet-lite0", "--model-path", str(two), str(sample_images[0]))
    assert r.returncode == 1 and r.stdout == "", r.stdout
    line = r.stderr.strip().splitlines()[-1]
    assert "two.tflite outputs 2 classes" in line and "1000 labels" in line
    many = write_tiny_tflite(tmp_path / "many.tflite", 64, *weights(1000))
    run = write_finetuned_model(tmp_path / "run" / "model.safetensors", ("cat", "dog", "fox"))
    r = run_cli("classify", "--weights", str(run), "--model-path", str(many), str(sample_images[0]))
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "many.tflite outputs 1000 classes" in line and "3 labels" in line
