"""The Python API: Classifier over paths and PIL images, and record identification for files."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import effnet
from effnet.source import identify_record, resolve_source
from tests.testutils import EXAMPLES


def test_classifier_paths_and_pil_images(lite0_checkpoint):
    clf = effnet.Classifier("efficientnet-lite0")
    assert clf.record.name == "efficientnet-lite0.pypi" and clf.preprocess.input_size == 224
    by_path = clf.classify([EXAMPLES / "chelsea.png"], top_k=2)[0]
    by_pil = clf.classify(Image.open(EXAMPLES / "chelsea.png"), top_k=2)[0]
    assert by_path.ok and [p.class_index for p in by_path.predictions] == [p.class_index for p in by_pil.predictions]
    assert by_path.predictions[0].probability == pytest.approx(by_pil.predictions[0].probability, abs=1e-6)


def test_batching_does_not_change_answers(lite0_checkpoint, sample_images):
    clf = effnet.Classifier("efficientnet-lite0")
    one = clf.classify(sample_images[:6], batch_size=1)
    many = clf.classify(sample_images[:6], batch_size=4)
    for a, b in zip(one, many, strict=True):
        assert [p.class_index for p in a.predictions] == [p.class_index for p in b.predictions]
        assert a.predictions[0].probability == pytest.approx(b.predictions[0].probability, abs=1e-5)


def test_weights_file_matching_a_record_uses_that_records_preprocessing(lite0_checkpoint):
    assert identify_record(lite0_checkpoint, "efficientnet-lite0").name == "efficientnet-lite0.pypi"
    src = resolve_source("efficientnet-lite0", str(lite0_checkpoint))
    assert src.record is not None and src.preprocess.mean == (127.0, 127.0, 127.0)


def test_unknown_file_gets_the_models_default_preprocessing(b5_random_checkpoint):
    src = resolve_source("efficientnet-b5", b5_random_checkpoint)
    # Issue 28: a file made elsewhere goes through the one foreign-file rule, which records what it assumed
    # (here: effnet's own keys, so the model's defaults) instead of leaving the record empty.
    assert src.record is not None and "foreign-file rule" in src.record.notes and src.record.sha256 == ""
    assert src.record.model == "efficientnet-b5" and src.preprocess.resize_size == 488


def test_create_model_with_record_name(lite0_checkpoint):
    m = effnet.create_model("efficientnet-lite0", pretrained="efficientnet-lite0.pypi")
    assert isinstance(m, torch.nn.Module) and not m.training
    with pytest.raises(effnet.UnknownNameError, match="are for efficientnet-b5"):
        effnet.create_model("efficientnet-lite0", pretrained="tf_efficientnet_b5.aa_in1k")
