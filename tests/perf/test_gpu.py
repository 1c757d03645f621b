"""The CUDA path of the torch backend: its device-agnostic logic on the CPU, its CUDA parts under ``-m gpu``.

Every GPU path is checked against fp32 eager on the CPU by top-1 agreement on Lite0's real weights
over the 100 sample images (the issue's target: >= 99 %; bf16 keeps the CPU bf16 criterion: >= 98 %
with every flip a close call in fp32). ``@pytest.mark.gpu`` tests skip only when CUDA is absent.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from threading import current_thread

import numpy as np
import pytest
import torch

from effnet.backends import AUTO_RANKING, AUTO_RANKING_CUDA, auto_ranking, create_backend, resolve_auto
from effnet.errors import EffnetError
from effnet.optimize import HalfBodyModel, fold_batchnorm, to_channels_last
from effnet.preprocess import normalize_tensor
from tests.perf.perf_helpers import fp32_margin, run_batches, top1_agreement
from tests.testutils import EXAMPLES, run_cli

gpu = pytest.mark.gpu


def _split(crops: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    edges = np.cumsum([0, *sizes])
    assert edges[-1] == len(crops)
    return [crops[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]


# --------------------------------------------------------------------------------------------------
# On the CPU: the same code paths without CUDA
# --------------------------------------------------------------------------------------------------


def _prepared_classifier(sizes=(1, 4)):
    """Lite0 with the fixed-shape runner on the CPU, and a record of (batch, thread) of every model call."""
    from effnet.predict import Classifier

    clf = Classifier("efficientnet-lite0", backend="torch", progress=False, prepared_sizes=sizes)
    calls: list[tuple[int, threading.Thread]] = []
    clf.backend.model.register_forward_pre_hook(lambda m, args: calls.append((args[0].shape[0], current_thread())))
    return clf, calls


def _kserve_binary(client, x: np.ndarray) -> np.ndarray:
    from tests.serve.inprocess import INFER

    header = json.dumps(
        {"inputs": [{"name": "data", "datatype": "FP32", "shape": list(x.shape),
                     "parameters": {"binary_data_size": x.nbytes}}],
         "outputs": [{"name": "prob", "parameters": {"binary_data": True}}]}
    ).encode()  # fmt: skip
    r = client.post(
        INFER,
        content=header + x.astype("<f4").tobytes(),
        headers={"inference-header-content-length": str(len(header)), "content-type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    return np.frombuffer(r.content[n:], dtype="<f4").reshape(len(x), -1)


def test_every_entry_runs_only_the_prepared_shapes_on_the_owner_thread(sample_crops, fp32_probs):
    """The runner is the only way into the model: crops, logits and KServe v2 tensors of odd batch sizes
    (what compiled inside a request before, and what dynamo gives up on after 8 shapes) reach the model
    only at the prepared sizes, and only on the runner's owner thread; the padding never shows."""
    from effnet.preprocess import normalize_tensor
    from effnet.serve import ServedModel
    from tests.serve.inprocess import make_client

    clf, calls = _prepared_classifier((1, 4))
    owner = clf.backend._runner.owner.thread
    calls.clear()  # the warm-up at load
    np.testing.assert_allclose(clf.probabilities(sample_crops[:3]), fp32_probs[:3], atol=1e-5)
    logits = clf.backend.logits(sample_crops[3:8])
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), fp32_probs[3:8], atol=1e-5)
    x = normalize_tensor(torch.from_numpy(sample_crops[8:26]), clf.preprocess).numpy()
    with make_client(ServedModel(clf), max_body_mb=16) as client:
        for a, b in ((0, 3), (3, 8), (8, 10), (10, 17), (17, 18)):  # 3, 5, 2, 7, 1 rows
            np.testing.assert_allclose(_kserve_binary(client, x[a:b]), fp32_probs[8 + a : 8 + b], atol=1e-5)
    assert {n for n, _ in calls} == {1, 4}, sorted(n for n, _ in calls)
    assert {t for _, t in calls} == {owner}


def test_concurrent_callers_get_their_own_rows_from_the_owner_thread(sample_crops, fp32_probs):
    """What bench --streams 4 and a threaded server do: four threads at once, each checks its own answers."""
    clf, calls = _prepared_classifier((2, 4))
    owner = clf.backend._runner.owner.thread

    def caller(i: int) -> int:
        rows = slice(5 * i, 5 * i + 3 + i % 2)  # 3 or 4 rows: padded and exact chunks interleave
        for _ in range(3):
            np.testing.assert_allclose(clf.probabilities(sample_crops[rows]), fp32_probs[rows], atol=1e-5)
        return i

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(caller, range(4))) == [0, 1, 2, 3]
    assert {t for _, t in calls} == {owner} and {n for n, _ in calls} <= {2, 4}


