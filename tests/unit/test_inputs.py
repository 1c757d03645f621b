"""What a user points effnet at: the one folder walk (symlinked folders, loops, hidden and ._* files), the one
image-input adapter (buffers, file objects, arrays, FIFOs, generators; a TypeError naming what is accepted),
and list files with a UTF-8 byte-order mark (issue 24, items 5, 7 and 8)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import effnet.files
import effnet.quantize
from effnet.errors import ImageError
from effnet.evaluate.datasets import find_class_folders, find_dataset, read_annotations
from effnet.files import find_images, walk_images
from effnet.labels import get_labels
from effnet.predict import Classifier
from effnet.preprocess import decode_crop
from effnet.weights.records import Preprocess
from tests.testutils import EXAMPLES, feed_fifo, write_finetuned_model

P = Preprocess(input_size=32, resize_size=36)
CHELSEA = EXAMPLES / "chelsea.png"


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def tree(tmp_path) -> Path:
    """root/ with a real folder, a symlinked folder (kept outside root), a loop, hidden and ._* files."""
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "b.png").write_bytes(png((0, 0, 255)))
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.png").write_bytes(png((255, 0, 0)))
    (root / "real" / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble, not an image")
    (root / "real" / ".hidden.png").write_bytes(png((1, 2, 3)))
    (root / ".git").mkdir()
    (root / ".git" / "c.png").write_bytes(png((4, 5, 6)))
    (root / "notes.txt").write_text("not an image")
    os.symlink(outside, root / "linked")  # a folder of symlinked folders is a common way to lay out a subset
    os.symlink(root / "real", root / "real" / "loop")  # a loop: walked once
    os.symlink(tmp_path / "gone.png", root / "real" / "broken.png")  # kept: reported as unreadable, not lost
    os.mkfifo(root / "real" / "pipe.png")  # inside a folder a FIFO is no image (reading it could block)
    return root


def test_walk_follows_symlinked_folders_once_and_skips_hidden_files(tree):
    found = [p.relative_to(tree).as_posix() for p in walk_images(tree)]
    assert found == ["linked/deep/b.png", "real/a.png", "real/broken.png"]
    assert find_images([tree]) == walk_images(tree)
    assert find_images([tree / "real" / "._a.png"]) == [tree / "real" / "._a.png"]  # named explicitly: kept


def test_every_command_walks_folders_the_same_way(tree):
    # classify and quantize --calibration: find_images (the same function object, not a copy)
    assert effnet.quantize.find_images is effnet.files.find_images
    from effnet.cli import classify

    assert classify.find_images is effnet.files.find_images
    # train: class folders, each walked (the symlinked one included)
    (tree / "real" / "broken.png").unlink()
    train = find_class_folders(tree)
    assert {(s.path.relative_to(tree).as_posix(), train.labels[s.label].label) for s in train.samples} == {
        ("linked/deep/b.png", "linked"),
        ("real/a.png", "real"),
    }
    # eval: a fine-tuned model's class folders, walked the same way
    data = find_dataset(tree, labels=get_labels(["linked", "real"]))
    assert sorted(s.path for s in data.samples) == sorted(s.path for s in train.samples)


def test_annotations_with_a_byte_order_mark_keep_their_first_line(tmp_path):
    (tmp_path / "a.png").write_bytes(png((255, 0, 0)))
    (tmp_path / "b.png").write_bytes(png((0, 255, 0)))
    ann = tmp_path / "val.txt"
    ann.write_bytes("a.png 3\r\nb.png n01443537\r\n".encode("utf-8-sig"))  # as Notepad saves it
    assert read_annotations(ann) == {"a.png": 3, "b.png": 1}
    assert len(find_dataset(tmp_path, annotations=ann)) == 2


@pytest.mark.parametrize(
    "kind",
    ["bytes", "bytearray", "memoryview", "BytesIO", "file", "PIL", "array", "array RGBA", "array gray"],
)
def test_every_accepted_image_kind_gives_the_crop_of_the_file(kind, tmp_path):
    data = CHELSEA.read_bytes()
    rgb = Image.open(CHELSEA).convert("RGB")
    expected = decode_crop(CHELSEA, P)
    source = {
        "bytes": lambda: data,
        "bytearray": lambda: bytearray(data),
        "memoryview": lambda: memoryview(data),
        "BytesIO": lambda: io.BytesIO(data),
        "file": lambda: CHELSEA.open("rb"),
        "PIL": lambda: rgb,
        "array": lambda: np.asarray(rgb),
        "array RGBA": lambda: np.asarray(rgb.convert("RGBA")),
        "array gray": lambda: np.asarray(rgb.convert("L")),
    }[kind]()
    got = decode_crop(source, P)
    if kind == "array gray":
        expected = decode_crop(rgb.convert("L"), P)
    np.testing.assert_array_equal(got, expected)
    if kind == "file":
        source.close()


def test_a_fifo_is_read_as_a_stream(tmp_path):
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    feeder = feed_fifo(fifo, CHELSEA.read_bytes())
    np.testing.assert_array_equal(decode_crop(fifo, P), decode_crop(CHELSEA, P))
    feeder.join(5)
    with pytest.raises(ImageError, match="is a folder"):
        decode_crop(tmp_path, P)


def test_a_fifo_nobody_writes_to_is_an_error_for_that_input_not_a_hang(tmp_path, monkeypatch):
    import effnet.preprocess

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # a plain open() would wait for a writer forever
    monkeypatch.setattr(effnet.preprocess, "FIFO_WAIT_SECONDS", 0.5)
    with pytest.raises(ImageError, match=r"pipe.jpg: nothing was written to this FIFO within 0.5 s"):
        decode_crop(fifo, P)


@pytest.mark.parametrize("bad", [3, None, {"image": 1}, np.zeros((2, 2), np.float32)])
def test_anything_else_is_refused_with_what_is_accepted(bad):
    with pytest.raises((TypeError, ImageError)) as e:
        decode_crop(bad, P)
    if isinstance(bad, np.ndarray):
        assert e.type is ImageError and "uint8" in str(e.value)
    else:
        assert e.type is TypeError and "numpy uint8 array" in str(e.value) and "binary file object" in str(e.value)


def test_text_mode_file_is_a_type_error(tmp_path):
    with (tmp_path / "x.png").open("w") as f, pytest.raises(TypeError, match="'rb'"):
        decode_crop(f, P)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Classifier:
    """Lite0 with random weights at 64 px: cheap forward passes, and no weights to download."""
    weights = write_finetuned_model(tmp_path_factory.mktemp("inputs") / "model.safetensors", ("a", "b", "c", "d"))
    return Classifier("efficientnet-lite0", weights, progress=False)


def test_classify_takes_generators_arrays_and_buffers(classifier):
    rgb = np.asarray(Image.open(CHELSEA).convert("RGB"))
    want = classifier.classify(CHELSEA, top_k=3)[0].predictions
    for images, n in [
        ((p for p in [CHELSEA, EXAMPLES / "coffee.png"]), 2),  # a generator of paths
        (rgb, 1),  # one HWC uint8 array
        (np.stack([rgb, rgb]), 2),  # an NHWC batch: its rows
        (bytearray(CHELSEA.read_bytes()), 1),
        (memoryview(CHELSEA.read_bytes()), 1),
        (io.BytesIO(CHELSEA.read_bytes()), 1),
    ]:
        results = classifier.classify(images, top_k=3)
        assert len(results) == n and all(r.ok for r in results), results
        assert [p.class_index for p in results[0].predictions] == [p.class_index for p in want]
    with pytest.raises(TypeError, match="accepted"):
        classifier.classify(3.5)


def test_an_endless_stream_is_refused_not_read_forever(monkeypatch):
    import effnet.preprocess

    class Endless:  # /dev/zero as a file object: short reads, never EOF
        def read(self, n: int = -1) -> bytes:
            return b"\0" * min(n, 1000)

    monkeypatch.setattr(effnet.preprocess, "MAX_STREAM_BYTES", 10_000)
    with pytest.raises(ImageError, match="longer than 10,000 bytes"):
        decode_crop(Endless(), P)
