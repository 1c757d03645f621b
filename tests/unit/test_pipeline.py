"""The one image pipeline: order, errors in place, batches of good crops, early close; the one normalize."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from effnet.errors import EffnetError
from effnet.pipeline import decode_crop, iter_batches
from effnet.preprocess import bgr_nchw, denormalize, normalize, normalize_tensor
from effnet.weights.records import Preprocess

P = Preprocess(input_size=8, resize_size=10)


def png(color: tuple[int, int, int], size: tuple[int, int] = (20, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_crop_is_a_writable_crop_at_the_record_size():
    crop = decode_crop(png((10, 20, 30)), P)
    assert crop.shape == (8, 8, 3) and crop.dtype == np.uint8 and crop.flags.writeable
    assert (crop == [10, 20, 30]).all()


def test_batches_keep_input_order_and_put_errors_in_place():
    items = [png((i, 0, 0)) for i in range(5)]
    items.insert(2, b"not an image")
    batches = list(iter_batches(items, P, batch_size=2, workers=3))
    flat = [d for b in batches for d in b.images]
    assert [d.item for d in flat] == items
    assert [d.ok for d in flat] == [True, True, False, True, True, True]
    assert "not an image" in flat[2].error
    # A batch closes at batch_size good crops, so the failure does not shrink a forward pass.
    assert [len(b.good) for b in batches] == [2, 2, 1]
    assert [int(c[0, 0, 0]) for b in batches for c in b.crops()] == [0, 1, 2, 3, 4]


def test_names_and_images_of_arbitrary_items():
    items = [("a", png((1, 1, 1))), ("b", b"")]
    (batch,) = iter_batches(items, P, batch_size=4, image_of=lambda t: t[1], name_of=lambda t: t[0])
    assert [d.name for d in batch.images] == ["a", "b"]
    assert batch.images[1].error and batch.crops().shape == (1, 8, 8, 3)


def test_a_missing_file_is_an_error_row_not_an_exception(tmp_path):
    (batch,) = iter_batches([tmp_path / "gone.jpg"], P)
    assert not batch.images[0].ok and str(tmp_path / "gone.jpg") in batch.images[0].name


def test_decoding_runs_ahead_but_bounded_and_stops_when_closed():
    started = []
    lock = threading.Lock()

    def image_of(i: int) -> bytes:
        with lock:
            started.append(i)
        return png((i % 256, 0, 0))

    gen = iter_batches(range(1000), P, batch_size=4, workers=2, image_of=image_of)
    first = next(gen)
    assert len(first.good) == 4
    # image_of runs when an item is submitted: at most 2 * batch_size + workers ahead of the consumer.
    assert len(started) <= 4 + 2 * 4 + 2
    gen.close()
    assert len(started) < 50


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"workers": 0}])
def test_bad_arguments_are_clear_errors(bad):
    with pytest.raises(EffnetError, match=">= 1"):
        next(iter_batches([png((0, 0, 0))], P, **bad))


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_one_normalize_in_numpy_and_torch_and_its_inverse(order):
    p = Preprocess(8, 8, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0), channel_order=order)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    x = normalize(pixels, p)
    # Written out independently: channel c of RGB is (v - mean[c]) / std[c]; BGR reverses the channels after.
    expected = (pixels.astype(np.float64) - [10, 20, 30]) / [2, 4, 8]
    expected = expected.transpose(0, 3, 1, 2)
    if order == "BGR":
        expected = expected[:, ::-1]
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-5)
    t = normalize_tensor(torch.from_numpy(pixels), p, channels_last=True)
    assert t.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(t.numpy(), x)
    np.testing.assert_allclose(denormalize(x, p), pixels.transpose(0, 3, 1, 2), atol=1e-4)
    np.testing.assert_array_equal(bgr_nchw(pixels), pixels[..., ::-1].transpose(0, 3, 1, 2))
