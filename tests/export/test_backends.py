"""One predictor over every backend: same answers, cached exports, clear errors."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
import torch

import effnet
import effnet.export.cache
from effnet.backends import ModelSource, create_backend
from effnet.errors import EffnetError
from effnet.labels import synset_index
from effnet.predict import Classifier
from effnet.preprocess import load_image, resize_crop
from tests.testutils import EXAMPLES

BACKENDS = ("torch", "onnxruntime", "openvino")


@pytest.mark.slow
def test_lite0_same_top1_on_every_sample_image_for_all_backends(lite0_source, sample_images, export_cache):
    crops = np.stack([np.asarray(resize_crop(load_image(p), lite0_source.preprocess)) for p in sample_images])
    probs = {}
    for name in BACKENDS:
        options = {} if name == "torch" else {"cache_dir": export_cache}
        backend = create_backend(name, lite0_source, **options)
        probs[name] = np.concatenate([backend(crops[i : i + 20]) for i in range(0, len(crops), 20)])
    top1 = {name: p.argmax(1) for name, p in probs.items()}
    assert (top1["onnxruntime"] == top1["torch"]).all()
    assert (top1["openvino"] == top1["torch"]).all()
    for name in ("onnxruntime", "openvino"):
        assert np.abs(probs[name] - probs["torch"]).max() < 1e-5, name
    labels = np.array([synset_index()[p.name[:9]] for p in sample_images])
    assert (top1["torch"] == labels).sum() >= 88  # the real weights really are running (reference: 89-90)


def test_classifier_takes_the_backend_and_its_options(lite0_source, sample_images, export_cache):
    clf = Classifier("efficientnet-lite0", backend="openvino", cache_dir=export_cache, threads=1)
    (result,) = clf.classify(sample_images[0], top_k=3)
    assert result.ok and result.predictions[0].synset == sample_images[0].name[:9]
    assert clf.backend.name == "openvino" and clf.backend.precision == "fp32"


class _Recording:
    """An infer request that records the batch sizes it is started on (and does the work)."""

    def __init__(self, request, log: list) -> None:
        self.request, self.log = request, log

    def start_async(self, inputs):
        self.log.append(len(inputs[0]))
        self.request.start_async(inputs)

    def infer(self, inputs):
        self.log.append(len(inputs[0]))
        self.request.infer(inputs)

    def __getattr__(self, name):
        return getattr(self.request, name)


def test_openvino_streams_split_one_call_over_its_requests_and_give_the_one_stream_answer(
    lite0_source, sample_images, export_cache
):
    crops = np.stack([np.asarray(resize_crop(load_image(p), lite0_source.preprocess)) for p in sample_images[:5]])
    one = create_backend("openvino", lite0_source, cache_dir=export_cache, streams=1)
    two = create_backend("openvino", lite0_source, cache_dir=export_cache, streams=2)
    assert (one.streams, two.streams) == (1, 2)
    log: list[int] = []
    requests = [two._requests.get(), two._requests.get()]
    for request in requests:
        two._requests.put(_Recording(request, log))
    expected = one(crops)
    got = two(crops)
    assert sorted(log) == [2, 3]  # 5 rows split over the two requests, started together
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    log.clear()
    np.testing.assert_allclose(two(crops[:1]), expected[:1], rtol=1e-5, atol=1e-7)
    assert log == [1]  # one row: one request


class _Rebuilt(Exception):
    pass


def test_exports_are_cached_and_reused(lite0_source, export_cache, monkeypatch):
    first = create_backend("onnxruntime", lite0_source, cache_dir=export_cache)
    entry = first.model_path.parent
    assert entry.parent == export_cache and (entry / "export.json").is_file()
    assert not [p for p in export_cache.iterdir() if p.name.startswith(".")]  # no half-built entries

    def no_export(*args, **kwargs):
        raise _Rebuilt("exported again")

    monkeypatch.setattr(effnet.export.cache, "_build", no_export)
    second = create_backend("onnxruntime", lite0_source, cache_dir=export_cache)
    assert second.model_path == first.model_path
    # Other options are another artifact: this one must be built.
    with pytest.raises(_Rebuilt):
        create_backend("openvino", lite0_source, cache_dir=export_cache, fp16_weights=True)


def test_a_touched_checkpoint_reuses_its_export_a_changed_one_is_exported_again(tmp_path, lite0_source, export_cache):
    """The cache is keyed by content (issue 23): a new mtime alone is the same weights, new bytes are not."""
    ckpt = tmp_path / "lite0.pth"
    shutil.copy(lite0_source.checkpoint, ckpt)
    source = ModelSource("efficientnet-lite0", None, ckpt, lite0_source.preprocess)
    first = create_backend("onnxruntime", source, cache_dir=export_cache).model_path
    st = ckpt.stat()  # re-saved, same bytes: a new mtime
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert create_backend("onnxruntime", source, cache_dir=export_cache).model_path == first
    state = torch.load(ckpt, weights_only=True)
    state["_fc.bias"] = state["_fc.bias"] + 1.0  # other weights under the same name
    torch.save(state, ckpt)
    second = create_backend("onnxruntime", source, cache_dir=export_cache).model_path
    assert first != second and first.is_file() and second.is_file()


def test_random_init_source_is_exported_to_a_temporary_place(lite0_source, tmp_path):
    cache = tmp_path / "cache"
    source = ModelSource("efficientnet-lite0", None, None, lite0_source.preprocess)
    backend = create_backend("onnxruntime", source, cache_dir=cache)
    assert not backend.model_path.exists()  # deleted once the session was loaded
    assert not cache.exists()
    pixels = np.zeros((1, 224, 224, 3), dtype=np.uint8)
    assert backend(pixels).shape == (1, 1000)


@pytest.mark.parametrize("backend", ["b5_ort", "b5_ov"])
def test_wrong_input_shape_to_a_static_model_is_a_clear_error(request, backend):
    runner = request.getfixturevalue(backend)
    with pytest.raises(
        EffnetError, match=r"expected a batch of RGB crops of shape \[N, 456, 456, 3\].*got \[1, 380, 380, 3\]"
    ):
        runner(np.zeros((1, 380, 380, 3), dtype=np.uint8))
    with pytest.raises(EffnetError, match=r"got \[456, 456, 3\]"):
        runner(np.zeros((456, 456, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("backend", "package", "extra"),
    [
        ("onnxruntime", "onnxruntime", "onnx"),
        ("onnxruntime", "onnx", "onnx"),
        ("openvino", "openvino", "openvino"),
    ],
)
def test_missing_backend_package_names_the_extra(lite0_source, monkeypatch, tmp_path, backend, package, extra):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now raises ImportError
    with pytest.raises(EffnetError, match=rf"needs the Python package '{package}'.*pip install 'effnet\[{extra}\]'"):
        create_backend(backend, lite0_source, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_every_backend_takes_normalized_tensors(lite0_source, sample_images, export_cache):
    """`infer_normalized` (the KServe v2 tensor path) gives each backend the PyTorch model's input convention."""
    from effnet.preprocess import normalize

    p = lite0_source.preprocess
    crops = np.stack([np.asarray(resize_crop(load_image(f), p)) for f in sample_images[:4]])
    x = np.stack([normalize(c, p) for c in crops])
    reference = create_backend("torch", lite0_source)(crops)
    for name in BACKENDS:
        options = {} if name == "torch" else {"cache_dir": export_cache}
        got = create_backend(name, lite0_source, **options).infer_normalized(x)
        assert np.abs(got - reference).max() < 1e-5, name


