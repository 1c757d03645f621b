"""What ``--output`` must be before Ray starts (seconds of start-up, minutes of work): checked on the driver."""

from __future__ import annotations

import pytest

from effnet.errors import EffnetError

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'effnet[ray]')")


def test_an_output_folder_that_cannot_be_written_is_refused_before_ray_starts():
    from effnet.distributed.outputs import output_spec

    # /proc takes no new files for any user (root included, who a chmod'ed folder would not stop).
    with pytest.raises(EffnetError, match="cannot write the results to /proc"):
        output_spec("/proc/r1.jsonl")


def test_an_existing_output_is_refused_in_either_format_and_an_empty_folder_is_not_an_output(tmp_path):
    from effnet.distributed.outputs import output_spec

    for name in ("r1.jsonl", "r2.parquet"):
        (tmp_path / name).write_text("an earlier run's results\n")
        with pytest.raises(EffnetError, match=f"--output .*{name} exists"):
            output_spec(tmp_path / name)
        assert (tmp_path / name).read_text() == "an earlier run's results\n"
    (tmp_path / "r3.parquet").mkdir()
    assert output_spec(tmp_path / "r3.parquet").format == "parquet"
    assert output_spec(tmp_path / "r4.jsonl").format == "jsonl"
