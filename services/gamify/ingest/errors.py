"""Whole-request errors: one exception type, one JSON shape `{"error", "message", ...}`."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request refused as a whole; `code` is stable (clients branch on it), `message` is for people."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}
