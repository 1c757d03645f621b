"""Issue 28: the export cache's keys see the code (a fingerprint of the export's source files, not the
constant version string), and int8 entries record which images calibrated them."""

from __future__ import annotations

import json

import effnet.export.cache_keys as keys
from effnet.export.cache import cache_key, key_digest
from effnet.export.code_version import EXPORT_CODE, code_fingerprint
from effnet.quantize import _say_if_replaced
from effnet.source import resolve_source


def test_the_key_changes_with_the_code_that_writes_the_artifact(lite0_checkpoint, monkeypatch):
    source = resolve_source("efficientnet-lite0", progress=False)
    before = cache_key("onnx", source, {"batch_size": None})
    assert before["versions"]["effnet_code"] == code_fingerprint() and "effnet" not in before["versions"]
    monkeypatch.setattr(keys, "code_fingerprint", lambda: "sha256:0000000000000000")  # the code changed
    assert key_digest(cache_key("onnx", source, {"batch_size": None})) != key_digest(before)


def test_the_fingerprint_covers_the_model_and_the_exporters(tmp_path):
    import effnet

    root = __import__("pathlib").Path(effnet.__file__).parent
    covered = {p for e in EXPORT_CODE for p in ((root / e).rglob("*.py") if (root / e).is_dir() else [root / e])}
    assert {
        root / "model.py",
        root / "export" / "onnx.py",
        root / "export" / "tflite.py",
        root / "quantize.py",
    } <= covered
    assert code_fingerprint().startswith("sha256:") and len(code_fingerprint()) == len("sha256:") + 16


def test_calibration_is_recorded_and_another_set_says_it_replaces(tmp_path, sample_images, capsys):
    first = keys.calibration_record(sample_images[:3])
    assert first["images"] == 3 and first == keys.calibration_record(list(reversed(sample_images[:3])))
    info = tmp_path / "quantize.json"
    info.write_text(json.dumps({"calibration_set": first}))
    _say_if_replaced(info, first)  # the same images: nothing to say
    assert capsys.readouterr().err == ""
    _say_if_replaced(info, keys.calibration_record(sample_images[3:8]))
    assert "replacing the INT8 model" in capsys.readouterr().err
