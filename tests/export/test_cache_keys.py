"""Issue 28: the export cache's keys see the code (a fingerprint of the export's source files, not the
constant version string), and int8 entries record which images calibrated them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import effnet.export.cache_keys as keys
from effnet.export.cache import cache_key, key_digest
from effnet.export.code_version import code_files, code_fingerprint
from effnet.quantize import _say_if_replaced
from effnet.source import resolve_source


def test_the_key_changes_with_the_code_that_writes_the_artifact(lite0_checkpoint, monkeypatch):
    source = resolve_source("efficientnet-lite0", progress=False)
    before = cache_key("onnx", source, {"batch_size": None})
    assert before["versions"]["effnet_code"] == code_fingerprint() and "effnet" not in before["versions"]
    monkeypatch.setattr(keys, "code_fingerprint", lambda: "sha256:0000000000000000")  # the code changed
    assert key_digest(cache_key("onnx", source, {"batch_size": None})) != key_digest(before)


def test_the_fingerprint_covers_what_the_exporters_import(tmp_path):
    """The list is derived from the exporters' effnet imports (ast, transitively), so a module they use is in
    it even when no one listed it: BN folding (optimize.py), the artifact description, calibration feeding."""
    import effnet

    files = set(code_files())
    assert {"export/onnx.py", "export/tflite.py", "quantize.py", "optimize.py", "artifact.py", "pipeline.py"} <= files
    root = Path(effnet.__file__).parent
    split = {"layers.py", "checkpointing.py"} & {p.name for p in root.glob("*.py")}  # model.py's split, on main
    assert split <= files
    assert code_fingerprint().startswith("sha256:") and len(code_fingerprint()) == len("sha256:") + 16


def test_the_fingerprint_changes_with_an_imported_module_and_survives_a_missing_root(tmp_path):
    import effnet

    copy = tmp_path / "effnet"
    shutil.copytree(Path(effnet.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_fingerprint(copy)
    assert before == code_fingerprint()  # the same bytes give the same fingerprint wherever they are
    (copy / "optimize.py").write_text((copy / "optimize.py").read_text() + "\n# a change to BN folding\n")
    code_fingerprint.cache_clear(), code_files.cache_clear()  # read once per process; here the files change
    after = code_fingerprint(copy)
    assert after != before
    (copy / "source.py").rename(copy / "sources_renamed.py")  # a listed root gone: skipped, not a crash
    (copy / "export" / "_common.py").write_text(
        (copy / "export" / "_common.py").read_text().replace("from ..source", "from ..sources_renamed")
    )
    code_fingerprint.cache_clear(), code_files.cache_clear()
    assert code_fingerprint(copy) not in (before, after)
    assert "sources_renamed.py" in code_files(copy) and "source.py" not in code_files(copy)


def test_calibration_is_recorded_and_another_set_says_it_replaces(tmp_path, sample_images, capsys):
    first = keys.calibration_record(sample_images[:3])
    assert first["images"] == 3 and first == keys.calibration_record(list(reversed(sample_images[:3])))
    info = tmp_path / "quantize.json"
    info.write_text(json.dumps({"calibration_set": first}))
    _say_if_replaced(info, first)  # the same images: nothing to say
    assert capsys.readouterr().err == ""
    _say_if_replaced(info, keys.calibration_record(sample_images[3:8]))
    assert "replacing the INT8 model" in capsys.readouterr().err
