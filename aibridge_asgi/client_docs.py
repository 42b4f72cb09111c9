"""docs/clients.md, generated from the table of clients.

``python -m aibridge_asgi docs-clients --output docs/clients.md`` writes it;
a test fails when the committed page differs from :func:`render`. The
snippets are :func:`aibridge_asgi.clients.configure`'s output for a
placeholder host and token, so the page shows exactly what the command
and the example host's "Connect your tools" page produce.
"""

from __future__ import annotations

import re

from .client_table import API_NAMES, CLIENTS, TOKEN_ENV, Api, Client, Setup, Wire
from .clients import ClientConfig, configure

__all__ = ["DOCS_BASE_URL", "DOCS_TOKEN", "render"]

DOCS_BASE_URL = "https://<host>/api/v2/aibridge"
DOCS_TOKEN = "<token>"

_HEADER = """\
<!-- Generated from aibridge_asgi/client_table.py by
     `python -m aibridge_asgi docs-clients --output docs/clients.md`:
     edit the table, not this page. -->

# Clients

Two things on this page: which AI clients work through the bridge and how to
set each one up ([compatibility](#compatibility), [configuration](#configuring-a-client)),
how a user brings their own provider key ([BYOK](#bring-your-own-key)),
and how the bridge tells clients apart in its records
([client detection](#client-detection)). All of it comes from one table in
the library, `aibridge_asgi.client_table.CLIENTS`: adding a client is adding
an entry there.

Throughout, `<host>` is your server and `<token>` is the user's **host token**
(whatever your `resolve_token` accepts). The bridge is mounted at
`https://<host>/api/v2/aibridge`; clients differ in the form of base URL
they want, because they differ in what they append:

- `.../anthropic`: Anthropic clients that append `/v1/messages`;
- `.../anthropic/v1`: clients built on the AI SDK, which append `/messages`;
- `.../openai/v1`: OpenAI clients, which append `/chat/completions` or `/responses`;
- `.../openai`: Goose, which appends `v1/chat/completions` itself;
- the full endpoint (`.../openai/v1/chat/completions`) for VS Code;
- `.../gemini`: Gemini clients, which append `/v1beta/models/...`.

## Compatibility

"Verified" means the pinned client program runs a prompt through the bridge
in [`tests/clients/`](../tests/clients/README.md), part of every test run,
with exactly the configuration shown below: it prints the fake upstream's
answer, the upstream sees the provider key and never the host token, and
the records hold the actor, the client name, its session id where it sends
one, the prompt, the token counts and a `completed` end. "Documented" setups
were not run here; each section says why.
"""

_CONFIGURING = f"""\
## Configuring a client

Each section below shows what this command gives, for a placeholder host
and token:

```sh
python -m aibridge_asgi configure codex --base-url https://<host>/api/v2/aibridge --token <token>
python -m aibridge_asgi configure opencode --api openai --base-url ... --token ... --write
python -m aibridge_asgi clients      # the table
```

`--api anthropic|openai|gemini` picks the API for clients that speak several
(default: the first listed), `--protocol chat|responses` the protocol for clients that
speak both of OpenAI's (default: the first listed), `--model` the model,
`--format json` gives it as data and `--format env` only the `export` lines.
`--write` writes the client's config file. An existing file is merged into,
not replaced: TOML with `tomlkit` (the `[kit]` extra), keeping the user's
comments, order and other settings; JSON key by key (a JSON file with
comments, or a YAML file, can only be replaced). The change is shown as a
diff and made only when you say yes (or with `--force`); the old file is
kept as `<file>.bak`. Config files hold no token: those clients read it from
`{TOKEN_ENV}`, set in the environment lines. Values are quoted for a POSIX
shell and escaped for JSON, TOML or YAML, whatever characters the token holds.

`--websocket` (`websocket=True` in Python) turns on the client's
Responses-over-WebSocket transport, where its entry has a switch for it:
today Codex (`supports_websockets = true` on its model provider). It is
opt-in because it needs the host's ASGI server, and any proxy in front, to
pass WebSocket upgrades (uvicorn does once `websockets` is installed);
without that Codex falls back to HTTP. OpenAI's SDKs open the same socket
when asked (Python `client.responses.connect()`, Node `ResponsesWS`), and
the pinned OpenCode and Factory droid binaries ship code for it too, but
their setups here use HTTP and were not run over a WebSocket. See
[Responses over WebSocket](apis/openai-responses.md#responses-over-websocket).

From Python, `configure()` returns the same as data:

```python
from aibridge_asgi.clients import configure

config = configure("codex", "https://ai.example.com/api/v2/aibridge", "tok-123")
assert config.file_path == "~/.codex/config.toml"
assert 'base_url = "https://ai.example.com/api/v2/aibridge/openai/v1"' in config.file_content
assert config.env_lines == ("export {TOKEN_ENV}=tok-123",)

config = configure("codex", "https://ai.example.com/api/v2/aibridge", "tok-123", websocket=True)
assert "supports_websockets = true" in config.file_content

config = configure("claude-code", "https://ai.example.com/api/v2/aibridge", "it's")
assert config.env_vars["ANTHROPIC_BASE_URL"] == "https://ai.example.com/api/v2/aibridge/anthropic"
assert "export ANTHROPIC_AUTH_TOKEN='it'\\"'\\"'s'" in config.env_lines
```
"""

