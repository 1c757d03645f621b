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
