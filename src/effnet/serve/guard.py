"""Browser-facing guards, as ASGI middleware outside authentication: what a web page may make a browser send.

- **Host.** A server bound to loopback trusts only loopback ``Host`` names (``localhost``, ``127.0.0.1``,
  ``[::1]``: :func:`effnet.serve.launch.serve` sets them) and the names given with ``--allowed-hosts``: a
  DNS-rebinding page (whose own name now resolves to 127.0.0.1) sends its own name as Host and is refused
  (403), so it cannot read ``/v1/model`` or ``/metrics``. A server bound elsewhere checks Host only when
  ``--allowed-hosts`` is given.
- **Origin.** A browser names the page that caused a request in ``Origin``. A request whose Origin is not
  this server's own (the scheme and ``Host`` it was sent to) nor in ``--allowed-origins`` gets 403, whether
  or not an API key is set: a cross-site "simple" POST (``Content-Type: text/plain``, no preflight) never
  reaches the model. Requests without an Origin (curl, scripts, same-origin GETs) are not affected, so the
  page at ``/`` keeps working.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["LOOPBACK_HOSTS", "BrowserGuard", "host_name"]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_name(host: str) -> str:
    """The name part of a Host header value (``[::1]:8000`` -> ``::1``, ``Example.com:80`` -> ``example.com``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class BrowserGuard:
    """403 for a Host outside ``allowed_hosts`` (None: any) and for a foreign ``Origin``."""

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Iterable[str] | None,
        allowed_origins: Iterable[str] = (),
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.hosts = None if allowed_hosts is None else {host_name(h) for h in allowed_hosts}
        self.origins = {o.strip().lower().rstrip("/") for o in allowed_origins}
        self._on_reject = on_reject

    def _host_ok(self, name: str) -> bool:
        return self.hosts is None or name in self.hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        host = headers.get("host", "")
        problem = None
        if not host.strip() and self.hosts is not None:  # HTTP/1.0 may omit it; the check needs a name
            names = ", ".join(sorted(self.hosts))
            problem = (
                "forbidden_host",
                f"the request has no Host header; this server answers only requests naming one of its hosts "
                f"({names}; more with --allowed-hosts): send e.g. 'Host: localhost'",
            )
        elif not self._host_ok(host_name(host)):
            problem = ("forbidden_host", f"Host {host[:80]!r} is not one this server answers to (--allowed-hosts)")
        elif "origin" in headers:
            origin = headers["origin"].strip().lower().rstrip("/")
            own = f"{scope.get('scheme', 'http')}://{host.lower()}"
            if origin != own and origin not in self.origins:
                problem = (
                    "forbidden_origin",
                    f"requests from the web page at {origin[:80]!r} are refused (--allowed-origins)",
                )
        if problem is None:
            await self.app(scope, receive, send)
            return
        if self._on_reject is not None:
            self._on_reject(problem[0])
        body = json.dumps({"error": problem[1]}).encode()
        start = {
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body})
