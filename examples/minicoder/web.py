"""Web-security checks shared by the pages: where a form post came from, how
much of a body is read, and what a refusal looks like.

* A state-changing form (sign in, sign out, mint a token) must come from
  this site: its ``Origin`` (or, without one, ``Sec-Fetch-Site``) must say
  so. Browsers send one of them with every ``POST``; a request with neither
  is not from a browser and cannot be a cross-site forgery.
* A form body is read only after the caller's session was checked, and
  never past :data:`MAX_FORM_BYTES` (413, announced or not).
* Every refusal of that kind is the same 403 page: it tells nothing about
  why, or about which user names exist.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

#: The largest form body read (sign-in and connect forms are a few hundred bytes).
MAX_FORM_BYTES = 8192

#: Sent with every refusal, so that all of them look alike.
FORBIDDEN_HTML = (
    "<!doctype html><title>Forbidden</title><h1>Forbidden</h1><p>This request was refused.</p>"
)


class TooLarge(Exception):
    """The body is larger than the limit."""


def same_origin(request: Request) -> bool:
    """True if a form post comes from this site (or not from a browser)."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == f"{request.url.scheme}://{request.url.netloc}"
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    return True


def forbidden(headers: dict[str, str] | None = None) -> Response:
    """The one 403 page."""
    return HTMLResponse(FORBIDDEN_HTML, status_code=403, headers=headers)


def too_large(headers: dict[str, str] | None = None) -> Response:
    return HTMLResponse(
        "<!doctype html><title>Too large</title><p>The form is too large.</p>",
        status_code=413,
        headers=headers,
    )


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str]:
    """The URL-encoded form in the body, read up to ``limit`` bytes; raises
    :class:`TooLarge` past it (without reading the rest)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge()
    parsed = parse_qs(body.decode("utf-8", "replace"))
    return {key: values[0] for key, values in parsed.items()}
