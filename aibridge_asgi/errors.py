"""Error bodies in each provider's own shape, so every client SDK shows them.

Anthropic: ``{"type": "error", "error": {"type": ..., "message": ...}}``.
OpenAI: ``{"error": {"message": ..., "type": ..., "param": null, "code": ...}}``.
Google (Gemini API): ``{"error": {"code": 404, "message": ..., "status": "NOT_FOUND"}}``.
Where the provider is unknown (a path outside every mount) the body carries
both shapes' fields, which both SDK families read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["BridgeError", "error_body"]

# status -> (anthropic error type, openai error type, openai code)
_KINDS: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "invalid_request_error", "permission_denied"),
    404: ("not_found_error", "invalid_request_error", "unknown_url"),
    405: ("invalid_request_error", "invalid_request_error", "method_not_allowed"),
    408: ("timeout_error", "invalid_request_error", "request_timeout"),
    413: ("request_too_large", "invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "invalid_request_error", "unsupported_media_type"),
    426: ("invalid_request_error", "invalid_request_error", "upgrade_not_supported"),
    429: ("rate_limit_error", "rate_limit_exceeded", "rate_limit_exceeded"),
    500: ("api_error", "server_error", "internal_error"),
    501: ("invalid_request_error", "invalid_request_error", "not_implemented"),
    502: ("api_error", "server_error", "upstream_unreachable"),
    503: ("api_error", "server_error", "service_unavailable"),
    504: ("timeout_error", "server_error", "upstream_timeout"),
}


# status -> Google's canonical status name (google.rpc.Code)
_GOOGLE_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    426: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_body(
    kind: str | None,
    status: int,
    message: str,
    code: str | None = None,
    error_type: str | None = None,
) -> bytes:
    """Return the JSON error body for ``status`` in the shape of ``kind``.

    ``kind`` is ``"anthropic"``, ``"openai"``, ``"google"`` or ``None``
    (unknown provider). ``error_type`` replaces the OpenAI ``type`` the
    status implies (e.g. ``insufficient_quota``); Anthropic and Google
    bodies always follow the status.
    """
    anthropic_type, openai_type, default_code = _KINDS.get(status, _KINDS[500])
    if kind == "google":
        name = _GOOGLE_STATUS.get(status, "UNKNOWN")
        body: object = {"error": {"code": status, "message": message, "status": name}}
    elif kind == "anthropic":
        body = {"type": "error", "error": {"type": anthropic_type, "message": message}}
    elif kind == "openai":
        body = {
            "error": {
                "message": message,
                "type": error_type or openai_type,
                "param": None,
                "code": code or default_code,
            }
        }
    else:
        body = {
            "type": "error",
            "error": {"type": anthropic_type, "message": message, "code": code or default_code},
        }
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class BridgeError(Exception):
    """An error the bridge answers itself, in the provider's shape.

    ``message`` is what the client reads and what the records keep (it never
    holds secrets); ``headers`` are added to the response; ``code`` and
    ``error_type`` override the OpenAI-shaped body's ``code`` and ``type``.
    """

    status: int
    message: str
    code: str | None = None
    headers: Sequence[tuple[bytes, bytes]] = ()
    error_type: str | None = None

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"
