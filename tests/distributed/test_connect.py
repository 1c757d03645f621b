"""The one line effnet prints when it cannot join a Ray cluster says why (no Ray cluster needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'effnet[ray]')")


def reason_behind_failed_to_connect(cause: str) -> str:
    """connect_reason of Ray's "Failed to connect" raised from an error saying ``cause``, as Ray raises it."""
    from effnet.distributed.jobs import connect_reason

    try:
        try:
            raise RuntimeError(cause)
        except RuntimeError as inner:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379") from inner
    except ConnectionError as e:
        return connect_reason(e)


def test_the_cause_ray_keeps_behind_failed_to_connect_is_in_the_line():
    from effnet.distributed.jobs import connect_reason

    line = reason_behind_failed_to_connect("InvalidAuthToken: the token\n  does not match the cluster's")
    assert line == (
        "Failed to connect to Ray cluster at 10.0.0.5:6379: InvalidAuthToken: the token does not match the cluster's"
    )
    assert connect_reason(ValueError("bad address")) == "bad address"


def test_a_traceback_ray_quotes_in_its_message_is_cut_to_the_error_it_ends_with():
    # What Ray 2.60 raised for a port that accepted a connection but was not a GCS (measured here)
    quoted = (
        "Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
        '  File "ray/_private/node.py", line 996, in _init_gcs_client\n    client = GcsClient(\n'
        '  File "python/ray/includes/common.pxi", line 121, in ray._raylet.check_status\n'
        "ray.exceptions.RpcError: RPC error: Received http2 header with status: 404\n"
    )
    line = reason_behind_failed_to_connect(quoted)
    assert line == (
        "Failed to connect to Ray cluster at 10.0.0.5:6379: Failed to connect to GCS. Last connection error: "
        "ray.exceptions.RpcError: RPC error: Received http2 header with status: 404"
    ), line


def test_a_ray_startup_timeout_is_one_line_saying_what_to_try(monkeypatch):
    import ray

    from effnet.distributed import jobs
    from effnet.errors import EffnetError

    def timing_out(*args, **kwargs):  # what ray.init raises on a loaded machine (a bare Exception)
        raise Exception(
            "The current node timed out during startup. This could happen because some of the Ray processes "
            "failed to startup."
        )

    monkeypatch.setattr(ray, "init", timing_out)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(EffnetError) as e, jobs.connected("local", progress=False):
        pass
    line = str(e.value)
    assert "\n" not in line and "timed out during startup" in line and "--ray-address" in line, line


def test_an_actor_that_died_in_its_constructor_is_one_line_with_its_own_message():
    from ray.exceptions import ActorDiedError, RayTaskError

    from effnet.distributed.jobs import actor_failure
    from effnet.errors import CheckpointError

    own = CheckpointError("rand_lite1.pth does not fit efficientnet-lite0:\n  90 unexpected: stages.1.2.expand.conv")
    trace = (
        'Traceback (most recent call last):\n  File "data.py", line 70, in __init__\n'
        f"effnet.errors.CheckpointError: {own}"
    )
    died = ActorDiedError(RayTaskError("InferenceActor.__init__", trace, own))
    try:
        try:
            raise died
        except ActorDiedError as inner:
            raise RuntimeError("a Ray Data operator failed") from inner  # what Ray Data may wrap it in
    except RuntimeError as e:
        failure = actor_failure(e)
    assert failure is not None
    line = str(failure)
    assert "\n" not in line and "rand_lite1.pth does not fit efficientnet-lite0: 90 unexpected" in line, line
    assert "Traceback" not in line and actor_failure(ValueError("not an actor")) is None


def test_addresses_that_cannot_be_a_cluster_are_refused_before_ray_starts(monkeypatch):
    import ray

    from effnet.distributed.jobs import connected
    from effnet.errors import EffnetError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # As for a process with no Ray yet (another test's session may be up: connected() would join it instead)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(EffnetError, match=r"99999 is not a TCP port"), connected("127.0.0.1:99999"):
        pass
    with pytest.raises(EffnetError, match="--ray-address is empty"), connected(" "):
        pass
    # "auto" takes RAY_ADDRESS first, as Ray does: a dead one fails at once, naming it (port 1: nothing listens)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(EffnetError, match=r"at 127\.0\.0\.1:1: nothing accepts a TCP connection"), connected("auto"):
        pass
