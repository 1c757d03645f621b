"""Image decoding and the record-driven eval pipeline, including every kind of bad image."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from effnet.errors import ImageError
from effnet.preprocess import find_images, load_image, normalize, preprocess, resize_crop
from effnet.weights.records import Preprocess, get_record

B5 = get_record("tf_efficientnet_b5.aa_in1k").preprocess


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_b5_record_is_the_card_pipeline():
    assert (B5.resize_size, B5.input_size, B5.interpolation) == (488, 456, "bicubic")
    assert B5.mean == (123.675, 116.28, 103.53) and B5.std == (58.395, 57.12, 57.375)


@pytest.mark.parametrize(
    "size,expected_resized",
    [((500, 375), (650, 488)), ((375, 500), (488, 650)), ((456, 456), (488, 488)), ((1000, 300), (1626, 488))],
)
def test_resize_shorter_side_then_center_crop(size, expected_resized):
    # a gradient so that the crop position is visible in the output
    arr = np.tile(np.arange(size[0], dtype=np.uint8), (size[1], 1))
    img = Image.fromarray(np.stack([arr] * 3, -1))
    out = resize_crop(img, B5)
    assert out.size == (456, 456)
    resized = img.resize(expected_resized, Image.Resampling.BICUBIC)
    left = int(round((expected_resized[0] - 456) / 2))
    top = int(round((expected_resized[1] - 456) / 2))
    assert np.array_equal(np.asarray(out), np.asarray(resized.crop((left, top, left + 456, top + 456))))


def test_normalize_values_and_layout():
    p = Preprocess(2, 2, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0))
    px = np.array([[[10, 20, 30], [12, 24, 35]], [[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    x = normalize(px, p)
    assert x.shape == (3, 2, 2) and x.dtype == np.float32
    assert x[:, 0, 0].tolist() == [0, 0, 0] and x[:, 0, 1].tolist() == [1, 1, 1]
    bgr = normalize(px, Preprocess(2, 2, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0), channel_order="BGR"))
    assert np.array_equal(bgr, x[::-1])


def test_zero_byte_file(tmp_path):
    f = tmp_path / "empty.jpg"
    f.touch()
    with pytest.raises(ImageError, match="empty file"):
        load_image(f)


def test_text_named_jpg(tmp_path):
    f = tmp_path / "notes.jpg"
    f.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match="not an image"):
        load_image(f)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")


def test_truncated_jpeg(tmp_path):
    good = _save(Image.effect_noise((256, 256), 60).convert("RGB"), tmp_path / "good.jpg", quality=95)
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageError, match="truncated|cannot decode"):
        load_image(bad)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_huge_dimensions_refused_before_decoding(tmp_path):
    f = tmp_path / "bomb.png"
    f.write_bytes(_png_header_only(60_000, 60_000))  # 3.6 Gpx claimed by a file of a few bytes
    with pytest.raises(ImageError, match="pixels|too many"):
        load_image(f)
    small = _save(Image.new("RGB", (100, 100)), tmp_path / "small.png")
    with pytest.raises(ImageError, match="above the limit of 1,000"):
        load_image(small, max_pixels=1000)


def test_cmyk_jpeg(tmp_path):
    f = _save(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), tmp_path / "cmyk.jpg")
    img = load_image(f)
    assert img.mode == "RGB" and img.size == (64, 48)
    r, g, b = img.getpixel((32, 24))
    assert r > 200 and g < 60 and b < 60  # cyan-free, magenta+yellow = red


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.full((20, 30), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    f = tmp_path / "gray16.png"
    Image.fromarray(arr).save(f)
    assert Image.open(f).mode.startswith("I")
    img = load_image(f)
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (128, 128, 128)


def test_rgba_is_composited_on_white(tmp_path):
    arr = np.zeros((10, 10, 4), dtype=np.uint8)
    arr[:, :5] = (255, 0, 0, 255)  # opaque red left half, fully transparent (black) right half
    f = _save(Image.fromarray(arr, "RGBA"), tmp_path / "rgba.png")
    img = load_image(f)
    assert img.getpixel((0, 0)) == (255, 0, 0) and img.getpixel((9, 9)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "1", "I", "F"])
def test_other_modes(tmp_path, mode):
    img = Image.new("RGB", (16, 8), (200, 100, 50)).convert(mode)
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (16, 8)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red, as stored
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    f = tmp_path / "rotated.jpg"
    img.save(f, exif=exif, quality=100)
    out = load_image(f)
    assert out.size == (20, 40)  # displayed upright: portrait
    r, g, b = out.getpixel((10, 5))  # the stored left half is now on top
    assert r > 200 and g < 50


def test_bytes_and_pil_sources_give_the_same_tensor(tmp_path):
    f = _save(Image.effect_noise((300, 200), 50).convert("RGB"), tmp_path / "n.png")
    a = preprocess(f, B5)
    b = preprocess(f.read_bytes(), B5)
    c = preprocess(Image.open(f), B5)
    assert a.shape == (3, 456, 456) and np.array_equal(a, b) and np.array_equal(a, c)
    with pytest.raises(ImageError, match="empty image data"):
        load_image(b"")
    with pytest.raises(ImageError, match="not an image"):
        load_image(io.BytesIO(b"xx").getvalue())


def test_find_images(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.JPEG", "sub/b.png", "sub/c.txt", "d.webp"):
        (tmp_path / name).write_bytes(b"x")
    found = find_images([tmp_path])
    assert [p.name for p in found] == ["a.JPEG", "d.webp", "b.png"]
    assert find_images([tmp_path / "sub" / "c.txt"]) == [tmp_path / "sub" / "c.txt"]  # explicit files are kept
