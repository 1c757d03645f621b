"""Layout detection and labelling (no model): every layout, and a clear error for every misfit."""

from __future__ import annotations

from pathlib import Path

import pytest

from effnet.evaluate import DatasetError, find_dataset, read_annotations
from effnet.labels import imagenet_labels

LABELS = imagenet_labels()
TENCH, GOLDFISH, SHARK = (LABELS[i].synset for i in range(3))  # n01440764 n01443537 n01484850


def touch(path: Path, data: bytes = b"\xff\xd8 not decoded by layout detection") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_synset_prefix_layout(tmp_path: Path) -> None:
    touch(tmp_path / f"{GOLDFISH}_b.JPEG")
    touch(tmp_path / f"{TENCH}_a.jpg")
    touch(tmp_path / f"{TENCH}_c.png")
    touch(tmp_path / "notes.txt")  # not an image: ignored
    ds = find_dataset(tmp_path)
    assert ds.layout == "synset-prefix"
    # Classes interleaved, so that a prefix (--limit) spreads over classes.
    assert [(p.path.name, p.label) for p in ds.samples] == [
        (f"{TENCH}_a.jpg", 0),
        (f"{GOLDFISH}_b.JPEG", 1),
        (f"{TENCH}_c.png", 0),
    ]
    assert ds.num_classes_present == 2


def test_class_folder_layout_recursive_and_interleaved(tmp_path: Path) -> None:
    for name in ("x1.JPEG", "x2.JPEG", "sub/x3.JPEG"):
        touch(tmp_path / TENCH / name)
    touch(tmp_path / SHARK / "y.JPEG")
    (tmp_path / GOLDFISH).mkdir()  # a class without images is allowed
    touch(tmp_path / ".cache" / "x.JPEG")  # hidden entries are ignored, at any depth
    touch(tmp_path / TENCH / "._x1.JPEG")  # macOS resource-fork companion
    ds = find_dataset(tmp_path)
    assert ds.layout == "class-folders"
    assert [(p.path.relative_to(tmp_path).as_posix(), p.label) for p in ds.samples] == [
        (f"{TENCH}/sub/x3.JPEG", 0),
        (f"{SHARK}/y.JPEG", 2),
        (f"{TENCH}/x1.JPEG", 0),
        (f"{TENCH}/x2.JPEG", 0),
    ]


def test_annotation_layout(tmp_path: Path) -> None:
    data = tmp_path / "val"
    touch(data / "ILSVRC2012_val_00000002.JPEG")
    touch(data / "ILSVRC2012_val_00000001.JPEG")
    ann = tmp_path / "val.txt"
    ann.write_text(
        "# comment\nILSVRC2012_val_00000001.JPEG 65\n\nILSVRC2012_val_00000002.JPEG "
        f"{SHARK}\nILSVRC2012_val_00000003.JPEG 7\n"
    )
    ds = find_dataset(data, annotations=ann)
    assert ds.layout == "annotations" and ds.annotations == ann
    assert [(p.path.name, p.label) for p in ds.samples] == [
        ("ILSVRC2012_val_00000001.JPEG", 65),
        ("ILSVRC2012_val_00000002.JPEG", 2),
    ]
    assert ds.unmatched_annotations == 1  # listed, but no such image: counted, not an error


def test_annotation_file_inside_data_folder(tmp_path: Path) -> None:
    touch(tmp_path / "a.JPEG")
    (tmp_path / "val.txt").write_text("a.JPEG 3\n")
    assert [(s.path.name, s.label) for s in find_dataset(tmp_path, tmp_path / "val.txt").samples] == [("a.JPEG", 3)]


