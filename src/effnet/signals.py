"""SIGTERM (and SIGHUP) handled as Ctrl-C: the one way effnet's long runs (local video, every ``--engine ray`` job, via
``effnet.distributed.jobs.connected``) stop cleanly when killed (``kill``, a service manager): KeyboardInterrupt,
so their ``finally`` blocks run and the CLI exits 130, as on Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["sigterm_as_ctrl_c"]


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP (unless ignored) raise KeyboardInterrupt; the previous handlers are
    back after it. Only the main thread can set handlers: elsewhere the block runs unchanged. Set it after
    ``ray.init``: Ray's core worker installs a native SIGTERM handler there (a stack dump, exit 134) that would
    replace this one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _terminated)}
    # SIGHUP too (a closed terminal or ssh session): its default ends the process with no cleanup. Not when it
    # is ignored (nohup): the user asked the run to outlive the terminal.
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _terminated)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # None: the previous handler was not set from Python (Ray's native one): the default then.
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