_BYOK = """\
## Bring your own key

A user may pay with their own provider credential (an API key, or a Claude
subscription's sign-in) while the gateway still authenticates and records
them: the client sends the **host token** in `X-AIBridge-Token` (the header
`create_bridge(byok_header=...)` names) and its own credential where it
normally sends its key, which the bridge forwards upstream unchanged (see
[configuration](configuration.md#bring-your-own-key)). That needs a client
that can send an extra header. `configure(..., byok=True)` and
`python -m aibridge_asgi configure <client> --byok` give this form; each
client's section above shows it after the usual one.

| client | API | bring your own key |
|---|---|---|
{rows}
"""

_DETECTION = """\
## Client detection

`InterceptionStarted.client` and `client_session_id` come from the same
table: each entry's wire markers (`Wire`). A request is matched first on how
its system prompt begins: a client's own words, where User-Agents get
borrowed (Qwen Code sends Claude Code's `claude-cli/` User-Agent and `x-app:
cli` on Anthropic; pi, Continue and the Copilot CLI send their SDKs'). Then
on a client's own `User-Agent` prefix (case-insensitive) or header marker;
last on an SDK's `User-Agent`, which any program built on that SDK sends
too. The system prompt looked at is the Messages `system` field, the
Responses `instructions`, or a first `system`/`developer` message (Chat
Completions, Responses `input`), read from the body the bridge has already
parsed (a few look-ups; no second parse). The session id comes from the
client's session header, else from a body field it puts its session in
(the Responses `prompt_cache_key` of Qwen Code, Droid and the Copilot CLI).
Requests that match nothing are recorded as `"unknown"`, with the complete
records of any other request and their `User-Agent` kept in
`InterceptionStarted.user_agent`, so that a host can see what to add.

The markers were checked against the requests the real clients sent:
`tests/clients/` stores them (`AIBRIDGE_CAPTURE_FIXTURES=1`) in
`tests/clients/captured/`, and `tests/test_client_detection.py` runs
detection on each.

| client (as recorded) | recognised by | session id from |
|---|---|---|
{rows}

```python
from aibridge_asgi.clients import detect_client

name, session = detect_client(
    {{"user-agent": "claude-cli/2.1.328 (external, sdk-cli)", "x-claude-code-session-id": "abc"}}
)
assert (name, session) == ("Claude Code", "abc")

name, session = detect_client(
    {{"user-agent": "claude-cli/2.1.328"}},
    {{"metadata": {{"user_id": '{{"session_id": "s-1", "device_id": "d"}}'}}}},
)
assert (name, session) == ("Claude Code", "s-1")

name, session = detect_client(
    {{"user-agent": "opencode/1.18.33 ai-sdk/provider-utils/4.0.46", "x-session-id": "ses_1"}}
)
assert (name, session) == ("OpenCode", "ses_1")

name, session = detect_client(
    {{"user-agent": "ai-sdk/openai-compatible/3.0.37 runtime/bun/1.3.13"}},
    {{"messages": [{{"role": "system", "content": "You are Cline, an AI coding agent."}}]}},
)
assert (name, session) == ("Cline", None)

name, session = detect_client(
    {{"user-agent": "claude-cli/0.24.4 (external, cli)", "x-app": "cli"}},
    {{"system": [{{"type": "text", "text": "You are Qwen Code, a non-interactive CLI agent"}}]}},
)
assert (name, session) == ("Qwen Code", None)

name, session = detect_client(
    {{"user-agent": "QwenCode/0.24.4 (linux; x64)"}},
    {{"prompt_cache_key": "qwen-code:74e476a1-67e1-44ac-abff-07340d8c72fc"}},
)
assert (name, session) == ("Qwen Code", "qwen-code:74e476a1-67e1-44ac-abff-07340d8c72fc")

assert detect_client({{"user-agent": "curl/8.0"}}) == ("unknown", None)
```
"""