@pytest.mark.parametrize(
    "make, annotations, message",
    [
        (lambda d: None, None, "no images in"),
        (lambda d: touch(d / "readme.md"), None, "no images in"),
        (lambda d: touch(d / "n99999999_x.JPEG"), None, "unknown synset in n99999999_x.JPEG"),
        (lambda d: touch(d / "n99999999" / "x.JPEG"), None, "unknown synset folder n99999999"),
        (lambda d: touch(d / "ILSVRC2012_val_00000001.JPEG"), None, "--annotations val.txt"),
        (
            lambda d: (touch(d / f"{TENCH}_a.JPEG"), touch(d / "b.JPEG")),
            None,
            "not named '<synset>_<anything>': b.JPEG",
        ),
        (lambda d: (touch(d / TENCH / "a.JPEG"), touch(d / f"{TENCH}_a.JPEG")), None, "mixes sub-folders"),
        (lambda d: (touch(d / "train" / "a.JPEG"), touch(d / "val" / "b.JPEG")), None, "not named by synset"),
        (lambda d: (touch(d / TENCH / "a.JPEG"), touch(d / "misc" / "b.JPEG")), None, "sub-folders misc are not named"),
        (lambda d: (d / TENCH).mkdir(), None, "no images in the 1 class folders"),
        (lambda d: (touch(d / "a.JPEG"), touch(d / "b.JPEG")), "a.JPEG 1\n", "1 of 2 images in"),
        (lambda d: touch(d / "a.JPEG"), "a.JPEG 1000\n", "class index 1000 is out of range 0..999"),
        (lambda d: touch(d / "a.JPEG"), "a.JPEG n99999999\n", ":1: unknown synset n99999999"),
        (lambda d: touch(d / "a.JPEG"), "a.JPEG 1\na.JPEG 2\n", ":2: a.JPEG is listed twice"),
        (lambda d: touch(d / "a.JPEG"), "a.JPEG\n", "expected '<file name> <class index>'"),
        (lambda d: touch(d / "a.JPEG"), "a.JPEG cat\n", "expected a class index or a synset"),
        (lambda d: touch(d / "a.JPEG"), "# nothing\n", "has no entries"),
    ],
    ids=[
        "empty",
        "no-images",
        "unknown-synset-prefix",
        "unknown-synset-folder",
        "val-without-annotations",
        "partly-named",
        "mixed",
        "non-synset-folders",
        "stray-folder",
        "empty-class-folder",
        "missing-annotation-entry",
        "index-out-of-range",
        "unknown-synset-annotation",
        "duplicate-entry",
        "no-label",
        "bad-label",
        "no-entries",
    ],
)
def test_bad_data_is_a_clear_error(tmp_path: Path, make, annotations: str | None, message: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    make(data)
    ann = None
    if annotations is not None:
        ann = tmp_path / "val.txt"
        ann.write_text(annotations)
    with pytest.raises(DatasetError) as info:
        find_dataset(data, annotations=ann)
    assert message in str(info.value)


def test_missing_folder_file_and_annotation(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        find_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="is not a folder"):
        find_dataset(touch(tmp_path / f"{TENCH}_a.JPEG"))
    with pytest.raises(DatasetError, match="annotation file .* does not exist"):
        read_annotations(tmp_path / "val.txt")


def test_report_write_failure_is_clear_and_leaves_nothing(tmp_path: Path) -> None:
    import dataclasses

    from effnet import EffnetError
    from effnet.evaluate import EvalReport
    from effnet.weights.records import Preprocess

    fields = {f.name: 0 for f in dataclasses.fields(EvalReport) if f.default is dataclasses.MISSING}
    report = EvalReport(
        **{
            **fields,
            "per_class": (),
            "confused": (),
            "failures": (),
            "images": (),
            "preprocess": Preprocess(224, 256),
            "reference": None,
            "seconds": 1.0,
            "count": 1,
        }
    )
    (tmp_path / "taken").mkdir()
    with pytest.raises(EffnetError, match="cannot write the report to .*taken"):
        report.write_json(tmp_path / "taken")  # a folder is in the way
    with pytest.raises(EffnetError, match="folder .*missing does not exist"):
        report.write_json(tmp_path / "missing" / "r.json")
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no temporary file left behind
    report.write_json(tmp_path / "r.json")
    assert '"schema": "effnet.eval/1"' in (tmp_path / "r.json").read_text()
