"""The one error type the server's handlers raise: an HTTP status, a metrics kind and a message."""

from __future__ import annotations


class ApiError(Exception):
    """Answered as ``{"error": message}`` with ``status``; counted in ``effnet_errors{kind}``."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}
