"""What the driver makes of a Ray eval's rows (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'effnet[ray]')")


def test_a_failure_names_the_image_as_the_dataset_gave_it_not_the_absolute_path_an_actor_read():
    from effnet.distributed.evaluate import as_given
    from effnet.evaluate import Sample

    sample = Sample(Path("val/n01440764/bad.JPEG"), 0)
    absolute = "/home/u/val/n01440764/bad.JPEG"
    error = f"{absolute}: cannot identify image file"
    assert as_given(error, absolute, sample) == "val/n01440764/bad.JPEG: cannot identify image file"
    assert as_given("no such file", absolute, sample) == "no such file"


def test_an_eval_row_carries_the_images_terms_and_no_probability_vector():
    from types import SimpleNamespace

    import numpy as np
    import pyarrow as pa

    from effnet.distributed.data import EVAL_COLUMNS, InferenceActor

    classes = 1000
    rng = np.random.default_rng(7)
    probs = rng.random((3, classes)).astype(np.float32)
    probs[0, 5] = probs[0, 9] = 2.0  # the truth (9) ties class 5 for first: 5 ranks ahead
    probs /= probs.sum(axis=1, keepdims=True)
    labels = np.array([9, 0, 123, 4])  # row 1 failed to decode: its label is not used
    ok = np.array([True, False, True, True])
    paths = np.array([f"/data/{i}.JPEG" for i in range(4)], dtype=object)
    errors = np.array(["", "/data/1.JPEG: cannot identify image file", "", ""], dtype=object)
    actor = SimpleNamespace(
        classifier=SimpleNamespace(labels=[None] * classes),
        built={"backend": "openvino", "precision": "fp32", "device": "CPU"},
        node="10.0.0.1",
    )
    rows = InferenceActor._eval_rows(actor, paths, errors, ok, probs, labels, 0.5, 0.25)
    assert tuple(rows) == EVAL_COLUMNS
    # nothing per class: every column is one value a row, but the top-5 indices
    assert {name: col.shape for name, col in rows.items() if col.shape != (4,)} == {"top": (4, 5)}
    table = pa.Table.from_pydict({k: (list(v) if v.ndim > 1 else v) for k, v in rows.items()})
    assert table.nbytes / 4 < 400  # a float32 vector alone would be 4,000 bytes a row
    for row, i in zip(probs.tolist(), (0, 2, 3), strict=True):  # expected: a plain loop over the classes
        order = sorted(range(classes), key=lambda j: (-row[j], j))
        y = int(labels[i])
        assert rows["top"][i].tolist() == order[:5] and rows["rank"][i] == order.index(y)
        assert rows["confidence"][i] == max(row) and rows["p_true"][i] == row[y]
        assert rows["sum_sq"][i] == pytest.approx(sum(p * p for p in row), rel=1e-9)
    assert rows["top"][0].tolist()[:2] == [5, 9] and rows["rank"][0] == 1
    assert rows["top"][1].tolist() == [0] * 5 and rows["p_true"][1] == 0 and rows["error"][1].endswith("image file")
    assert rows["infer_seconds"].tolist() == [0.5, 0, 0, 0] and rows["node"].tolist() == ["10.0.0.1", "", "", ""]


def test_decode_passes_each_inputs_label_on_to_the_actor_and_needs_none():
    import numpy as np

    from effnet.distributed.decode import decode_batch
    from effnet.weights.records import Preprocess

    batch = {
        "path": np.array(["/a.jpg", "/b.jpg"], dtype=object),
        "bytes": np.array([None, b""], dtype=object),
        "error": np.array(["/a.jpg: no such file", ""], dtype=object),
    }
    plain = decode_batch(batch, Preprocess(8, 9))
    assert "label" not in plain and plain["error"][1] == "/b.jpg: empty file (0 bytes)"
    labelled = decode_batch({**batch, "label": np.array([3, 998])}, Preprocess(8, 9))
    assert labelled["label"].tolist() == [3, 998] and labelled["crop"].shape == (2, 8, 8, 3)
