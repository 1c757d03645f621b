"""What the driver does with the inputs it names, before Ray runs anything: expand them into one entry per
input (so the output can be counted against them), and refuse to ship more than it should."""

from __future__ import annotations

import pytest

from effnet.errors import EffnetError

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'effnet[ray]')")


def test_the_driver_expands_folders_and_lists_into_one_absolute_entry_per_input(tmp_path, monkeypatch):
    from effnet.distributed.inputs import _expand

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.jpg", "sub/a.PNG", "notes.txt"):
        (folder / name).write_bytes(b"x")
    odd = tmp_path / "scan.tif.bak"  # named explicitly: kept whatever its extension
    odd.write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\n\nrel/one.jpg\n  s3://bucket/key.jpg  \nphotos\n")
    monkeypatch.chdir(tmp_path)
    entries = _expand(["photos", str(odd), "missing.jpg", f"file://{folder}"], [listing])
    assert entries == [
        str(folder / "b.jpg"),
        str(folder / "sub" / "a.PNG"),
        str(odd),
        str(tmp_path / "missing.jpg"),  # its row will say "no such file"
        f"file://{folder / 'b.jpg'}",
        f"file://{folder / 'sub' / 'a.PNG'}",
        # A list's lines are files, as they are: relative ones made absolute here (the driver's cwd),
        # URIs untouched, a folder not expanded (its row says it is a folder).
        str(tmp_path / "rel" / "one.jpg"),
        "s3://bucket/key.jpg",
        str(tmp_path / "photos"),
    ]
    with pytest.raises(EffnetError, match="--from-list gone.txt: no such file"):
        _expand([], ["gone.txt"])
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(EffnetError, match="--from-list bad.txt: cannot read"):
        _expand([], ["bad.txt"])


def test_the_driver_refuses_to_ship_more_than_its_limit_before_reading_anything(tmp_path, monkeypatch):
    from effnet.distributed import inputs as io

    files = []
    for i in range(3):
        f = tmp_path / f"{i}.jpg"
        f.write_bytes(b"x" * 1000)
        files.append((str(f), str(f)))
    monkeypatch.setattr(io, "SHIP_LIMIT_BYTES", 2500)
    with pytest.raises(EffnetError, match=r"the 3 local inputs hold .* --shared-inputs"):
        io._ship(files)


def test_a_folder_without_images_is_refused_before_connecting_to_ray(tmp_path):
    from tests.testutils import run_cli

    (tmp_path / "empty").mkdir()
    # An address where no cluster is: were Ray joined first, the error would be the connection's.
    r = run_cli(
        "classify", "--engine", "ray", "--ray-address", "127.0.0.1:1", "--output", str(tmp_path / "o.jsonl"),
        str(tmp_path / "empty"), timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and "no inputs" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "Ray" not in r.stderr and list(tmp_path.iterdir()) == [tmp_path / "empty"], r.stderr


def test_a_read_task_refuses_a_fifo_at_once_instead_of_waiting_for_a_writer(tmp_path):
    import os

    from effnet.distributed.inputs import _read_local

    fifo, folder, image = tmp_path / "pipe.jpg", tmp_path / "sub", tmp_path / "a.jpg"
    os.mkfifo(fifo)  # nobody writes to it: a plain open() would block this task forever
    folder.mkdir()
    image.write_bytes(b"jpeg bytes")
    table = _read_local([("pipe.jpg", str(fifo)), ("sub", str(folder)), ("a.jpg", str(image))])[0]
    assert table.column("bytes").to_pylist() == [None, None, b"jpeg bytes"]
    errors = table.column("error").to_pylist()
    assert errors[0].startswith("pipe.jpg: not a regular file") and "is a folder" in errors[1] and errors[2] == ""


def test_an_http_url_is_refused_by_a_read_task_in_one_message_naming_it_once():
    import numpy as np

    from effnet.distributed.inputs import _read_listed

    url = "http://127.0.0.1:9/clip.mp4"  # pyarrow has no http filesystem: no connection is tried
    (error,) = _read_listed({"text": np.array([url], dtype=object)})["error"]
    assert error.startswith(f"{url}: cannot read: not a URI pyarrow can read (no http(s))") and error.count(url) == 1


def test_a_label_given_with_an_input_stays_in_its_row_and_every_input_needs_one(tmp_path):
    import numpy as np

    from effnet.distributed.inputs import _read_listed, _read_local, read_inputs

    image = tmp_path / "a.jpg"
    image.write_bytes(b"jpeg bytes")
    table = _read_local([("a.jpg", str(image)), ("gone.jpg", str(tmp_path / "gone.jpg"))], [7, 999])
    assert table[0].column("label").to_pylist() == [7, 999] and "label" not in _read_local([])[0].column_names
    url = "http://127.0.0.1:9/b.jpg"
    rows = _read_listed({"text": np.array([url], dtype=object), "label": np.array([42])})
    assert rows["label"].tolist() == [42] and rows["error"][0].startswith(url)
    with pytest.raises(EffnetError, match="2 labels for 1 inputs"):
        read_inputs([], listed=[str(image)], labels=[1, 2])  # refused before Ray is needed


def test_an_entry_through_a_symlink_and_dotdot_names_the_file_this_process_would_open(tmp_path, monkeypatch):
    # x/lnk -> y/real, so x/lnk/../d is y/d for the filesystem, while abspath() would fold it to x/d as text
    from effnet.distributed.inputs import list_inputs

    for side in ("x/d", "y/d", "y/real"):
        (tmp_path / side).mkdir(parents=True)
    (tmp_path / "x" / "lnk").symlink_to(tmp_path / "y" / "real")
    (tmp_path / "y" / "d" / "photo.jpg").write_bytes(b"the one behind the link")
    (tmp_path / "x" / "d" / "photo.jpg").write_bytes(b"a decoy")
    (tmp_path / "x" / "list.txt").write_text("lnk/../d/photo.jpg\n")
    monkeypatch.chdir(tmp_path / "x")
    entries = list_inputs(["lnk/../d", "lnk/../d/photo.jpg"], ["list.txt"])
    assert len(entries) == 3
    for entry in entries:
        assert entry.startswith("/") and open(entry, "rb").read() == b"the one behind the link", entry


def test_a_file_name_that_is_not_utf8_is_refused_in_one_line_naming_it(tmp_path):
    import os

    from effnet.distributed.inputs import list_inputs

    (tmp_path / "café.jpg").write_bytes(b"x")  # UTF-8 beyond ASCII: fine
    assert list_inputs([tmp_path]) == [str(tmp_path / "café.jpg")]
    with open(os.path.join(os.fsencode(tmp_path), b"\xff\xfe.jpg"), "wb") as f:  # Latin-1 bytes, not UTF-8
        f.write(b"x")
    with pytest.raises(EffnetError, match=r"\\udcff\\udcfe\.jpg'?: a file name that is not UTF-8"):
        list_inputs([tmp_path])
