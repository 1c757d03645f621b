"""Ray's read and decode workers import no model and no backend (docs/distributed.md, "Where single-node Ray
loses time", cause 2).

A Ray worker imports the module of each function it unpickles, and with it ``effnet/__init__.py`` and that
module's own imports: torch alone was 2.3-2.9 s of CPU per process on a 2-vCPU node, in processes that only
read files and decode JPEGs. The functions here are the ones the pipeline hands to Ray Data as it builds its
read and decode stages (taken from the building code, not named by the test), pickled as Ray pickles them
(cloudpickle: a module's function by reference), then unpickled and run in a fresh interpreter.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from PIL import Image

from effnet.weights.records import Preprocess

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'effnet[ray]')")

# The model and the backends' packages, and the heavy libraries only explanations and exports use.
HEAVY = ("torch", "torchvision", "onnxruntime", "openvino", "nncf", "captum", "matplotlib", "tensorflow", "keras")

WORKER = """
import json, pickle, sys
decode, read_local, read_listed, probe, folder = pickle.loads(sys.stdin.buffer.read())  # probe: unpickled only
blocks = list(read_local())  # a read task of the driver's files
listed = read_listed({"text": [folder + "/b.png"]})  # a read task of listed (shared) paths
rows = blocks[0].to_pydict()
crops = decode({"path": rows["path"] + list(listed["path"]), "bytes": rows["bytes"] + list(listed["bytes"]),
                "error": rows["error"] + list(listed["error"])})
effnet = sorted(m for m in sys.modules if m.startswith("effnet."))
heavy = sorted(m for m in json.loads(sys.argv[1]) if m in sys.modules)
print(json.dumps({"errors": list(crops["error"]), "shape": list(crops["crop"].shape), "heavy": heavy,
                  "effnet": effnet}))
"""


class _Stage:
    """Stands in for a ``ray.data.Dataset`` while the pipeline is built: records what each stage runs."""

    def __init__(self) -> None:
        self.functions: list[object] = []

    def map_batches(self, fn: object, **kwargs: object) -> _Stage:
        self.functions.append(fn)
        return self

    def repartition(self, **kwargs: object) -> _Stage:
        return self


def test_read_and_decode_tasks_run_in_a_process_without_torch_or_a_backend(tmp_path):
    import ray.cloudpickle as cloudpickle

    from effnet.distributed.data import PipelineOptions, ShippedWeights, build_pipeline
    from effnet.distributed.inputs import _DriverFiles, _read_lines
    from effnet.distributed.outputs import _probe  # classify --output's check, run before reads on the same workers
    from effnet.distributed.placement import PoolSize

    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 50), (10, 200, 30)).save(tmp_path / name)
    preprocess = Preprocess(input_size=32, resize_size=36)
    stages = _Stage()
    shipped = ShippedWeights(spec=None, ref=None, source=SimpleNamespace(preprocess=preprocess))
    build_pipeline(stages, shipped, PipelineOptions(), PoolSize(1, 1, 1))
    decode = stages.functions[0]  # the second is the inference actor's class, which needs its backend
    (read_local,) = _DriverFiles([(str(tmp_path / "a.png"), str(tmp_path / "a.png"), 1)]).get_read_tasks(1)
    listed = _Stage()
    _read_lines(listed)
    (read_listed,) = listed.functions
    blob = cloudpickle.dumps((decode, read_local, read_listed, _probe, str(tmp_path)))

    out = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(HEAVY)], input=blob, capture_output=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    seen = json.loads(out.stdout)
    assert seen["errors"] == ["", ""] and seen["shape"] == [2, 32, 32, 3]  # both files read and decoded
    assert "effnet.distributed.inputs" in seen["effnet"] and "effnet.pipeline" in seen["effnet"]
    assert seen["heavy"] == [], f"a read or decode worker imported {seen['heavy']}; effnet modules: {seen['effnet']}"
