"""Writing values in the syntaxes client configuration uses: POSIX shell
lines, JSON and TOML files. Any string may come in (a token is opaque), so
each writer escapes what its syntax needs and nothing is left to chance."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["dump_json", "dump_toml", "dump_yaml", "export_line", "shell_line"]

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


def _table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def dump_toml(table: Mapping[str, Any]) -> str:
    """A TOML document: a table's plain keys first, then its sub-tables as
    ``[dotted.headers]`` and its lists of tables as ``[[dotted.headers]]``,
    ending with a newline."""
    lines: list[str] = []

    def write(current: Mapping[str, Any], path: tuple[str, ...], item: bool = False) -> None:
        plain = [
            (k, v) for k, v in current.items() if not isinstance(v, Mapping) and not _table_array(v)
        ]
        tables = [(k, v) for k, v in current.items() if isinstance(v, Mapping)]
        arrays = [(k, v) for k, v in current.items() if _table_array(v)]
        header = ".".join(_toml_key(part) for part in path)
        if item or (path and (plain or not (tables or arrays))):
            if lines:
                lines.append("")
            lines.append(f"[[{header}]]" if item else f"[{header}]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in plain)
        for key, sub in tables:
            write(sub, (*path, key))
        for key, items in arrays:
            for element in items:
                write(element, (*path, key), item=True)

    write(table, ())
    return "\n".join(lines) + "\n"


_YAML_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _yaml_string(value)
    raise TypeError(f"cannot write {type(value).__name__} as a YAML scalar")


def _yaml_printable(code: int) -> bool:
    """Whether YAML lets the character stand as itself in a quoted scalar."""
    return (
        0x20 <= code <= 0x7E
        or code == 0x85
        or 0xA0 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def _yaml_string(text: str) -> str:
    """A YAML double-quoted scalar: every character survives, escaped where
    YAML wants it (``\\xXX``, ``\\uXXXX``, ``\\UXXXXXXXX``)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif _yaml_printable(code) and code != 0x85:
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02X}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04X}")
        else:
            out.append(f"\\U{code:08X}")
    out.append('"')
    return "".join(out)


#: Plain words YAML (1.1, as many readers still do) takes for booleans or null.
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})


def _yaml_key(key: str) -> str:
    plain = _YAML_PLAIN_KEY.match(key) and key.lower() not in _YAML_WORDS
    return key if plain else _yaml_string(key)


def dump_yaml(value: Mapping[str, Any]) -> str:
    """A block-style YAML document of mappings, lists and scalars (strings
    always double-quoted), ending with a newline."""
    lines: list[str] = []

    def write(node: Any, lead: str, rest: str) -> None:
        # ``lead`` starts the node's first line, ``rest`` its other lines.
        if isinstance(node, Mapping | list) and not node:
            lines.append(lead + _yaml_block(node))
            return
        if isinstance(node, Mapping):
            for i, (key, item) in enumerate(node.items()):
                start = lead if i == 0 else rest
                if isinstance(item, Mapping | list) and item:
                    lines.append(f"{start}{_yaml_key(key)}:")
                    write(item, rest + "  ", rest + "  ")
                else:
                    lines.append(f"{start}{_yaml_key(key)}: {_yaml_block(item)}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                start = lead if i == 0 else rest
                if isinstance(item, Mapping | list) and item:
                    write(item, start + "- ", rest + "  ")
                else:
                    lines.append(f"{start}- {_yaml_block(item)}")
        else:
            lines.append(lead + _yaml_scalar(node))

    write(value, "", "")
    return "\n".join(lines) + "\n"


def _yaml_block(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _yaml_scalar(value)
