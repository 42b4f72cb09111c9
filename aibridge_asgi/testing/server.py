"""Serve an ASGI app on a real loopback port from a background thread.

Needs uvicorn (``pip install aibridge_asgi[server]``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from starlette.types import ASGIApp

__all__ = ["ServerThread"]

T = TypeVar("T")


class ServerThread:
    """Run ``app`` under uvicorn on ``127.0.0.1`` in its own thread and loop.

    >>> with ServerThread(app) as server:          # doctest: +SKIP
    ...     httpx.get(server.url + "/v1/models")

    ``lifespan`` is off by default, as for an app mounted in a host that does
    not forward lifespan events. :meth:`call` runs a coroutine on the
    server's loop (e.g. ``server.call(bridge.flush())``).
    """

    def __init__(self, app: ASGIApp, *, lifespan: str = "off", **uvicorn_options: Any) -> None:
        import uvicorn

        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets
        # whose proto says TCP (otherwise every response waits ~40 ms).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options: dict[str, Any] = {"log_level": "warning", "lifespan": lifespan}
        options.update(uvicorn_options)
        self._server = uvicorn.Server(uvicorn.Config(app, **options))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name=f"asgi-{self.port}", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # pragma: no cover - surfaced by start()
            self._error = exc
        finally:
            loop.close()

    def start(self) -> ServerThread:
        """Start serving; return once the port accepts connections."""
        self._thread.start()
        for _ in range(1000):
            if self._server.started or self._error is not None or not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not self._server.started:
            raise RuntimeError(f"server did not start: {self._error!r}")
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the server's event loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
