"""Access logs without credentials.

Some Gemini clients send their key as ``?key=...`` in the query string, and
the host token then sits in every request line uvicorn's access log prints.
The bridge never logs queries; this filter keeps the host's own server log
from doing it either, by rewriting the ``key`` parameter's value before the
line is formatted.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

#: ``key=<value>`` in a query string, by any spelling a client could use
#: (``key``, ``KEY``, percent-escaped letters such as ``k%65y``).
_KEY_PARAM = re.compile(r"([?&](?:k|%6[bB])(?:e|%65)(?:y|%79)=)[^&#\s]*", re.IGNORECASE)


def redact_query(text: str) -> str:
    """``text`` with the value of every ``key`` query parameter replaced."""
    if "?" not in text:
        return text
    return _KEY_PARAM.sub(r"\1[redacted]", text)


class RedactQueryKeys(logging.Filter):
    """A logging filter for uvicorn's access log: hides ``?key=`` values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration with :class:`RedactQueryKeys`
    on the access log (works in worker processes too: it is named by path)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query_keys"] = {"()": f"{__name__}.RedactQueryKeys"}
    config["handlers"]["access"].setdefault("filters", []).append("redact_query_keys")
    return config
