"""Fixtures of the real-client suite: the outside-traffic trap and the rig."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from aibridge_asgi.testing import FakeUpstream

from ..conftest import Running
from .harness import MOUNT, Capture, OutsideTrap, Rig


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every real-client test is slow (a binary per test): -m 'not slow' skips them."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def trap() -> Iterator[OutsideTrap]:
    trap = OutsideTrap()
    yield trap
    trap.close()


@pytest.fixture
def make_rig(
    start_bridge: Callable[..., Running], fake: FakeUpstream, trap: OutsideTrap, tmp_path: Path
) -> Callable[..., Rig]:
    """Builds the rig; keyword arguments go to ``create_bridge`` (e.g. ``policy``)."""

    def make(**options: Any) -> Rig:
        captures: list[Capture] = []

        def host(bridge: object) -> Starlette:
            capture = Capture(bridge)
            captures.append(capture)
            return Starlette(routes=[Mount(MOUNT, app=capture)])

        running = start_bridge(mount=host, prefix=MOUNT, **options)
        for name in ("home", "work", "tmp"):
            (tmp_path / name).mkdir()
        return Rig(running, fake, captures[0], trap, tmp_path, trap_start=len(trap.seen))

    return make


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    """The bridge mounted at /api/v2/aibridge in a Starlette host on
    loopback, the fake upstream behind it, and an empty HOME and working
    directory for the client."""
    return make_rig()
