"""Bearer-token authentication for a server exposed beyond this machine, as ASGI middleware.

With an API key (``effnet serve --api-key KEY`` or ``$EFFNET_API_KEY``) every request except the health
probes (which orchestrators call without credentials) must carry ``Authorization: Bearer KEY``; anything
else gets 401 JSON with ``WWW-Authenticate: Bearer`` (RFC 6750). The key is compared in constant time
(:func:`hmac.compare_digest`), so response timing does not reveal how much of a guess was right.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import socket
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["API_KEY_ENV", "BearerAuth", "is_health_path", "is_loopback", "exposure_warning"]

API_KEY_ENV = "EFFNET_API_KEY"
# KServe v2 health (server live/ready, model ready): what Kubernetes probes call, never behind a key.
_HEALTH = re.compile(r"/v2/health/(live|ready)|/v2/models/[^/]+(/versions/[^/]+)?/ready")


def is_health_path(path: str) -> bool:
    return _HEALTH.fullmatch(path) is not None


class BearerAuth:
    """Refuse every non-health HTTP request without ``Authorization: Bearer <api_key>`` (401 JSON)."""

    def __init__(self, app: ASGIApp, api_key: str, on_reject: Callable[[str], None] | None = None) -> None:
        if not api_key:
            raise ValueError("the API key must not be empty")
        self.app = app
        self._expected = api_key.encode()
        self._on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_health_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        given = [v for k, v in scope.get("headers", ()) if k == b"authorization"]
        # RFC 7235: the scheme is case-insensitive ("bearer", "BEARER"); the token is compared in constant time.
        scheme, _, token = given[0].partition(b" ") if len(given) == 1 else (b"", b"", b"")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token, self._expected):
            await self.app(scope, receive, send)
            return
        reason = "missing Authorization header" if not given else "invalid API key"
        if self._on_reject is not None:
            self._on_reject(scope.get("path", ""))
        body = json.dumps({"error": f"unauthorized: {reason}; send 'Authorization: Bearer <API key>'"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="effnet"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def is_loopback(host: str) -> bool:
    """True when ``host`` binds this machine only (127.0.0.0/8, ::1, or a name resolving only there)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


def exposure_warning(host: str, api_key: str | None, allowed_hosts: Sequence[str] | None = None) -> str | None:
    """The warning ``effnet serve`` prints when it listens beyond loopback without a key, else None. Without
    ``--allowed-hosts`` it also names DNS rebinding: any Host is answered, so a web page opened in a browser
    that can reach this port (its own name made to resolve to this machine) can use the model and read the
    answers, the Origin check notwithstanding (the page's Origin then matches the Host it sends)."""
    if api_key or is_loopback(host):
        return None
    rebinding = (
        ""
        if allowed_hosts
        else " Any web page opened in a browser that can reach this port can drive it too (DNS rebinding: every "
        "Host name is answered); give --allowed-hosts NAMES (the names clients use) to refuse other Host names."
    )
    return (
        f"effnet serve: WARNING: listening on {host}, reachable from other machines, without an API key: "
        f"anyone who can reach this port can use the model.{rebinding} Set --api-key KEY (or ${API_KEY_ENV}) to "
        "require 'Authorization: Bearer KEY', or bind 127.0.0.1."
    )