def anchor(title: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def _code(items: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"`{item}`" for item in items)


def _short_test(test_id: str) -> str:
    """``test_claude_code_prompt`` from ``tests/clients/x.py::test_claude_code_prompt[A]``."""
    return test_id.rsplit("::", 1)[-1].split("[", 1)[0]


def _api_cell(client: Client, api: Api) -> str:
    setups = [s for s in client.setups if s.api == api]
    if not setups or not client.supported:
        return "no"
    return "yes (" + ", ".join(s.protocol for s in setups) + ")"


def _status(client: Client) -> str:
    if not client.supported:
        return "not possible"
    verified = [s for s in client.setups if s.verified_by]
    if not verified:
        return "documented"
    tests = list(dict.fromkeys(_short_test(t) for s in verified for t in s.verified_by))
    version = f" ({client.version})" if client.version else ""
    status = f"verified{version} by {_code(tests)}"
    if len(verified) < len(client.setups):
        done = " and ".join(API_NAMES[s.api] for s in verified)
        rest = " and ".join(API_NAMES[s.api] for s in client.setups if not s.verified_by)
        status = f"{done} {status}; {rest} documented"
    return status


def _compatibility_table() -> str:
    rows = [
        "| client | Anthropic API | OpenAI API | Gemini API | status |",
        "|---|---|---|---|---|",
    ]
    for client in CLIENTS:
        link = f"[{client.name}](#{anchor(client.name)})"
        cells = (
            link,
            _api_cell(client, "anthropic"),
            _api_cell(client, "openai"),
            _api_cell(client, "gemini"),
        )
        rows.append("| " + " | ".join((*cells, _status(client))) + " |")
    return "\n".join(rows)


def _fenced(syntax: str, text: str) -> str:
    return f"```{syntax}\n{text.rstrip()}\n```"


def _any_verified(client: Client) -> bool:
    return any(s.verified_by for s in client.setups)


def _setup_section(client: Client, setup: Setup, config: ClientConfig) -> list[str]:
    parts = [f"#### {API_NAMES[setup.api]} API ({setup.protocol})"]
    if config.file_path and config.file_content and config.file_syntax:
        parts.append(f"In `{config.file_path}`:")
        parts.append(_fenced(config.file_syntax, config.file_content))
    if config.env_lines:
        parts.append("In the environment:")
        parts.append(_fenced("sh", "\n".join(config.env_lines)))
    if config.command_lines:
        parts.append("Once:")
        parts.append(_fenced("sh", "\n".join(config.command_lines)))
    if config.settings:
        parts.append("In the client's settings:")
        parts.append("\n".join(f"- {label}: `{value}`" for label, value in config.settings))
    if config.run_line:
        parts.append(f"Then: `{config.run_line}`.")
    parts.extend(setup.notes)
    if setup.verified_by:
        parts.append("Verified by " + _code(list(setup.verified_by)) + ".")
    elif _any_verified(client):
        parts.append(f"Documented only: {client.untested or 'not run here'}.")
    if setup.byok is not None:
        parts.extend(_byok_section(client, setup))
    if setup.websocket is not None:
        key = ".".join(setup.websocket[0])
        text = (
            f"Responses over WebSocket (opt-in): `configure {client.key} --websocket`"
            f" (or `websocket=True`) also sets `{key}`. "
        )
        if setup.websocket_verified_by:
            text += "Verified by " + _code(list(setup.websocket_verified_by)) + "."
        parts.append(text)
    return parts


def _byok_section(client: Client, setup: Setup) -> list[str]:
    assert setup.byok is not None
    config = configure(client, DOCS_BASE_URL, DOCS_TOKEN, api=setup.api, byok=True)
    parts = ["Bring your own key:"]
    if setup.byok.file is not None and config.file_content and config.file_syntax:
        parts.append(f"In `{config.file_path}`:")
        parts.append(_fenced(config.file_syntax, config.file_content))
    parts.append("In the environment:")
    parts.append(_fenced("sh", "\n".join(config.env_lines)))
    parts.extend(setup.byok.notes)
    if setup.byok.verified_by:
        parts.append("Verified by " + _code(list(setup.byok.verified_by)) + ".")
    return parts


def _byok_rows() -> str:
    rows = []
    for client in CLIENTS:
        if not client.supported:
            continue
        for setup in client.setups:
            if setup.api == "gemini":
                cell = "no: the bridge has no bring-your-own-key form on Gemini routes yet"
            elif setup.byok is None:
                cell = "no: no known way to send an extra header"
            elif setup.byok.verified_by:
                cell = "yes, verified"
            else:
                cell = "yes, documented"
            rows.append(f"| {client.name} | {API_NAMES[setup.api]} | {cell} |")
    return "\n".join(rows)


def _client_section(client: Client) -> str:
    parts = [f"### {client.name}"]
    if not client.supported:
        parts.append(f"Not possible: {client.unsupported}")
        return "\n\n".join(parts)
    apis = " and ".join(f"{API_NAMES[s.api]} ({s.protocol})" for s in client.setups)
    key = f"`configure {client.key}`"
    parts.append(f"{key}: {apis}." if len(client.setups) > 1 else f"{key}: {apis} only.")
    if not _any_verified(client):
        parts.append(f"Documented only: {client.untested or 'not run here'}.")
    for setup in client.setups:
        config = configure(client, DOCS_BASE_URL, DOCS_TOKEN, api=setup.api)
        parts.extend(_setup_section(client, setup, config))
    parts.extend(client.notes)
    return "\n\n".join(parts)


def _recognised(wire: Wire) -> str:
    found = []
    if wire.user_agent_prefixes:
        found.append("UA " + _code(list(wire.user_agent_prefixes)))
    for header, prefix in wire.header_markers:
        found.append(f"header `{header}: {prefix}…`" if prefix else f"header `{header}`")
    if wire.system_prompt_prefixes:
        found.append("a system prompt starting " + _code(list(wire.system_prompt_prefixes)))
    return "; ".join(found) + (" (an SDK: checked last)" if wire.generic else "")


def _session(wire: Wire) -> str:
    found = ["header " + _code([h]) for h in wire.session_headers]
    found.extend(f"body field `{f}`" for f in wire.session_body_fields)
    if wire.session_in_metadata_user_id:
        found.append(
            "`metadata.user_id` in the body (a JSON string with `session_id`,"
            " or the older `..._session_<id>` form)"
        )
    return ", else ".join(found) or "none"


def _detection_rows() -> str:
    return "\n".join(
        f"| {client.recorded} | {_recognised(client.wire)} | {_session(client.wire)} |"
        for client in CLIENTS
        if client.wire is not None
    )


def render() -> str:
    """docs/clients.md as the table says it."""
    sections = [
        _HEADER.rstrip(),
        _compatibility_table(),
        _CONFIGURING.rstrip(),
        *(_client_section(client) for client in CLIENTS),
        _BYOK.format(rows=_byok_rows()).rstrip(),
        _DETECTION.format(rows=_detection_rows()).rstrip(),
    ]
    return "\n\n".join(sections) + "\n"
