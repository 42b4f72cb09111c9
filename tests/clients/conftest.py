"""Fixtures of the real-client suite: the outside-traffic trap and the rig."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from aibridge_asgi.testing import FakeUpstream

from ..conftest import Running
from .harness import MOUNT, Capture, OutsideTrap, Rig


@pytest.fixture(scope="session")
def trap() -> Iterator[OutsideTrap]:
    trap = OutsideTrap()
    yield trap
    trap.close()


@pytest.fixture
def rig(
    start_bridge: Callable[..., Running], fake: FakeUpstream, trap: OutsideTrap, tmp_path: Path
) -> Rig:
    """The bridge mounted at /api/v2/aibridge in a Starlette host on
    loopback, the fake upstream behind it, and an empty HOME and working
    directory for the client."""
    captures: list[Capture] = []

    def host(bridge: object) -> Starlette:
        capture = Capture(bridge)
        captures.append(capture)
        return Starlette(routes=[Mount(MOUNT, app=capture)])

    running = start_bridge(mount=host, prefix=MOUNT)
    for name in ("home", "work", "tmp"):
        (tmp_path / name).mkdir()
    return Rig(running, fake, captures[0], trap, tmp_path, trap_start=len(trap.seen))
