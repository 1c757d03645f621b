"""What one Ray worker computes, without Ray: decode errors named by path, rows <-> ImageResult, weights
shipped to a node and verified."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effnet.distributed.decode import decode_rows
from effnet.distributed.worker import RESULT_COLUMNS, materialize_weights, result_columns, result_from_row
from effnet.errors import EffnetError
from effnet.pipeline import decode_crop
from effnet.predict import ImageResult, Prediction
from effnet.weights.records import Preprocess

P = Preprocess(input_size=32, resize_size=36)


def png(size=(40, 50)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_rows_crops_like_the_pipeline_and_names_errors_by_path(tmp_path):
    good = png()
    out = decode_rows(
        ["a.png", "b.txt", "c.png", "d.png"], [good, b"not an image", b"", None], ["", "", "", "d: gone"], P
    )
    assert out["crop"].shape == (4, 32, 32, 3) and out["crop"].dtype == np.uint8
    np.testing.assert_array_equal(out["crop"][0], decode_crop(good, P))
    assert list(out["error"]) == [
        "",
        "b.txt: not an image Pillow can read",  # what `effnet classify` says for a file of that name
        "c.png: empty file (0 bytes)",
        "d: gone",  # a read error passes through
    ]
    # The same messages as the local pipeline gives for files with those contents.
    (tmp_path / "b.txt").write_bytes(b"not an image")
    with pytest.raises(EffnetError, match="not an image Pillow can read"):
        decode_crop(tmp_path / "b.txt", P)


def test_rows_round_trip_to_image_results():
    results = [
        ImageResult("x.jpg", [Prediction(3, "n1", "cat", 0.75), Prediction(1, "n2", "dog", 0.125)]),
        ImageResult("y.jpg", error="y.jpg: no such file"),
    ]
    columns = result_columns(results)
    assert tuple(columns) == RESULT_COLUMNS
    assert columns["class_index"] == [[3, 1], []] and columns["error"] == [None, "y.jpg: no such file"]
    rows = [{name: columns[name][i] for name in RESULT_COLUMNS} for i in range(2)]
    assert [result_from_row(r).to_dict() for r in rows] == [r.to_dict() for r in results]


def test_materialize_weights_verifies_and_caches_per_node(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "home"))
    data = b"weights" * 1000
    sha = hashlib.sha256(data).hexdigest()
    calls = []

    def fetch() -> bytes:
        calls.append(1)
        return data

    # The driver's path is not visible here: the bytes come from the object store, once.
    first = materialize_weights("w.pth", sha, len(data), str(tmp_path / "elsewhere" / "w.pth"), fetch)
    again = materialize_weights("w.pth", sha, len(data), None, fetch)
    assert first == again and first.read_bytes() == data and len(calls) == 1
    assert not list(first.parent.glob(".*.tmp"))
    # A shared path whose sha256 matches is used as is, without fetching.
    shared = tmp_path / "shared.pth"
    shared.write_bytes(data)
    assert materialize_weights("shared.pth", sha, len(data), str(shared), fetch) == shared and len(calls) == 1
    # A file of the same size but other bytes at the driver's path is not used: the node's verified copy is.
    impostor = tmp_path / "impostor.pth"
    impostor.write_bytes(b"X" * len(data))
    assert materialize_weights("w.pth", sha, len(data), str(impostor), fetch) == first and len(calls) == 1
    # ... and a node cache file that no longer matches is not trusted either: the bytes are fetched again.
    first.write_bytes(b"Y" * len(data))
    assert materialize_weights("w.pth", sha, len(data), str(impostor), fetch) == first and len(calls) == 2
    assert first.read_bytes() == data
    # Bytes that do not match the driver's checksum are refused, and nothing is left behind.
    with pytest.raises(EffnetError, match="arrived with sha256"):
        materialize_weights("bad.pth", "0" * 64, len(data), None, fetch)
    assert not (Path(tmp_path / "home") / "ray-weights" / ("0" * 64) / "bad.pth").exists()


def test_only_effnet_distributed_imports_ray():
    src = Path(__file__).resolve().parents[2] / "src" / "effnet"
    importers = [
        p.relative_to(src).as_posix()
        for p in src.rglob("*.py")
        if any(line.lstrip().startswith(("import ray", "from ray")) for line in p.read_text().splitlines())
    ]
    assert importers and all(name.startswith("distributed/") for name in importers), importers
    assert "distributed/__init__.py" not in importers  # `import effnet.distributed` works without Ray


def test_actors_run_openvino_in_its_throughput_configuration_and_cap_threads_at_their_cpus():
    from effnet.distributed.worker import node_backend

    assert node_backend("openvino", "fp32", None) == ("openvino", {"precision": "fp32", "mode": "throughput"})
    assert node_backend("openvino", None, 2.0) == ("openvino", {"mode": "throughput", "threads": 2})
    assert node_backend("onnxruntime", None, 1.5) == ("onnxruntime", {"threads": 1})  # no OpenVINO hint


def test_the_driver_passes_the_request_and_the_actor_resolves_auto(monkeypatch):
    """`auto` reaches the node as `auto`; the node's ranking decides (here a CPU node: a CPU backend)."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'effnet[ray]')")
    from effnet.backends import resolve_auto
    from effnet.distributed.data import PipelineOptions
    from effnet.distributed.worker import InferenceSpec, node_backend

    placed = PipelineOptions(backend="auto", device="auto").placed()
    assert (placed.backend, placed.device, placed.batch_size) == ("auto", "auto", 8)
    gpu = PipelineOptions(backend="auto", gpus_per_worker=1).placed()
    assert (gpu.backend, gpu.device, gpu.batch_size) == ("auto", "cuda", 64)
    from effnet.source import resolve_source

    source = dataclasses.replace(resolve_source("efficientnet-lite0", False), checkpoint=Path("w.pth"))
    spec = InferenceSpec(source, "0" * 64, 1, backend="auto", device="auto")
    assert spec.backend == "auto" and spec.device == "auto"
    # On this (CPU) node, the actor's own resolution is the CPU ranking's first choice.
    name, options = node_backend("auto", None, None, "auto")
    assert name == resolve_auto(None, "cpu")[0] and options.get("mode", "throughput") == "throughput"


