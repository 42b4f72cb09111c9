"""Test support for hosts: a fake upstream, an in-memory recorder, a server.

* :class:`FakeUpstream`: a scriptable ASGI fake of the Anthropic, OpenAI
  and Gemini APIs (streamed and not), usable in-process through
  ``httpx.ASGITransport`` or on a loopback port with :class:`ServerThread`;
  on a port it also serves the Responses API over WebSocket
  (:attr:`FakeUpstream.websockets` keeps each socket it was asked to open).
* :class:`InMemoryRecorder`: keeps every record in a list.
* :mod:`aibridge_asgi.testing.streams`: builders of realistic answers.
"""

from __future__ import annotations

from . import streams
from .fake_upstream import (
    ANTHROPIC_KEY,
    GOOGLE_KEY,
    OPENAI_KEY,
    FakeResponse,
    FakeUpstream,
    ReceivedRequest,
    ReceivedWebSocket,
)
from .recorder import InMemoryRecorder
from .server import ServerThread

__all__ = [
    "ANTHROPIC_KEY",
    "GOOGLE_KEY",
    "OPENAI_KEY",
    "FakeResponse",
    "FakeUpstream",
    "InMemoryRecorder",
    "ReceivedRequest",
    "ReceivedWebSocket",
    "ServerThread",
    "streams",
]
