"""decode="reduced": big JPEGs decoded by DCT scaling; ImageNet-size images keep the exact pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from effnet.cli import build_parser
from effnet.errors import EffnetError
from effnet.predict import Classifier
from effnet.preprocess import decode_crop, decode_crop_reduced, load_image
from effnet.weights.records import default_record

B5 = default_record("efficientnet-b5").preprocess
LITE0 = default_record("efficientnet-lite0").preprocess


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("p", [B5, LITE0], ids=["b5", "lite0"])
def test_imagenet_size_photos_are_decoded_exactly(sample_images, p):
    # every sample photo (up to 1152x864) is below twice the resize target: not one pixel may change
    for path in sample_images:
        assert np.array_equal(decode_crop_reduced(path, p), decode_crop(path, p)), path


def test_a_camera_size_jpeg_is_decoded_reduced_and_close(sample_images):
    photo = Image.open(sample_images[0]).convert("RGB").resize((2048, 1536), Image.Resampling.BICUBIC)
    data = _jpeg(photo)
    # Lite0 resizes the short side to 256: the resized image is 341x256, twice that 682x512; 2048 // 682 = 3,
    # so libjpeg's scale is 1/2 (the largest of 1/8, 1/4, 1/2 that keeps both sides >= 682x512)
    assert load_image(data, reduce_for=LITE0).size == (1024, 768)
    assert load_image(data).size == (2048, 1536)
    exact, reduced = decode_crop(data, LITE0), decode_crop_reduced(data, LITE0)
    assert reduced.shape == exact.shape == (224, 224, 3)
    diff = np.abs(exact.astype(np.int16) - reduced.astype(np.int16))
    assert 0 < diff.mean() < 2.0, diff.mean()  # decoded differently, yet the same picture


def test_reduced_decode_keeps_exif_rotation(sample_images):
    photo = Image.open(sample_images[1]).convert("RGB").resize((2400, 1600), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees: portrait
    data = _jpeg(photo, exif=exif)
    assert load_image(data, reduce_for=LITE0).size[0] < load_image(data, reduce_for=LITE0).size[1]
    exact, reduced = decode_crop(data, LITE0), decode_crop_reduced(data, LITE0)
    assert np.abs(exact.astype(np.int16) - reduced.astype(np.int16)).mean() < 2.0


def test_other_formats_are_never_reduced(sample_images):
    photo = Image.open(sample_images[2]).convert("RGB").resize((2048, 1536), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    assert np.array_equal(decode_crop_reduced(buf.getvalue(), LITE0), decode_crop(buf.getvalue(), LITE0))


def test_decode_defaults_classify_and_serve_reduced_eval_exact():
    parser = build_parser()
    assert parser.parse_args(["classify", "x.jpg"]).decode == "reduced"
    assert parser.parse_args(["eval", "folder"]).decode == "pillow"
    assert parser.parse_args(["classify", "x.jpg", "--decode", "pillow"]).decode == "pillow"


def test_classifier_decode_values():
    assert Classifier("efficientnet-lite0", False, decode="reduced").decoder is decode_crop_reduced
    assert Classifier("efficientnet-lite0", False).decoder is decode_crop  # the API's default: the card's pixels
    with pytest.raises(EffnetError, match="decode must be one of pillow, reduced, gpu"):
        Classifier("efficientnet-lite0", False, decode="fast")


def test_the_server_decodes_reduced():
    from effnet.serve.launch import ServerOptions, load_model

    served = load_model(ServerOptions(model="efficientnet-lite0", backend="torch"))
    assert served.classifier.decoder is decode_crop_reduced
