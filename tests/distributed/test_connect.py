"""The one line effnet prints when it cannot join a Ray cluster says why (no Ray cluster needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'effnet[ray]')")


def test_the_cause_ray_keeps_behind_failed_to_connect_is_in_the_line():
    from effnet.distributed.jobs import connect_reason

    try:
        try:
            raise RuntimeError("InvalidAuthToken: the token\n  does not match the cluster's")
        except RuntimeError as inner:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379") from inner
    except ConnectionError as e:
        line = connect_reason(e)
    assert line == (
        "Failed to connect to Ray cluster at 10.0.0.5:6379: InvalidAuthToken: the token does not match the cluster's"
    )
    assert connect_reason(ValueError("bad address")) == "bad address"
