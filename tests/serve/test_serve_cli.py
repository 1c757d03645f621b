"""`effnet serve` arguments: bad values exit 2 with a usage line, a bad model exits 1 with one line."""

from __future__ import annotations

import pytest

from effnet.cli import main


def test_help_lists_the_limits(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--max-batch",
        "--max-wait-ms",
        "--max-queue",
        "--max-body-mb",
        "--timeout",
        "--workers",
        "--host",
        "127.0.0.1",
    ):
        assert option in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-batch", "0"], "--max-batch must be > 0"),
        (["--max-body-mb", "-1"], "--max-body-mb must be > 0"),
        (["--timeout", "0"], "--timeout must be > 0"),
        (["--explain-timeout", "0"], "--explain-timeout must be > 0"),  # not "explain_--timeout"
        (["--video-timeout", "0"], "--video-timeout must be > 0"),
        (["--max-video-seconds", "0"], "--max-video-seconds must be > 0"),
        (["--max-video-decode-mp", "-1"], "--max-video-decode-mp must be > 0"),
        (["--video-queue", "-1"], "--video-queue must be >= 0"),
        (["--explain-queue", "-1"], "--explain-queue must be >= 0"),
        (["--max-video-mb", "inf"], "--max-video-mb must be a finite number"),
        (["--max-image-mp", "inf"], "--max-image-mp must be a finite number"),
        (["--video-timeout", "inf"], "--video-timeout must be a finite number"),
        (["--video-timeout", "1e12"], "--video-timeout must be a finite number <= 86400"),
        (["--explain-timeout", "nan"], "--explain-timeout must be"),
        (["--max-video-frames", "0"], "--max-video-frames must be > 0"),
        (["--max-wait-ms", "-5"], "--max-wait-ms must be >= 0"),
        (["--port", "70000"], "--port must be 0-65535"),
        (["--workers", "0"], "--workers and --threads must be >= 1"),
        (["--replicas", "2", "--ingress-replicas", "2"], "--replicas, --ingress-replicas: for --engine ray only"),
        (["--engine", "ray", "--replicas", "2", "--autoscale", "1:3"], "not both"),
        (["--engine", "ray", "--autoscale", "3:1"], "1 <= MIN <= MAX"),
        (["--engine", "ray", "--cpus-per-replica", "0"], "CPUs per replica must be > 0"),
        (["--engine", "ray", "--ingress-replicas", "0"], "ingress replicas must be >= 1"),
    ],
)
def test_bad_limits_are_usage_errors(capsys, args, message):
    assert main(["serve", "--model", "efficientnet-lite0", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("usage:"), err


def test_unknown_model_is_one_line_and_exit_1(capsys):
    assert main(["serve", "--model", "efficientnet-b99"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("effnet: error:") and "efficientnet-b99" in err and len(err.splitlines()) == 1, err
