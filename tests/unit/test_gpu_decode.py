"""--decode gpu: the resize and crop run on any device, so they are checked against Pillow here, on the CPU.

nvJPEG itself (torchvision.io.decode_jpeg on CUDA) is checked in tests/perf/test_gpu.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from effnet.errors import EffnetError
from effnet.gpu_decode import GPU_DECODE_MAX_PIXELS, DecodeCounts, GpuDecoder, gpu_resize_crop, is_device_error
from effnet.preprocess import crop_offsets, load_image, resize_crop, resized_size
from effnet.weights.records import default_record


def test_resize_geometry_by_hand():
    p = default_record("efficientnet-b5").preprocess  # resize 488 (456 / 0.934), crop 456
    assert (p.resize_size, p.input_size) == (488, 456)
    assert resized_size(500, 375, p) == (650, 488)  # long side int(488 * 500 / 375) = 650
    assert resized_size(375, 500, p) == (488, 650)
    assert resized_size(488, 488, p) == (488, 488)
    assert crop_offsets(650, 488, 456) == (97, 16)  # round(194 / 2), round(32 / 2)


@pytest.mark.parametrize("work_dtype", [None, torch.float32])  # None: uint8 here (float16 on CUDA)
def test_gpu_resize_crop_on_the_cpu_is_close_to_pillow(sample_images, work_dtype):
    p = default_record("efficientnet-lite0").preprocess
    deltas = []
    for path in sample_images[:10]:
        image = load_image(path)
        exact = np.asarray(resize_crop(image, p)).astype(np.int16)
        chw = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        ours = gpu_resize_crop(chw, p, work_dtype)
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
    with pytest.raises(EffnetError, match="decode must be one of pillow, reduced, gpu"):
        Classifier("efficientnet-lite0", decode="nvjpeg")


@pytest.mark.parametrize(
    ("error", "device"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB"), True),
        (torch.AcceleratorError("an illegal memory access was encountered"), True),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), True),
        (RuntimeError("CUDA error: device-side assert triggered"), True),
        (RuntimeError("nvjpegDecode failed: 6"), True),  # NVJPEG_STATUS_EXECUTION_FAILED
        (RuntimeError("nvjpegDecode failed: 5"), True),  # NVJPEG_STATUS_ALLOCATOR_FAILURE
        (RuntimeError("nvjpegDecode failed: 3"), False),  # NVJPEG_STATUS_BAD_JPEG: the image's own
        (RuntimeError("nvjpegJpegStreamParse failed: 4"), False),  # JPEG_NOT_SUPPORTED
        (RuntimeError("Unsupported color conversion request"), False),
    ],
)
def test_device_errors_propagate_and_image_errors_fall_back(error, device):
    assert is_device_error(error) is device


def _jpeg(mode: str = "RGB", size=(64, 48), exif_orientation: int | None = None, fmt: str = "JPEG") -> bytes:
    image = Image.new(mode, size, color=(200, 100, 50) if mode == "RGB" else 128 if mode == "L" else (1, 2, 3, 4))
    buf = io.BytesIO()
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_which_images_nvjpeg_is_given_and_why_the_others_take_pillow():
    """The routing is host code: it runs here. (The decoder itself needs CUDA: tests/perf/test_gpu.py.)"""
    route = GpuDecoder._jpeg_bytes.__get__(object.__new__(GpuDecoder))  # no CUDA needed for the header checks
    assert route(_jpeg())[1] is None and route(_jpeg("L"))[1] is None
    assert route(_jpeg(fmt="PNG")) == (None, "not JPEG")
    assert route(_jpeg("CMYK")) == (None, "mode CMYK")
    assert route(_jpeg(exif_orientation=6)) == (None, "EXIF-rotated")
    assert route(_jpeg(exif_orientation=1))[1] is None
    assert route(b"\xff\xd8 not really") == (None, "unreadable header")
    side = int((GPU_DECODE_MAX_PIXELS + 1) ** 0.5) + 1  # bounded GPU memory: the header says it is too big
    big = Image.new("L", (side, side))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=1)
    assert route(buf.getvalue()) == (None, f"over {GPU_DECODE_MAX_PIXELS // 1_000_000} MP")


def test_decode_counts_of_one_run_and_their_summary():
    before = DecodeCounts(10, {"not JPEG": 1})
    after = DecodeCounts(25, {"not JPEG": 3, "EXIF-rotated": 1})
    run = after.minus(before)
    assert run == DecodeCounts(15, {"not JPEG": 2, "EXIF-rotated": 1}) and run.fallbacks == 3
    assert run.to_dict() == {
        "decoder": "gpu",
        "gpu_decoded": 15,
        "pillow_fallbacks": 3,
        "fallback_reasons": {"EXIF-rotated": 1, "not JPEG": 2},
    }
    assert run.summary() == (
        "--decode gpu: 15 of 18 images decoded by nvJPEG, 3 by Pillow (EXIF-rotated: 1, not JPEG: 2)"
    )


def test_crops_decoded_as_tensors_stay_tensors_to_the_backend(lite0_checkpoint, sample_images):
    """--decode gpu hands the backend device tensors (no host round trip): the pipeline stacks tensors with
    torch, and the backend takes them. On the CPU the same code path runs with CPU tensors."""
    from effnet.pipeline import iter_batches
    from effnet.predict import Classifier

    clf = Classifier("efficientnet-lite0", progress=False)
    p = clf.preprocess
    as_tensor = lambda image, pre: torch.from_numpy(np.array(resize_crop(load_image(image), pre)))  # noqa: E731
    batches = list(iter_batches(sample_images[:3], p, batch_size=2, workers=2, decode=as_tensor))
    stacked = [b.crops() for b in batches]
    assert all(isinstance(c, torch.Tensor) and c.dtype == torch.uint8 for c in stacked)
    assert [tuple(c.shape) for c in stacked] == [(2, 224, 224, 3), (1, 224, 224, 3)]
    exact = np.stack([np.asarray(resize_crop(load_image(i), p)) for i in sample_images[:3]])
    from_tensors = np.concatenate([clf.probabilities(c) for c in stacked])
    np.testing.assert_allclose(from_tensors, clf.probabilities(exact), atol=1e-6)
