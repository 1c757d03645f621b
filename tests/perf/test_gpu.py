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
from tests.serve.inprocess import kserve_binary
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
            np.testing.assert_allclose(kserve_binary(client, x[a:b])[1], fp32_probs[8 + a : 8 + b], atol=1e-5)
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


# The first GPU, and with more than one the last: captured under its own device while cuda:0 is current.
CUDA_DEVICES = ["cuda:0"] + (
    [f"cuda:{torch.cuda.device_count() - 1}"] if torch.cuda.is_available() and torch.cuda.device_count() > 1 else []
)


def _assert_close_to_cpu_fp32(probs: np.ndarray, fp32_probs: np.ndarray, precision: str, what: str) -> None:
    agreement, flips = top1_agreement(probs, fp32_probs)
    print(f"{what}: top-1 agreement with CPU fp32 {agreement:.2%}, flips {flips}")
    if precision == "bf16":
        assert agreement >= 0.98, f"{what}: {agreement:.0%}, flips {flips}"
        assert all(fp32_margin(fp32_probs, i) < 0.05 for i in flips)
    else:
        assert agreement >= 0.99, f"{what}: {agreement:.0%}, flips {flips}"
    if precision == "fp32":
        assert np.abs(probs - fp32_probs).max() < 1e-2  # TF32 convolutions are allowed by PyTorch's default


def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@gpu
@pytest.mark.parametrize("path", list(GPU_PATHS))
def test_gpu_path_agrees_with_cpu_fp32(path, lite0_source, sample_crops, fp32_probs):
    options = GPU_PATHS[path]
    backend = create_backend("torch", lite0_source, device="cuda", **options)
    assert backend.device.type == "cuda"
    compiled_at_load = _unique_graphs()
    probs = run_batches(backend, sample_crops)  # batches of 20, with graphs exactly the prepared size
    _assert_close_to_cpu_fp32(probs, fp32_probs, backend.precision, path)
    if options.get("cuda_graphs") or options.get("compile"):
        assert backend.compile_s is not None and backend.describe()["prepared_batch_sizes"]
    # Odd sizes through every entry (crops, KServe v2 tensors): padded to what was prepared, so nothing
    # compiles after load (a compile inside a request is tens of seconds: a 504).
    from effnet.preprocess import normalize_tensor

    odd = backend(sample_crops[:7])
    x = normalize_tensor(torch.from_numpy(sample_crops[7:10]), lite0_source.preprocess).numpy()
    tensor_probs = backend.infer_normalized(x)
    assert _unique_graphs() == compiled_at_load, "something compiled after load"
    _assert_close_to_cpu_fp32(
        np.concatenate([odd, tensor_probs]), fp32_probs[:10], backend.precision, f"{path}, odd batches"
    )


@gpu
@pytest.mark.parametrize("device", CUDA_DEVICES)
def test_graphs_capture_and_replay_on_their_own_device(device, lite0_source, sample_crops, fp32_probs):
    """cuda:N: captured under torch.cuda.device(N) on the runner's stream, whatever device is current; every
    size (padded, exact, split + padded) against CPU fp32, and the current device left alone."""
    torch.cuda.set_device(0)
    graphs = create_backend("torch", lite0_source, device=device, cuda_graphs=True, prepared_sizes=(8,))
    assert graphs.describe()["cuda_graphs"] is True and str(graphs.device) == device
    assert torch.cuda.current_device() == 0
    for n in (1, 5, 8, 13, 21):
        _assert_close_to_cpu_fp32(graphs(sample_crops[:n]), fp32_probs[:n], "fp32", f"{device}, {n} images")
    assert torch.cuda.current_device() == 0


