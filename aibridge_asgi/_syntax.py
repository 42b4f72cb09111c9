"""Writing values in the syntaxes client configuration uses: POSIX shell
lines, JSON and TOML files. Any string may come in (a token is opaque), so
each writer escapes what its syntax needs and nothing is left to chance."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["dump_json", "dump_toml", "export_line", "shell_line"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def export_line(name: str, value: str) -> str:
    """``export NAME=value`` with the value quoted for a POSIX shell."""
    if not _ENV_NAME.match(name):
        raise ValueError(f"not an environment variable name: {name!r}")
    return f"export {name}={shlex.quote(value)}"


def shell_line(argv: Iterable[str]) -> str:
    """A command line that runs ``argv`` as is in a POSIX shell."""
    return " ".join(shlex.quote(arg) for arg in argv)


def dump_json(value: Any) -> str:
    """Indented JSON, non-ASCII kept as is, ending with a newline."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _toml_string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


def dump_toml(table: Mapping[str, Any]) -> str:
    """A TOML document: a table's plain keys first, then its sub-tables as
    ``[dotted.headers]``, ending with a newline."""
    lines: list[str] = []

    def write(current: Mapping[str, Any], path: tuple[str, ...]) -> None:
        plain = [(k, v) for k, v in current.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in current.items() if isinstance(v, Mapping)]
        if path and (plain or not tables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_toml_key(part) for part in path) + "]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in plain)
        for key, sub in tables:
            write(sub, (*path, key))

    write(table, ())
    return "\n".join(lines) + "\n"