def test_auto_picks_the_fastest_installed_backend(lite0_source, export_cache, monkeypatch):
    import importlib.util

    from effnet.backends import resolve_auto

    backend = create_backend("auto", lite0_source, cache_dir=export_cache)
    assert (backend.name, backend.precision) == ("openvino", "fp32")  # openvino is installed by the setup
    assert resolve_auto("bf16") == ("openvino", {"precision": "bf16"})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    assert resolve_auto("fp32") == ("onnxruntime", {})  # falls back to onnxruntime
    with pytest.raises(EffnetError, match="effnet\\[openvino\\]"):
        resolve_auto("int8")
    with pytest.raises(EffnetError, match="precision must be one of"):
        resolve_auto("int3")


def test_auto_falls_back_when_its_choice_does_not_load(lite0_source, export_cache, capfd):
    """A backend that is installed but fails to build (here: made to) is skipped with a one-line notice,
    and the options meant for it (cache_dir) do not break the torch fallback."""
    from effnet.backends import _FACTORIES, register

    def broken():
        def factory(source, **options):
            raise EffnetError("simulated: runtime library missing")

        return factory

    saved = dict(_FACTORIES)
    try:
        register("openvino", broken)
        register("onnxruntime", broken)
        clf = effnet.Classifier("efficientnet-lite0", backend="auto", cache_dir=export_cache)
    finally:
        _FACTORIES.clear()
        _FACTORIES.update(saved)
    assert clf.backend.name == "torch"
    assert clf.backend.auto_choice["fallbacks"] == [
        "openvino: simulated: runtime library missing",
        "onnxruntime: simulated: runtime library missing",
    ]
    err = capfd.readouterr().err
    assert "backend auto: openvino did not load (simulated: runtime library missing)" in err
    assert clf.classify([EXAMPLES / "chelsea.png"])[0].predictions[0].class_index in range(281, 286)


