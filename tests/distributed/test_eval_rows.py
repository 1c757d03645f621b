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