@gpu
def test_cuda_runner_replays_for_every_entry_and_every_thread(lite0_source, sample_crops, fp32_probs):
    """After load nothing runs the model eagerly: crops, logits and v2 tensors of odd sizes, from four
    threads at once, are graph replays on the owner thread (the model's Python never runs again), and
    each caller gets its own rows."""
    from effnet.preprocess import normalize_tensor

    backend = create_backend("torch", lite0_source, device="cuda", cuda_graphs=True, prepared_sizes=(1, 4))
    eager_calls: list[int] = []
    backend.model.register_forward_pre_hook(lambda m, args: eager_calls.append(args[0].shape[0]))
    x = normalize_tensor(torch.from_numpy(sample_crops[:40]), lite0_source.preprocess).numpy()

    def caller(i: int) -> None:
        rows = slice(10 * i, 10 * i + 3 + i)  # 3, 4, 5, 6 rows
        for _ in range(5):
            _assert_close_to_cpu_fp32(backend(sample_crops[rows]), fp32_probs[rows], "fp32", f"caller {i}")
            _assert_close_to_cpu_fp32(backend.infer_normalized(x[rows]), fp32_probs[rows], "fp32", f"v2 {i}")
            logits = backend.logits(sample_crops[rows])
            _assert_close_to_cpu_fp32(torch.softmax(logits, 1).numpy(), fp32_probs[rows], "fp32", f"logits {i}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(caller, range(4)))
    assert eager_calls == []


@gpu
def test_gpu_decode_in_the_real_pipeline(lite0_source, sample_images, sample_crops, fp32_probs):
    """nvJPEG really ran (no fallback on valid JPEGs), from the pipeline's 4 decoding threads, crops on
    the GPU into CUDA graphs; predictions against CPU fp32 of the Pillow crops."""
    from effnet.gpu_decode import GpuDecoder
    from effnet.predict import Classifier

    decoder = GpuDecoder(lite0_source.preprocess, "cuda")
    crops = torch.stack([decoder(p) for p in sample_images])
    assert crops.is_cuda and tuple(crops.shape) == sample_crops.shape
    diff = np.abs(crops.cpu().numpy().astype(np.int16) - sample_crops.astype(np.int16))
    counts = decoder.counts()
    print(f"gpu decode vs Pillow: mean |delta| {diff.mean():.3f}, max {diff.max()}; {counts.summary()}")
    assert counts.gpu == len(sample_images) and counts.fallbacks == 0, counts
    assert diff.mean() < 2.0

    clf = Classifier("efficientnet-lite0", device="cuda", decode="gpu", cuda_graphs=True, batch_hint=16)
    results = list(clf.iter_classify(sample_images, top_k=1, batch_size=16, workers=4))
    assert all(r.ok for r in results)
    counts = clf.decode_counts()
    assert counts.gpu == len(sample_images) and counts.fallbacks == 0, counts
    top1 = np.array([r.predictions[0].class_index for r in results])
    agreement = float(np.mean(top1 == fp32_probs.argmax(1)))
    print(f"--decode gpu pipeline: top-1 agreement with CPU fp32 of the Pillow crops {agreement:.2%}")
    assert agreement >= 0.95


@gpu
def test_cli_on_cuda(tmp_path, sample_dir):
    r = run_cli("classify", "--device", "cuda", "--model", "efficientnet-lite0", "--no-progress", str(EXAMPLES))
    assert r.returncode == 0, r.stderr
    r = run_cli(
        "classify", "--device", "cuda", "--decode", "gpu", "--model", "efficientnet-lite0", "--no-progress",
        "--batch-size", "16", "--json", str(sample_dir),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "--decode gpu: 100 of 100 images decoded by nvJPEG, 0 by Pillow" in r.stderr
    report = tmp_path / "eval.json"
    r = run_cli(
        "eval", str(sample_dir), "--device", "cuda", "--decode", "gpu", "--model", "efficientnet-lite0",
        "--no-progress", "--batch-size", "16", "--json", str(report),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    decode = json.loads(report.read_text())["decode"]
    assert decode["decoder"] == "gpu" and decode["gpu_decoded"] == 100 and decode["pillow_fallbacks"] == 0
    r = run_cli(
        "bench", "--device", "cuda", "--model", "efficientnet-lite0", "--random-weights", "--batch-size", "8",
        "--backend", "torch", "--cuda-graphs", "--streams", "4", "--iterations", "40", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)["config"]
    assert cfg["compile_s"] > 0 and cfg["device"].startswith("cuda") and cfg["outputs_checked"] is True


def test_serve_batching_defaults_follow_the_device(capsys, monkeypatch):
    from effnet.cli import main
    from effnet.cli.serve import BATCHING_DEFAULTS

    assert BATCHING_DEFAULTS["cpu"] == {"max_batch": 8, "max_queue": 64}
    assert BATCHING_DEFAULTS["cuda"]["max_batch"] > BATCHING_DEFAULTS["cpu"]["max_batch"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["serve", "--model", "efficientnet-lite0", "--device", "cuda"]) == 1
    assert "CUDA requested (--device cuda)" in capsys.readouterr().err