def test_bf16_on_a_gpu_without_it_runs_fp16_and_says_so():
    from effnet.backends.torch_backend import cuda_precision

    assert cuda_precision("bf16", (7, 0)) == (
        "fp16",
        "bf16 needs a GPU of compute capability 8.0 (Ampere) or newer; this one is 7.0: running fp16",
    )
    assert cuda_precision("bf16", (8, 6)) == ("bf16", None) and cuda_precision("bf16", (9, 0)) == ("bf16", None)
    assert cuda_precision("fp16", (7, 0)) == ("fp16", None) and cuda_precision("fp32", (6, 1)) == ("fp32", None)


def test_fp16_body_with_fp32_head_agrees_with_fp32_on_lite0(lite0_source, sample_crops, fp32_probs):
    """The fp16 numerics of the CUDA path's model, run on the CPU (slow there, hence CUDA-only in the backend)."""
    reference = create_backend("torch", lite0_source)
    model = HalfBodyModel(to_channels_last(fold_batchnorm(reference.model)), torch.float16)
    assert model.model.stages[0][0].depthwise.conv.weight.dtype == torch.float16
    assert model.model.head.conv.weight.dtype == torch.float32
    with torch.inference_mode():
        probs = np.concatenate(
            [
                torch.softmax(model(normalize_tensor(torch.from_numpy(c), lite0_source.preprocess)).float(), 1).numpy()
                for c in _split(sample_crops, [50, 50])
            ]
        )
    agreement, flips = top1_agreement(probs, fp32_probs)
    assert agreement >= 0.99, f"fp16 top-1 agreement {agreement:.0%}, flipped {flips}"


def test_cuda_only_options_are_refused_on_the_cpu(lite0_source):
    with pytest.raises(EffnetError, match="fp16 runs on CUDA only"):
        create_backend("torch", lite0_source, precision="fp16")
    with pytest.raises(EffnetError, match="CUDA graphs need --device cuda"):
        create_backend("torch", lite0_source, cuda_graphs=True, batch_size=4)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_cpu_backends_refuse_cuda_and_name_the_way_out(lite0_source, backend):
    with pytest.raises(EffnetError, match=f"the {backend} backend runs on the CPU here.*--backend torch"):
        create_backend(backend, lite0_source, device="cuda:0")


def test_auto_ranking_per_device(monkeypatch):
    assert auto_ranking("cpu") is AUTO_RANKING
    assert resolve_auto("fp32", "cpu")[0] in [c.backend for c in AUTO_RANKING.paths["fp32"]]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert auto_ranking("auto") is AUTO_RANKING_CUDA and auto_ranking("cuda:0") is AUTO_RANKING_CUDA
    # No GPU has measured effnet: the CUDA choice is a documented rule, and says so in every entry.
    assert AUTO_RANKING_CUDA.measured_on.startswith("unmeasured: a rule")
    assert {c.measured for cs in AUTO_RANKING_CUDA.paths.values() for c in cs} == {"unmeasured"}
    for precision in ("fp32", "bf16", "fp16"):
        first, fallback = AUTO_RANKING_CUDA.paths[precision]
        assert first.backend == fallback.backend == "torch"
        assert first.options["cuda_graphs"] is True and "cuda_graphs" not in fallback.options
        assert first.options.get("precision", "fp32") == precision
        assert resolve_auto(precision, "auto") == ("torch", dict(first.options))
    with pytest.raises(EffnetError, match="precision must be one of fp32, bf16, fp16"):
        resolve_auto("int8", "cuda")


def test_cpu_backend_reports_no_setup_on_load(lite0_source):
    d = create_backend("torch", lite0_source, device="cpu").describe()
    assert d["device"] == "cpu" and d["compile_s"] is None and d["setup_s"] > 0
    assert d["cuda_graphs"] is False and d["prepared_batch_sizes"] is None


def test_cli_device_errors():
    r = run_cli("classify", "--model", "efficientnet-lite0", "--device", "gpu", str(EXAMPLES))
    assert r.returncode == 2 and "device must be one of auto, cpu, cuda, cuda:N, got 'gpu'" in r.stderr
    if not torch.cuda.is_available():
        r = run_cli("classify", "--model", "efficientnet-lite0", "--no-progress", "--device", "cuda", str(EXAMPLES))
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "CUDA requested (--device cuda) but torch.cuda.is_available() is False" in r.stderr
    r = run_cli("bench", "--backend", "onnxruntime", "--device", "cuda", "--model", "efficientnet-lite0")
    assert r.returncode == 2 and "the onnxruntime backend runs on the CPU" in r.stderr


def test_bench_json_reports_setup_and_compile_time():
    r = run_cli(
        "bench", "--backend", "torch", "--model", "efficientnet-lite0", "--random-weights",
        "--iterations", "1", "--warmup", "0", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)["config"]
    assert cfg["setup_s"] > 0 and cfg["compile_s"] is None and cfg["device"] == "cpu"


# --------------------------------------------------------------------------------------------------
# On CUDA (pytest -m gpu; benchmarks/gpu_check.sh)
# --------------------------------------------------------------------------------------------------

