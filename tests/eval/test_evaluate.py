"""Evaluation with the real Lite0 weights on the 100-image ImageNet sample.

Reference (../shared/README.md): top-1 90/100, top-5 98/100 through gen-efficientnet; effnet's torch
backend measured 89 and 98. The sample is evaluated once (``sample_report``) and the other layouts
are compared image by image with it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import effnet.backends
from effnet.evaluate import REPORT_SCHEMA, DatasetError, EvalReport, Progress, evaluate, find_dataset

pytestmark = pytest.mark.slow  # whole-sample tests


def by_name(report: EvalReport) -> dict[str, tuple[int, tuple[int, ...]]]:
    """File name (through symlinks) -> (label, top-5)."""
    return {Path(i.path).resolve().name: (i.label, i.top5) for i in report.images}


def test_lite0_sample_matches_reference(sample_report: EvalReport, lite0_classifier) -> None:
    r = sample_report
    assert (r.count, r.failed, r.total, r.layout) == (100, 0, 100, "synset-prefix")
    assert 89 <= r.top1_correct <= 91, f"top-1 {r.top1_correct}/100, reference 90 +- 1"
    assert 97 <= r.top5_correct <= 99, f"top-5 {r.top5_correct}/100, reference 98 +- 1"
    assert r.top1 == pytest.approx(r.top1_correct) and r.top5 == pytest.approx(r.top5_correct)
    assert (r.model, r.weights, r.backend, r.precision) == (
        "efficientnet-lite0",
        "efficientnet-lite0.pypi",
        "torch",
        "fp32",
    )
    # The record's preprocessing, not a default: bicubic 256 -> 224, mean 127 / std 128.
    assert r.preprocess == lite0_classifier.record.preprocess
    assert (r.preprocess.resize_size, r.preprocess.input_size, r.preprocess.mean[0]) == (256, 224, 127.0)
    assert r.reference is not None and r.delta_top1 == pytest.approx(r.top1 - 75.1)
    assert r.delta_top5 is None  # the Lite0 record publishes no top-5


def test_report_parts_are_consistent(sample_report: EvalReport) -> None:
    r = sample_report
    assert len(r.per_class) == 100 and all(c.count == 1 for c in r.per_class)  # one image per class
    assert sum(c.top1_correct for c in r.per_class) == r.top1_correct
    assert sum(c.top5_correct for c in r.per_class) == r.top5_correct
    # Every top-1 miss is one confused pair (fewer than 20 misses, so none is cut off).
    assert sum(c.count for c in r.confused) == r.count - r.top1_correct
    assert all(c.true.index != c.predicted.index for c in r.confused)
    assert sum(i.top1_correct for i in r.images) == r.top1_correct
    assert sum(i.top5_correct for i in r.images) == r.top5_correct
    assert r.images_per_second > 0 and r.seconds >= r.inference_seconds > 0


def test_json_report_schema(sample_report: EvalReport, tmp_path: Path) -> None:
    path = sample_report.write_json(tmp_path / "report.json")
    d = json.loads(path.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left behind
    assert d["schema"] == REPORT_SCHEMA
    assert set(d) == {
        "schema",
        "model",
        "weights",
        "backend",
        "precision",
        "dataset",
        "preprocess",
        "total",
        "count",
        "failed",
        "top1",
        "top5",
        "top1_correct",
        "top5_correct",
        "reference",
        "delta_top1",
        "delta_top5",
        "throughput",
        "decode",
        "calibration",
        "topk_accuracy",
        "per_class",
        "most_confused",
        "failures",
        "images",
    }
    assert d["decode"] == {"decoder": "pillow"}  # --decode gpu writes its nvJPEG / Pillow counts here
    assert (d["count"], d["failed"], d["top1_correct"]) == (100, 0, sample_report.top1_correct)
    assert d["dataset"] == {
        "path": sample_report.dataset,
        "layout": "synset-prefix",
        "size": 100,
        "limit": None,
        "unmatched_annotations": 0,
    }
    assert d["reference"]["top1"] == 75.1 and d["reference"]["top5"] is None
    assert set(d["throughput"]) == {
        "images_per_second",
        "seconds",
        "inference_seconds",
        "decode_wait_seconds",
        "batch_size",
        "workers",
        "workers_are",
    }
    assert d["throughput"]["workers_are"] == "decoding threads"  # on Ray: "inference actors"
    assert set(d["per_class"][0]) == {"index", "synset", "label", "count", "top1", "top5"}
    assert set(d["most_confused"][0]) == {"true", "predicted", "count"}
    assert set(d["images"][0]) == {"path", "label", "top5"} and len(d["images"][0]["top5"]) == 5


@pytest.mark.parametrize("layout", ["class-folders", "annotations"])
def test_other_layouts_give_the_same_result(
    layout: str, sample_images: list[Path], sample_report: EvalReport, lite0_classifier, tmp_path: Path, build_layout
) -> None:
    data, ann = build_layout(sample_images, tmp_path / "data", layout)
    ds = find_dataset(data, annotations=ann)
    assert ds.layout == layout and len(ds) == 100
    # Labels of all 100 images as in the synset-prefix layout (no model needed for that).
    assert {s.path.resolve().name: s.label for s in ds.samples} == {k: v[0] for k, v in by_name(sample_report).items()}
    # Through the model, a quarter of them spread over the class range (the 100 already ran once).
    spread = sorted(ds.samples, key=lambda s: s.label)[::4]
    subset = dataclasses.replace(ds, samples=tuple(spread))
    r = evaluate(lite0_classifier, subset, batch_size=16, workers=2)
    assert (r.count, r.failed, r.layout) == (25, 0, layout)
    expected = by_name(sample_report)
    assert by_name(r) == {k: expected[k] for k in (s.path.resolve().name for s in spread)}


def test_corrupt_and_vanished_images_are_counted(
    sample_images: list[Path], sample_report: EvalReport, lite0_classifier, tmp_path: Path, build_layout
) -> None:
    good = sample_images[:3]
    data, _ = build_layout(good, tmp_path / "data", "synset-prefix")
    (data / "n01440764_corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (data / "n01443537_empty.JPEG").write_bytes(b"")
    (data / "n01484850_gone.JPEG").symlink_to(tmp_path / "deleted.JPEG")  # a broken link
    seen: list[Progress] = []
    r = evaluate(lite0_classifier, data, batch_size=2, workers=2, progress=seen.append)
    assert (r.total, r.count, r.failed) == (6, 3, 3)
    assert sorted(Path(f.path).name for f in r.failures) == [
        "n01440764_corrupt.JPEG",
        "n01443537_empty.JPEG",
        "n01484850_gone.JPEG",
    ]
    assert all(f.error for f in r.failures) and {f.label for f in r.failures} == {0, 1, 2}
    expected = {k: v for k, v in by_name(sample_report).items() if k in {p.name for p in good}}
    assert by_name(r) == expected  # the failures do not disturb the other images
    assert seen[-1].done == 6 and seen[-1].failed == 3 and [p.done for p in seen] == sorted(p.done for p in seen)


def test_nothing_decodable_is_an_error(lite0_classifier, tmp_path: Path) -> None:
    (tmp_path / "n01440764_a.JPEG").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="none of the 1 images .* could be decoded; first error: .*n01440764_a"):
        evaluate(lite0_classifier, tmp_path)


def test_limit_takes_a_prefix(
    sample_images: list[Path], sample_report: EvalReport, lite0_classifier, tmp_path: Path, build_layout
) -> None:
    data, _ = build_layout(sample_images[:6], tmp_path / "data", "class-folders")
    r = evaluate(lite0_classifier, data, limit=4, batch_size=3, workers=1)
    assert (r.total, r.count, r.limit, r.dataset_size) == (4, 4, 4, 6)
    expected = by_name(sample_report)
    assert by_name(r) == {k: expected[k] for k in sorted(p.name for p in sample_images[:6])[:4]}


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"workers": 0}, {"limit": 0}])
def test_bad_arguments(lite0_classifier, sample_dir: Path, bad: dict) -> None:
    with pytest.raises(effnet.EffnetError, match=">= 1"):
        evaluate(lite0_classifier, sample_dir, **bad)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_identical_across_backends(backend: str, sample_dir: Path, sample_report: EvalReport, tmp_path: Path) -> None:
    if backend not in effnet.backends.available_backends():
        pytest.skip(f"backend {backend!r} is not registered (available: {effnet.backends.available_backends()})")
    from effnet.predict import Classifier

    # Exports go to tmp_path, not the user's cache.
    clf = Classifier("efficientnet-lite0", backend=backend, precision="fp32", cache_dir=tmp_path, progress=False)
    r = evaluate(clf, sample_dir, batch_size=16, workers=2)
    assert (r.backend, r.precision) == (backend, "fp32")
    assert (r.count, r.failed, r.top1_correct, r.top5_correct) == (
        100,
        0,
        sample_report.top1_correct,
        sample_report.top5_correct,
    )
    ours = by_name(r)
    theirs = by_name(sample_report)
    # Same top-1 class for every image; the top-5 sets may only differ where scores tie at fp32 noise.
    assert {k: v[1][0] for k, v in ours.items()} == {k: v[1][0] for k, v in theirs.items()}
    assert np.mean([set(ours[k][1]) == set(theirs[k][1]) for k in ours]) >= 0.95


@pytest.mark.slow
def test_b5_uses_its_record_preprocessing(b5_random_checkpoint: Path, sample_dir: Path) -> None:
    """B5 (random weights: the real ones cannot be downloaded here) runs at 456 px from a 488 resize."""
    from effnet.predict import Classifier

    clf = Classifier("efficientnet-b5", b5_random_checkpoint, progress=False)
    r = evaluate(clf, sample_dir, limit=2, batch_size=2, workers=1)
    assert (r.count, r.failed) == (2, 0)
    assert (r.preprocess.resize_size, r.preprocess.input_size, r.preprocess.interpolation) == (488, 456, "bicubic")
    assert r.weights == b5_random_checkpoint.name and r.reference is None  # effnet.source.weights_label
