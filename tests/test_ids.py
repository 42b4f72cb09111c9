"""Interception ids: well-formed, unique, and not shared with a forked child."""

from __future__ import annotations

import os
import uuid

from aibridge_asgi.ids import new_id


def test_ids_are_version_4_uuids_in_canonical_form() -> None:
    ids = [new_id() for _ in range(5000)]  # several batches
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_ids_use_every_random_bit() -> None:
    """Each of the 122 random bits takes both values over a few hundred ids
    (a slicing mistake would pin some of them)."""
    ones = 0
    zeros = 0
    for _ in range(400):
        n = uuid.UUID(new_id()).int
        ones |= n
        zeros |= ~n
    fixed = (0xF << 76) | (0x3 << 62)  # the version and variant bits
    random_bits = ((1 << 128) - 1) & ~fixed
    assert ones & random_bits == random_bits
    assert zeros & random_bits == random_bits


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    new_id()  # the parent has a batch in hand
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, "".join(new_id() for _ in range(4)).encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 4096).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = "".join(new_id() for _ in range(4))
    assert len(child) == len(parent) == 4 * 36
    assert {child[i : i + 36] for i in range(0, 144, 36)}.isdisjoint(
        {parent[i : i + 36] for i in range(0, 144, 36)}
    )
