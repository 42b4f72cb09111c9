"""Merging a client's configuration into the file the user already has.

The client kit (``python -m aibridge_asgi configure ... --write``) must not
throw away a user's settings: the bridge's part is merged into the existing
file, key by key, and everything else stays as it was.

* TOML (Codex's ``config.toml``...) is edited with ``tomlkit``, which keeps
  comments, key order and formatting (``pip install aibridge_asgi[kit]``).
* JSON is merged by key; the user's keys keep their order and the bridge's
  new keys come after them. A JSON file with comments (JSONC) cannot be
  merged this way: :class:`MergeError` says so.

Tables (objects) are merged recursively; any other value the bridge sets
replaces the user's.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

__all__ = ["MergeError", "diff", "merge_config"]


class MergeError(Exception):
    """The existing file cannot be merged (not valid, or no TOML editor)."""


def merge_config(old: str, new: str, syntax: str) -> str:
    """``old`` with every setting of ``new`` put in, in ``syntax``
    (``"toml"`` or ``"json"``)."""
    if syntax == "toml":
        return _merge_toml(old, new)
    if syntax == "json":
        return _merge_json(old, new)
    raise MergeError(f"cannot merge {syntax!r} files")


def diff(old: str, new: str, name: str) -> str:
    """A unified diff from ``old`` to ``new``, for the user to read."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"{name} (now)",
        tofile=f"{name} (after)",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _merge_toml(old: str, new: str) -> str:
    try:
        import tomlkit
        from tomlkit.exceptions import TOMLKitError
    except ImportError:
        raise MergeError(
            "merging into an existing TOML file needs tomlkit (pip install 'aibridge_asgi[kit]')"
        ) from None
    try:
        document = tomlkit.parse(old)
    except TOMLKitError as exc:
        raise MergeError(f"the existing file is not valid TOML ({exc})") from None
    _merge_into(document, tomlkit.parse(new).unwrap())
    return tomlkit.dumps(document)


def _merge_json(old: str, new: str) -> str:
    try:
        current = json.loads(old) if old.strip() else {}
    except ValueError as exc:
        raise MergeError(
            f"the existing file is not plain JSON ({exc}); comments cannot be kept"
        ) from None
    if not isinstance(current, dict):
        raise MergeError("the existing file does not hold a JSON object")
    _merge_into(current, json.loads(new))
    return json.dumps(current, indent=2, ensure_ascii=False) + "\n"


def _merge_into(target: Any, settings: dict[str, Any]) -> None:
    for key, value in settings.items():
        existing = target.get(key) if hasattr(target, "get") else None
        if isinstance(value, dict) and hasattr(existing, "items"):
            _merge_into(existing, value)
        else:
            target[key] = value