def test_an_actor_streams_its_batch_through_openvino_with_the_numbers_of_one_call(lite0_checkpoint, sample_images):
    """The actor's call goes through the backend's stream (per-image requests, the local eval's path); the
    probabilities are those of one whole-batch call, bit for bit, in row order (torch: one call, no stream)."""
    from effnet.distributed.worker import STREAM_JOB_ROWS, streamed_probabilities
    from effnet.predict import Classifier

    for backend in ("openvino", "torch"):
        mode = {"mode": "throughput"} if backend == "openvino" else {}  # the actor's configuration (node_backend)
        clf = Classifier(
            "efficientnet-lite0", lite0_checkpoint, backend=backend, download=False, progress=False, **mode
        )
        crops = np.stack([clf.crop(p) for p in sample_images[: STREAM_JOB_ROWS * 2 + 3]])  # a short last job
        whole = clf.probabilities(crops)
        streamed = streamed_probabilities(clf, crops)
        assert streamed.dtype == np.float32 and streamed.shape == whole.shape
        np.testing.assert_array_equal(streamed, whole)
        assert streamed_probabilities(clf, crops[:0]).shape == (0, len(clf.labels))


def test_an_actor_builds_on_the_drivers_source_and_never_resolves_it_again(
    tmp_path, monkeypatch, lite0_checkpoint, sample_images
):
    """The actor swaps in its node's verified copy of the file and keeps everything else the driver resolved:
    a record name no resolution of the file could give survives, so the file was not identified again."""
    from effnet.distributed.worker import InferenceSpec
    from effnet.predict import Classifier
    from effnet.source import resolve_source

    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "node-home"))  # the node's cache, not the driver's
    data = lite0_checkpoint.read_bytes()
    resolved = resolve_source("efficientnet-lite0", str(lite0_checkpoint), progress=False)
    assert resolved.record is not None and resolved.record.name != "decided-on-the-driver"
    driver = dataclasses.replace(
        resolved,
        record=dataclasses.replace(resolved.record, name="decided-on-the-driver"),
        checkpoint=tmp_path / "driver-only" / "lite0.pth",  # a path this "node" does not have: bytes shipped
    )
    spec = InferenceSpec(driver, hashlib.sha256(data).hexdigest(), len(data), backend="torch", device="cpu")
    clf = spec.build(lambda: data)
    assert clf.source.record is not None and clf.source.record.name == "decided-on-the-driver"
    assert clf.source.checkpoint is not None and clf.source.checkpoint.parent.parent.name == "ray-weights"
    assert clf.source.checkpoint.read_bytes() == data
    # The same answers as the driver's own classifier of these weights.
    want = Classifier("efficientnet-lite0", str(lite0_checkpoint), progress=False).classify(sample_images[:2])
    got = clf.classify(sample_images[:2])
    assert [r.predictions[0].class_index for r in got] == [r.predictions[0].class_index for r in want]
    # A resolved source is used as is: flags that would resolve it again are refused, not silently dropped.
    with pytest.raises(EffnetError, match="pass neither"):
        Classifier(driver, "efficientnet-lite0.pypi")
