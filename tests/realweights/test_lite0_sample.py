"""Real weights on real images: the Lite0 package weights on ../shared/imagenet/sample.

Through `effnet classify` (the CLI, as a user runs it) and against geffnet's
`tf_efficientnet_lite0` loaded with the same weights and fed the same pixels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from effnet.labels import synset_index
from effnet.preprocess import load_image, normalize, resize_crop
from effnet.weights.convert import to_foreign
from effnet.weights.records import get_record
from tests.testutils import run_cli


@pytest.fixture(scope="module")
def cli_results(sample_dir, lite0_checkpoint):
    proc = run_cli(
        "classify",
        "--model",
        "efficientnet-lite0",
        str(sample_dir),
        "--json",
        "--top-k",
        "5",
        "--batch-size",
        "8",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return {row["path"]: row for row in rows}


def test_sample_accuracy(cli_results, sample_images):
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
    # Reference (shared/README.md): 90/100 top-1, 98/100 top-5 through geffnet; we accept +-1 image.
    assert top1 >= 88, top1
    assert top5 >= 97, top5


def test_same_top1_as_geffnet_with_the_same_weights(cli_results, sample_images, lite0_checkpoint):
    geffnet = pytest.importorskip("geffnet")
    import effnet

    ours = effnet.create_model("efficientnet-lite0", pretrained=True)
    ref = geffnet.tf_efficientnet_lite0()
    ref.load_state_dict(to_foreign(ours.state_dict(), ours.plan, "timm"))
    ref.eval()
    pre = get_record("efficientnet-lite0.pypi").preprocess
    batch = torch.from_numpy(
        np.stack([normalize(np.asarray(resize_crop(load_image(p), pre)), pre) for p in sample_images])
    )
    with torch.inference_mode():
        ref_top1 = ref(batch).argmax(1).tolist()
    ours_top1 = [cli_results[str(p)]["predictions"][0]["class_index"] for p in sample_images]
    assert ours_top1 == ref_top1
