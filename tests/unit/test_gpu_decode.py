"""--decode gpu: the resize and crop run on any device, so they are checked against Pillow here, on the CPU.

nvJPEG itself (torchvision.io.decode_jpeg on CUDA) is checked in tests/perf/test_gpu.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effnet.errors import EffnetError
from effnet.gpu_decode import gpu_resize_crop
from effnet.preprocess import crop_offsets, load_image, resize_crop, resized_size
from effnet.weights.records import default_record


def test_resize_geometry_by_hand():
    p = default_record("efficientnet-b5").preprocess  # resize 488 (456 / 0.934), crop 456
    assert (p.resize_size, p.input_size) == (488, 456)
    assert resized_size(500, 375, p) == (650, 488)  # long side int(488 * 500 / 375) = 650
    assert resized_size(375, 500, p) == (488, 650)
    assert resized_size(488, 488, p) == (488, 488)
    assert crop_offsets(650, 488, 456) == (97, 16)  # round(194 / 2), round(32 / 2)


def test_gpu_resize_crop_on_the_cpu_is_close_to_pillow(sample_images):
    p = default_record("efficientnet-lite0").preprocess
    deltas = []
    for path in sample_images[:10]:
        image = load_image(path)
        exact = np.asarray(resize_crop(image, p)).astype(np.int16)
        chw = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        ours = gpu_resize_crop(chw, p)
        assert ours.dtype == torch.uint8 and ours.shape == (p.input_size, p.input_size, 3)
        deltas.append(np.abs(ours.numpy().astype(np.int16) - exact))
    d = np.stack(deltas)
    # Same kernel and geometry; Pillow rounds to 8 bits between its two passes, interpolate does not.
    assert d.mean() < 1.0, f"mean |delta| {d.mean():.3f}"
    assert np.percentile(d, 99) <= 3


def test_gpu_decode_needs_cuda(lite0_checkpoint):
    from effnet.predict import Classifier

    with pytest.raises(EffnetError, match="--decode gpu needs a CUDA device, got cpu"):
        Classifier("efficientnet-lite0", decode="gpu", device="cpu")
    with pytest.raises(EffnetError, match="decode must be 'pillow' or 'gpu'"):
        Classifier("efficientnet-lite0", decode="nvjpeg")