GPU_PATHS = {
    "eager fp32": {},
    "fast fp32": {"fast": True},
    "graphs fp32": {"cuda_graphs": True, "batch_size": 20},
    "graphs fp16": {"cuda_graphs": True, "batch_size": 20, "precision": "fp16"},
    "graphs bf16": {"cuda_graphs": True, "batch_size": 20, "precision": "bf16"},
    # one prepared size each: a compile per size
    "compiled fp16": {"compile": True, "prepared_sizes": (20,), "precision": "fp16"},
    "compiled+graphs bf16": {"compile": True, "cuda_graphs": True, "prepared_sizes": (20,), "precision": "bf16"},
}


@gpu
@pytest.mark.parametrize("path", list(GPU_PATHS))
def test_gpu_path_agrees_with_cpu_fp32(path, lite0_source, sample_crops, fp32_probs):
    options = GPU_PATHS[path]
    backend = create_backend("torch", lite0_source, device="cuda", **options)
    assert backend.device.type == "cuda"
    probs = run_batches(backend, sample_crops)  # batches of 20, with graphs exactly the prepared size
    agreement, flips = top1_agreement(probs, fp32_probs)
    print(f"{path}: top-1 agreement with CPU fp32 {agreement:.2%}, flips {flips}")
    if backend.precision == "bf16":
        assert agreement >= 0.98, f"{path}: {agreement:.0%}, flips {flips}"
        assert all(fp32_margin(fp32_probs, i) < 0.05 for i in flips)
    else:
        assert agreement >= 0.99, f"{path}: {agreement:.0%}, flips {flips}"
    if backend.precision == "fp32":
        assert np.abs(probs - fp32_probs).max() < 1e-2  # TF32 convolutions are allowed by PyTorch's default
    if options.get("cuda_graphs") or options.get("compile"):
        assert backend.compile_s is not None and backend.describe()["prepared_batch_sizes"]


@gpu
def test_auto_on_cuda_captures_graphs_for_the_callers_batch(lite0_source):
    backend = create_backend("auto", lite0_source, device="cuda", batch_hint=20)
    d = backend.describe()
    assert backend.name == "torch" and d["cuda_graphs"] is True and d["prepared_batch_sizes"] == [1, 2, 4, 8, 16, 20]
    assert backend.auto_choice["fallbacks"] == []


@gpu
def test_graphs_pad_partial_batches_and_split_large_ones(lite0_source, sample_crops):
    eager = create_backend("torch", lite0_source, device="cuda", fast=True)
    graphs = create_backend("torch", lite0_source, device="cuda", cuda_graphs=True, prepared_sizes=(8,))
    assert graphs.describe()["cuda_graphs"] is True
    for n in (1, 5, 8, 13, 21):  # padded, exact, split + padded
        x = sample_crops[:n]
        np.testing.assert_allclose(graphs(x), eager(x), atol=1e-4)


@gpu
def test_gpu_decode_is_close_to_pillow(lite0_source, sample_images, sample_crops):
    from effnet.gpu_decode import GpuDecoder

    decoder = GpuDecoder(lite0_source.preprocess, "cuda")
    crops = np.stack([decoder(p) for p in sample_images])
    assert crops.shape == sample_crops.shape
    diff = np.abs(crops.astype(np.int16) - sample_crops.astype(np.int16))
    print(f"gpu decode vs Pillow: mean |delta| {diff.mean():.3f}, max {diff.max()}, fallbacks {decoder.fallbacks}")
    assert diff.mean() < 2.0
    backend = create_backend("torch", lite0_source, device="cuda")
    agreement, flips = top1_agreement(run_batches(backend, crops), run_batches(backend, sample_crops))
    print(f"gpu decode: top-1 agreement with the Pillow path {agreement:.2%}, flips {flips}")
    assert agreement >= 0.95


@gpu
def test_cli_on_cuda():
    r = run_cli("classify", "--device", "cuda", "--model", "efficientnet-lite0", "--no-progress", str(EXAMPLES))
    assert r.returncode == 0, r.stderr
    r = run_cli(
        "bench", "--device", "cuda", "--model", "efficientnet-lite0", "--random-weights", "--batch-size", "8",
        "--cuda-graphs", "--iterations", "5", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)["config"]
    assert cfg["compile_s"] > 0 and cfg["device"].startswith("cuda")


def test_serve_batching_defaults_follow_the_device(capsys, monkeypatch):
    from effnet.cli import main
    from effnet.cli.serve import BATCHING_DEFAULTS

    assert BATCHING_DEFAULTS["cpu"] == {"max_batch": 8, "max_queue": 64}
    assert BATCHING_DEFAULTS["cuda"]["max_batch"] > BATCHING_DEFAULTS["cpu"]["max_batch"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["serve", "--model", "efficientnet-lite0", "--device", "cuda"]) == 1
    assert "CUDA requested (--device cuda)" in capsys.readouterr().err