def test_an_option_a_named_backend_does_not_take_is_a_clear_error(lite0_source):
    with pytest.raises(EffnetError, match="the torch backend has no option streams"):
        create_backend("torch", lite0_source, streams=2)


def test_openvino_infer_stream_keeps_input_order_and_matches_one_call_at_a_time(
    lite0_source, sample_images, export_cache
):
    """Bulk jobs run OpenVINO's THROUGHPUT configuration with an async queue over the batches: every row
    comes back under its own batch, in input order, and equals what one synchronous call gives."""
    from effnet.backends import infer_stream

    crops = np.stack([np.asarray(resize_crop(load_image(p), lite0_source.preprocess)) for p in sample_images[:7]])
    bulk = create_backend("openvino", lite0_source, cache_dir=export_cache, workload="throughput")
    assert bulk.mode == "THROUGHPUT" and bulk.optimal_requests >= 1
    one = create_backend("openvino", lite0_source, cache_dir=export_cache)
    assert one.mode == "LATENCY"
    reference = one(crops)
    # Batches of 3, an empty one (every image of a batch failed to decode), then 4: tags come back in order.
    jobs = [("a", crops[:3]), ("empty", crops[:0]), ("b", crops[3:])]
    out = list(infer_stream(bulk, jobs))
    assert [tag for tag, _ in out] == ["a", "empty", "b"]
    assert out[1][1].shape[0] == 0
    got = np.concatenate([out[0][1], out[2][1]])
    assert got.shape == reference.shape
    assert np.abs(got - reference).max() < 1e-5
    # Closing the stream early leaves no request running and the backend usable.
    stream = infer_stream(bulk, iter(jobs))
    next(stream)
    stream.close()
    assert np.abs(bulk(crops[:2]) - reference[:2]).max() < 1e-5


def test_workload_options_select_the_throughput_configuration_under_explicit_options():
    from effnet.backends import workload_options

    assert workload_options("openvino", "throughput") == {"mode": "throughput"}
    assert workload_options("openvino", "throughput", {"mode": "latency"}) == {"mode": "latency"}
    assert workload_options("openvino", "latency", {"threads": 2}) == {"threads": 2}
    assert workload_options("torch", "throughput", {"threads": 2}) == {"threads": 2}
    with pytest.raises(EffnetError, match="workload must be one of"):
        workload_options("openvino", "bulk")


@pytest.mark.parametrize("max_batch,mode", [(1, "LATENCY"), (8, "THROUGHPUT")])
def test_serve_compiles_openvino_for_its_batching(lite0_checkpoint, max_batch, mode):
    """A server that batches runs OpenVINO's THROUGHPUT streams; --max-batch 1 stays on LATENCY."""
    pytest.importorskip("starlette")
    from effnet.serve.app import ServeConfig
    from effnet.serve.launch import ServerOptions, load_model

    options = ServerOptions(model="efficientnet-lite0", backend="openvino", config=ServeConfig(max_batch=max_batch))
    assert load_model(options).classifier.backend.mode == mode
