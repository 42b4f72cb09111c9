"""Which AI client sent a request, and how to point a client at the bridge.

Both read the one table of clients, :data:`aibridge_asgi.client_table.CLIENTS`:

- :func:`detect_client` names the client of a request, for the records, and
  finds its session id;
- :func:`configure` turns a client's entry into ready-to-use configuration
  for one host: environment lines, a config file, commands or UI settings,
  with the bridge's URL in the form that client wants.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import _syntax
from .client_table import (
    API_NAMES,
    CLIENTS,
    USER_KEY_PLACEHOLDER,
    Api,
    Client,
    Concat,
    Slot,
    Template,
    Wire,
)
from .keys import DEFAULT_BYOK_HEADER

__all__ = [
    "CLIENTS",
    "ClientConfig",
    "ClientNotSupported",
    "UnknownClient",
    "bridge_urls",
    "configure",
    "detect_client",
    "find_client",
]


class UnknownClient(LookupError):
    """No entry of the table has that name."""


class ClientNotSupported(ValueError):
    """The client cannot use the bridge; the message says why."""


def _fold(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def find_client(name: str) -> Client:
    """The entry whose key, alias, name or recorded name is ``name``
    (ignoring case, spaces and punctuation)."""
    wanted = _fold(name)
    for client in CLIENTS:
        names = (client.key, client.name, client.recorded, *client.aliases)
        if wanted in {_fold(n) for n in names}:
            return client
    keys = ", ".join(c.key for c in CLIENTS)
    raise UnknownClient(f"unknown client {name!r}; known: {keys}")


# -- configuration ------------------------------------------------------------


def bridge_urls(base_url: str) -> dict[Slot, str]:
    """Every URL form clients take, from the bridge's mount URL
    (``https://host/api/v2/aibridge``)."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base URL must be http(s)://host/...: {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base URL must have no query or fragment: {base_url!r}")
    base = base_url.strip().rstrip("/")
    for suffix in ("/anthropic/v1", "/anthropic", "/openai/v1", "/openai", "/gemini"):
        if base.endswith(suffix):
            raise ValueError(
                f"base URL is the bridge's mount URL: drop {suffix!r} from {base_url!r}"
            )
    return {
        Slot.ANTHROPIC: base + "/anthropic",
        Slot.ANTHROPIC_V1: base + "/anthropic/v1",
        Slot.OPENAI: base + "/openai",
        Slot.OPENAI_V1: base + "/openai/v1",
        Slot.CHAT_COMPLETIONS: base + "/openai/v1/chat/completions",
        Slot.RESPONSES: base + "/openai/v1/responses",
        Slot.GEMINI: base + "/gemini",
    }


def _fill(template: Template, values: Mapping[Slot, str]) -> Any:
    """The template with its slots replaced by ``values`` (plain data out)."""
    if isinstance(template, Slot):
        return values[template]
    if isinstance(template, Concat):
        return "".join(values[p] if isinstance(p, Slot) else p for p in template.parts)
    if isinstance(template, list):
        return [_fill(item, values) for item in template]
    if isinstance(template, dict):
        return {_fill(k, values): _fill(v, values) for k, v in template.items()}
    return template


def _text(template: Template, values: Mapping[Slot, str]) -> str:
    filled = _fill(template, values)
    if not isinstance(filled, str):
        raise TypeError(f"expected text, got {filled!r}")
    return filled


@dataclass(frozen=True)
class ClientConfig:
    """Ready-to-use configuration of one client for one host and token.

    Values are as the client must see them (``env``, ``commands`` hold raw
    strings); ``env_lines``, ``command_lines`` and ``file_content`` are
    written in their syntax, quoted and escaped.
    """

    client: str
    name: str
    api: Api
    protocol: str
    model: str
    env: tuple[tuple[str, str], ...]
    #: Where the file goes, ``~`` for the user's home; None when there is none.
    file_path: str | None
    file_syntax: str | None
    file_content: str | None
    commands: tuple[tuple[str, ...], ...]
    #: Settings to enter in the client's UI: (label, value).
    settings: tuple[tuple[str, str], ...]
    #: How to start the client afterwards; empty when it is not a program.
    run: tuple[str, ...]
    notes: tuple[str, ...]
    verified_by: tuple[str, ...]
    #: The bring-your-own-key form: the token in an extra header, the
    #: user's own key where the client sends its key.
    byok: bool = False

    @property
    def env_vars(self) -> dict[str, str]:
        return dict(self.env)

    @property
    def env_lines(self) -> tuple[str, ...]:
        """``export NAME='value'`` lines for a POSIX shell."""
        return tuple(_syntax.export_line(k, v) for k, v in self.env)

    @property
    def command_lines(self) -> tuple[str, ...]:
        return tuple(_syntax.shell_line(argv) for argv in self.commands)

    @property
    def run_line(self) -> str:
        return _syntax.shell_line(self.run) if self.run else ""

    def file_location(self, home: str | os.PathLike[str] | None = None) -> Path | None:
        """The file's path, ``~`` resolved against ``home`` (default: the
        user's home directory)."""
        if self.file_path is None:
            return None
        if self.file_path.startswith("~/"):
            root = Path(home) if home is not None else Path.home()
            return root / self.file_path[2:]
        return Path(self.file_path)

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON output."""
        return {
            "client": self.client,
            "name": self.name,
            "api": self.api,
            "protocol": self.protocol,
            "model": self.model,
            "env": dict(self.env),
            "file": (
                {"path": self.file_path, "syntax": self.file_syntax, "content": self.file_content}
                if self.file_path
                else None
            ),
            "commands": [list(argv) for argv in self.commands],
            "settings": [{"label": k, "value": v} for k, v in self.settings],
            "run": list(self.run),
            "notes": list(self.notes),
            "verified_by": list(self.verified_by),
            "byok": self.byok,
        }

    def render(self) -> str:
        """The whole configuration as text to read (and paste from)."""
        title = f"{self.name}: {API_NAMES[self.api]} API ({self.protocol}), model {self.model}"
        if self.byok:
            title += ", bring your own key"
        blocks = [f"# {title}"]
        if self.file_path:
            blocks.append(f"# file {self.file_path}\n{self.file_content}".rstrip("\n"))
        if self.env:
            blocks.append("# environment\n" + "\n".join(self.env_lines))
        if self.commands:
            blocks.append("# run once\n" + "\n".join(self.command_lines))
        if self.settings:
            blocks.append(
                "# in the client's settings\n"
                + "\n".join(f"#   {label}: {value}" for label, value in self.settings)
            )
        if self.run:
            blocks.append("# then\n" + self.run_line)
        if self.notes:
            blocks.append("\n".join(f"# note: {note}" for note in self.notes))
        return "\n\n".join(blocks) + "\n"


def configure(
    client: str | Client,
    base_url: str,
    token: str,
    *,
    api: Api | None = None,
    model: str | None = None,
    byok: bool = False,
    byok_header: str = DEFAULT_BYOK_HEADER,
    user_key: str | None = None,
    websocket: bool = False,
    protocol: str | None = None,
) -> ClientConfig:
    """The configuration that points ``client`` at the bridge mounted at
    ``base_url`` (e.g. ``https://host/api/v2/aibridge``) with the host token
    ``token``, for ``api`` (default: the client's first) and ``model``
    (default: the entry's). ``protocol`` picks among the setups of one API
    for clients that speak several (``"chat"`` or ``"responses"`` for
    OpenAI; default: the first listed).

    With ``byok``, the bring-your-own-key form: the host token goes in the
    header ``byok_header`` and the user's own provider key (``user_key``, or
    a placeholder) where the client sends its key.

    ``websocket=True`` also turns on the client's Responses-over-WebSocket
    transport (Codex's ``supports_websockets``); it is off by default, since
    it needs a server (and any proxy in front) that passes WebSocket
    upgrades. ``ValueError`` for a client without such a switch.

    Raises :class:`UnknownClient`, :class:`ClientNotSupported` (with the
    reason; also for ``byok`` with a client that cannot send an extra
    header), or ``ValueError`` for a bad base URL or an API the client
    cannot use.
    """
    entry = client if isinstance(client, Client) else find_client(client)
    if not entry.supported:
        raise ClientNotSupported(f"{entry.name} cannot use the bridge: {entry.unsupported}")
    setup = entry.setup(api, protocol)
    values = bridge_urls(base_url)
    values[Slot.TOKEN] = token
    values[Slot.MODEL] = model or setup.model
    values[Slot.BYOK_HEADER] = byok_header
    values[Slot.USER_KEY] = user_key or USER_KEY_PLACEHOLDER
    file, env, notes, verified_by = setup.file, setup.env, setup.notes, setup.verified_by
    if byok:
        if setup.byok is None:
            raise ClientNotSupported(
                f"{entry.name} ({API_NAMES[setup.api]} API) has no known way to send an extra"
                " header, so it cannot bring its own key; use the gateway token alone"
            )
        extra = tuple(n.replace(DEFAULT_BYOK_HEADER, byok_header) for n in setup.byok.notes)
        file = setup.byok.file or setup.file
        env, notes, verified_by = setup.byok.env, (*extra, *notes), setup.byok.verified_by
    if websocket and (setup.websocket is None or file is None):
        raise ValueError(f"{entry.name} has no setting for the Responses API over WebSocket")
    file_content = None
    if file is not None:
        data = _fill(file.content, values)
        if websocket and setup.websocket is not None:
            path, value = setup.websocket
            place = data
            for key in path[:-1]:
                place = place.setdefault(key, {})
            place[path[-1]] = _fill(value, values)
            notes = (WEBSOCKET_NOTE, *notes)
            # The suite runs the WebSocket switch with the gateway token alone.
            verified_by = () if byok else setup.websocket_verified_by
        if file.syntax == "toml":
            file_content = _syntax.dump_toml(data)
        elif file.syntax == "yaml":
            file_content = _syntax.dump_yaml(data)
        else:
            file_content = _syntax.dump_json(data)
    return ClientConfig(
        client=entry.key,
        name=entry.name,
        api=setup.api,
        protocol=setup.protocol,
        model=values[Slot.MODEL],
        env=tuple((name, _text(value, values)) for name, value in env),
        file_path=file.path if file else None,
        file_syntax=file.syntax if file else None,
        file_content=file_content,
        commands=tuple(tuple(_text(arg, values) for arg in argv) for argv in setup.commands),
        settings=tuple((label, _text(value, values)) for label, value in setup.settings),
        run=tuple(_text(arg, values) for arg in setup.run),
        notes=(*notes, *entry.notes),
        verified_by=verified_by,
        byok=byok,
    )


#: Said of every configuration with the WebSocket transport on.
WEBSOCKET_NOTE = (
    "Responses over WebSocket: one socket per session carries every turn"
    " (docs/apis/openai-responses.md). The host's server must accept WebSocket"
    " upgrades (uvicorn with `websockets` installed) and so must any proxy in front;"
    " otherwise the client falls back to HTTP."
)


# -- detection ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    user_agents: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    prompts: tuple[str, ...]
    sessions: tuple[str, ...]
    body_sessions: tuple[str, ...]
    metadata_session: bool


def _rule(client: Client, wire: Wire) -> _Rule:
    return _Rule(
        client.recorded,
        tuple(p.lower() for p in wire.user_agent_prefixes),
        tuple((h.lower(), v.lower()) for h, v in wire.header_markers),
        wire.system_prompt_prefixes,
        tuple(h.lower() for h in wire.session_headers),
        wire.session_body_fields,
        wire.session_in_metadata_user_id,
    )


def _rules(generic: bool) -> tuple[_Rule, ...]:
    return tuple(
        _rule(c, c.wire) for c in CLIENTS if c.wire is not None and c.wire.generic is generic
    )


_SPECIFIC = _rules(generic=False)
_BY_PROMPT = tuple(r for r in _SPECIFIC if r.prompts)
_GENERIC = _rules(generic=True)
#: Every header a rule looks at: most requests carry none of them.
_MARK_HEADERS = frozenset(name for rule in (*_SPECIFIC, *_GENERIC) for name, _ in rule.headers)
#: Every User-Agent prefix of each group: one test rules most requests out.
_SPECIFIC_AGENTS = tuple(agent for rule in _SPECIFIC for agent in rule.user_agents)
_GENERIC_AGENTS = tuple(agent for rule in _GENERIC for agent in rule.user_agents)


def _session_from_user_id(body: Mapping[str, Any] | None) -> str | None:
    if not body:
        return None
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        return None
    user_id = metadata.get("user_id")
    if not isinstance(user_id, str):
        return None
    if user_id.startswith("{"):
        try:
            parsed = json.loads(user_id)
        except ValueError:
            return None
        session = parsed.get("session_id") if isinstance(parsed, dict) else None
        return session if isinstance(session, str) and session else None
    # Older Claude Code: "user_<hash>_account_<uuid>_session_<uuid>".
    _, sep, session = user_id.rpartition("_session_")
    return session if sep and session else None


def _text_start(content: Any) -> str:
    """The start of a system prompt given as a string or a list of text parts."""
    if isinstance(content, str):
        return content[:200]
    if isinstance(content, list) and content:
        first = content[0]
        if isinstance(first, dict) and isinstance(first.get("text"), str):
            return str(first["text"])[:200]
    return ""


def _system_prompt_start(body: Mapping[str, Any] | None) -> str:
    """How the system prompt begins, in any of the three bridged APIs:
    Messages ``system``, Responses ``instructions``, or a leading
    ``system``/``developer`` message (Chat Completions, Responses input)."""
    if not body:
        return ""
    for key in ("system", "instructions"):
        start = _text_start(body.get(key))
        if start:
            return start
    for key in ("messages", "input"):
        items = body.get(key)
        first = items[0] if isinstance(items, list) and items else None
        if isinstance(first, dict) and first.get("role") in ("system", "developer"):
            return _text_start(first.get("content"))
    return ""


def _marked(rule: _Rule, user_agent: str, headers: Mapping[str, str] | None) -> bool:
    """``headers`` is None when it has none of the rules' headers."""
    return user_agent.startswith(rule.user_agents) or (
        headers is not None
        and any(
            name in headers and headers[name].lower().startswith(prefix)
            for name, prefix in rule.headers
        )
    )


def _found(
    rule: _Rule, headers: Mapping[str, str], body: Mapping[str, Any] | None
) -> tuple[str, str | None]:
    for name in rule.sessions:
        value = headers.get(name)
        if value:
            return rule.name, value
    if body:
        for field in rule.body_sessions:
            value = body.get(field)
            if isinstance(value, str) and value:
                return rule.name, value
    if rule.metadata_session:
        return rule.name, _session_from_user_id(body)
    return rule.name, None


def detect_client(
    headers: Mapping[str, str], body: Mapping[str, Any] | None = None
) -> tuple[str, str | None]:
    """Return ``(client name, session id or None)``.

    ``headers`` maps lower-case header names to values; ``body`` is the parsed
    request body when there is one (it is read, never parsed again: a few
    field look-ups). How the system prompt begins wins, being the client's
    own words (User-Agents get borrowed: Qwen Code sends Claude Code's);
    then a client's own User-Agent or header; then an SDK's User-Agent.
    Unrecognised clients are ``"unknown"`` (their User-Agent is still in
    :attr:`~aibridge_asgi.InterceptionStarted.user_agent`).
    """
    start = _system_prompt_start(body) if _BY_PROMPT else ""
    if start:
        for rule in _BY_PROMPT:
            if start.startswith(rule.prompts):
                return _found(rule, headers, body)
    user_agent = headers.get("user-agent", "").lower()
    marks = None if _MARK_HEADERS.isdisjoint(headers) else headers
    if marks is not None or user_agent.startswith(_SPECIFIC_AGENTS):
        for rule in _SPECIFIC:
            if _marked(rule, user_agent, marks):
                return _found(rule, headers, body)
    if marks is not None or user_agent.startswith(_GENERIC_AGENTS):
        for rule in _GENERIC:
            if _marked(rule, user_agent, marks):
                return _found(rule, headers, body)
    return "unknown", None
