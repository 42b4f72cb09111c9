"""The known AI clients: one entry each, the single source of truth.

Everything about a client lives in its :class:`Client` entry: its name, how
the bridge recognises it on the wire (and where its session id is), how to
point it at the bridge (per API: environment variables, a config file,
commands to run, or settings to type into its UI), whether that was run
through the bridge by the compatibility suite (``tests/clients``), and why it
cannot be used when it cannot.

Readers: :func:`aibridge_asgi.clients.detect_client` (records),
:func:`aibridge_asgi.clients.configure` (ready-to-use configuration, the
``python -m aibridge_asgi`` command, the example host's "Connect your
tools" page) and :mod:`aibridge_asgi.client_docs` (docs/clients.md).
Adding a client is adding one entry to :data:`CLIENTS`.

Templates hold :class:`Slot` values where the host's details go; they are
filled by ``configure`` and only then written in their file's syntax, so
every value is escaped where it lands.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, TypeAlias

from .keys import DEFAULT_BYOK_HEADER

__all__ = [
    "API_NAMES",
    "CLIENTS",
    "TOKEN_ENV",
    "USER_KEY_PLACEHOLDER",
    "Api",
    "Byok",
    "Client",
    "Concat",
    "ConfigFile",
    "Setup",
    "Slot",
    "Template",
    "Wire",
]

Api = Literal["anthropic", "openai", "gemini"]
#: How the APIs are named in text.
API_NAMES: dict[Api, str] = {"anthropic": "Anthropic", "openai": "OpenAI", "gemini": "Gemini"}

#: The variable that holds the host token for clients whose config files
#: can refer to the environment (so that those files hold no secret).
TOKEN_ENV = "AIBRIDGE_TOKEN"

#: What stands for the user's own provider key in a BYOK configuration when
#: ``configure`` is not given one.
USER_KEY_PLACEHOLDER = "<your own provider key>"


class Slot(enum.Enum):
    """A value that ``configure`` fills in. The base URL forms differ in
    what the client appends itself."""

    #: ``<mount>/anthropic``: the client appends ``/v1/messages``.
    ANTHROPIC = "anthropic base URL"
    #: ``<mount>/anthropic/v1``: AI SDK clients append ``/messages``.
    ANTHROPIC_V1 = "anthropic base URL with /v1"
    #: ``<mount>/openai``: Goose appends ``v1/chat/completions`` itself.
    OPENAI = "openai host"
    #: ``<mount>/openai/v1``: the client appends ``/chat/completions``, ``/responses``.
    OPENAI_V1 = "openai base URL"
    #: The full Chat Completions endpoint, for clients that want one.
    CHAT_COMPLETIONS = "chat completions endpoint"
    #: The full Responses endpoint.
    RESPONSES = "responses endpoint"
    #: ``<mount>/gemini``: Gemini clients append ``/v1beta/models/...``.
    GEMINI = "gemini base URL"
    TOKEN = "host token"
    MODEL = "model"
    #: The header that carries the host token in the BYOK form (``X-AIBridge-Token``).
    BYOK_HEADER = "BYOK header"
    #: The user's own provider key (BYOK form).
    USER_KEY = "user's own key"


@dataclass(frozen=True, slots=True)
class Concat:
    """Text made of literal parts and slots, e.g. ``custom:<model>``."""

    parts: tuple[str | Slot, ...]


#: A value in a template: literal, a slot, or JSON/TOML structure of them.
Template: TypeAlias = (
    "str | int | bool | Slot | Concat | list[Template] | dict[str | Slot, Template]"
)

ANTHROPIC = Slot.ANTHROPIC
ANTHROPIC_V1 = Slot.ANTHROPIC_V1
OPENAI = Slot.OPENAI
OPENAI_V1 = Slot.OPENAI_V1
CHAT_COMPLETIONS = Slot.CHAT_COMPLETIONS
RESPONSES = Slot.RESPONSES
GEMINI = Slot.GEMINI
TOKEN = Slot.TOKEN
MODEL = Slot.MODEL
BYOK_HEADER = Slot.BYOK_HEADER
USER_KEY = Slot.USER_KEY


def _fold(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def join(*parts: str | Slot) -> Concat:
    return Concat(parts)


@dataclass(frozen=True, slots=True)
class Wire:
    """How a client is recognised on the wire, and where its session id is.

    A request is matched first on how its system prompt begins (a client's
    own words: User-Agents get borrowed, as Qwen Code sends Claude Code's),
    then on ``user_agent_prefixes`` (case-insensitive) and
    ``header_markers`` of the specific clients, and last on the markers of
    ``generic`` entries: SDKs, whose User-Agent any program built on them
    sends too.
    """

    user_agent_prefixes: tuple[str, ...] = ()
    #: (header, value prefix) pairs; an empty prefix means "header present".
    header_markers: tuple[tuple[str, str], ...] = ()
    #: How the system prompt begins (case-sensitive).
    system_prompt_prefixes: tuple[str, ...] = ()
    #: Headers that carry the session id, the first one present wins.
    session_headers: tuple[str, ...] = ()
    #: Else top-level string fields of the body that carry it (e.g. the
    #: Responses API's ``prompt_cache_key``), the first one present wins.
    session_body_fields: tuple[str, ...] = ()
    #: Else the session is in the body's ``metadata.user_id`` (Claude Code).
    session_in_metadata_user_id: bool = False
    generic: bool = False


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A config file: where it goes (``~`` is the user's home) and what it holds."""

    path: str
    syntax: Literal["json", "toml", "yaml"]
    content: dict[str | Slot, Template]


@dataclass(frozen=True)
class Byok:
    """The bring-your-own-key form of a setup: the host token in an extra
    header (:data:`Slot.BYOK_HEADER`), the user's own provider credential
    where the client normally sends its key. ``env`` and ``file`` replace
    the setup's own; ``notes`` are added to them."""

    env: tuple[tuple[str, Template], ...] = ()
    file: ConfigFile | None = None
    notes: tuple[str, ...] = ()
    verified_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Setup:
    """How to point a client at one of the bridge's APIs."""

    api: Api
    #: Which of the provider's APIs the client speaks there.
    protocol: str
    model: str
    env: tuple[tuple[str, Template], ...] = ()
    file: ConfigFile | None = None
    #: Commands to run once (argv templates).
    commands: tuple[tuple[Template, ...], ...] = ()
    #: Settings to enter in the client's UI: (label, value).
    settings: tuple[tuple[str, Template], ...] = ()
    #: How to start the client afterwards (argv template), if it is a program.
    run: tuple[Template, ...] = ()
    notes: tuple[str, ...] = ()
    #: Compatibility-suite tests that run this setup through the bridge
    #: (pytest node ids); empty means documented but not run here.
    verified_by: tuple[str, ...] = ()
    #: How the client brings its own key; None when it cannot send an
    #: extra header (or nobody has shown how).
    byok: Byok | None = None
    #: The client's switch for the Responses API over WebSocket: a key path
    #: in its config file and the value that turns it on (``configure(...,
    #: websocket=True)``); None when the client has no such switch.
    websocket: tuple[tuple[str, ...], Template] | None = None
    #: Suite tests that run the WebSocket switch through the bridge.
    websocket_verified_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Client:
    """One AI client."""

    #: What ``configure`` and ``python -m aibridge_asgi configure`` take.
    key: str
    name: str
    #: The client name in records (``InterceptionStarted.client``).
    recorded_as: str = ""
    wire: Wire | None = None
    setups: tuple[Setup, ...] = ()
    #: Why it cannot use the bridge; None when it can.
    unsupported: str | None = None
    #: Why the compatibility suite does not run it, when it does not.
    untested: str | None = None
    notes: tuple[str, ...] = ()
    #: What the suite pins, as ``npm:<package>`` (tests/clients/package.json)
    #: or ``pypi:<package>`` (tests/clients/requirements.txt), and its version.
    pinned: str | None = None
    version: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def recorded(self) -> str:
        return self.recorded_as or self.name

    @property
    def supported(self) -> bool:
        return self.unsupported is None and bool(self.setups)

    @property
    def apis(self) -> tuple[Api, ...]:
        return tuple(dict.fromkeys(s.api for s in self.setups))

    def setup(self, api: Api | None = None, protocol: str | None = None) -> Setup:
        """The setup for ``api`` (default: the first one listed) and, where
        the client speaks more than one protocol of that API, ``protocol``
        (``"chat"``, ``"responses"``...: the start of the setup's protocol,
        ignoring case, spaces and punctuation; default: the first)."""
        wanted = _fold(protocol) if protocol else ""
        for candidate in self.setups:
            if (api is None or candidate.api == api) and _fold(candidate.protocol).startswith(
                wanted
            ):
                return candidate
        if protocol and any(api is None or s.api == api for s in self.setups):
            spoken = ", ".join(s.protocol for s in self.setups if api is None or s.api == api)
            raise ValueError(f"{self.name} does not speak {protocol!r} there (it speaks {spoken})")
        usable = ", ".join(self.apis) or "none"
        raise ValueError(f"{self.name} cannot use the {api} API (usable: {usable})")


#: The models a setup names unless told otherwise: the ones the
#: compatibility suite runs with.
CLAUDE_MODEL = "claude-sonnet-4-5"
GPT_MODEL = "gpt-5"
GEMINI_MODEL = "gemini-2.5-pro"
#: Where the prompt goes in a ``run`` command.
PROMPT = "your prompt"
SUITE = "tests/clients/"
#: AI SDK-based CLIs (OpenCode, Kilo) read the token from the environment this way.
AI_SDK_TOKEN = "{env:" + TOKEN_ENV + "}"


#: The user's own key in an AI SDK-based CLI's config file.
AI_SDK_USER_KEY = "{env:AIBRIDGE_PROVIDER_KEY}"
USER_KEY_ENV = "AIBRIDGE_PROVIDER_KEY"


def _ai_sdk_provider(
    base: Slot, extra: dict[str | Slot, Template] | None = None, *, byok: bool = False
) -> Template:
    options: dict[str | Slot, Template] = {"baseURL": base, "apiKey": AI_SDK_TOKEN}
    if byok:
        options = {
            "baseURL": base,
            "apiKey": AI_SDK_USER_KEY,
            "headers": {BYOK_HEADER: AI_SDK_TOKEN},
        }
    return {**(extra or {}), "options": options, "models": {MODEL: {"name": MODEL}}}


_AI_SDK_BYOK_NOTE = (
    "BYOK: the provider's `options.headers` carry the gateway token; `apiKey` is your own"
    f" key, read from `{USER_KEY_ENV}`."
)


def _factory(provider: str, base: Slot) -> ConfigFile:
    model: dict[str | Slot, Template] = {
        "model": MODEL,
        "displayName": join(MODEL, " (AI Bridge)"),
        "provider": provider,
        "baseUrl": base,
        "apiKey": "${" + TOKEN_ENV + "}",
        "maxOutputTokens": 8192,
    }
    return ConfigFile("~/.factory/settings.json", "json", {"customModels": [model]})


def _sdk_byok(base: tuple[str, Template], key_env: str, code: str) -> Byok:
    """The BYOK form of an SDK: no variable adds a header, so the code does."""
    shown = code.format(
        header=repr(DEFAULT_BYOK_HEADER).replace("'", '"'),
        token=repr(TOKEN_ENV).replace("'", '"'),
        bare=TOKEN_ENV,
    )
    return Byok(
        env=(base, (key_env, USER_KEY), (TOKEN_ENV, TOKEN)),
        notes=(
            f"BYOK: `{key_env}` is your own key; the SDK reads no variable for extra"
            f" headers, so pass the gateway token in code: `{shown}`.",
        ),
    )


#: The tool round trips of the suite, by test file and the parameter of the
#: setup they run (tests/clients/harness.py ``read_tool_round_trip``).
_TOOL_TESTS = {
    ("test_pi.py", "messages"): "test_pi_runs_its_read_tool",
    ("test_qwen_code.py", "chat"): "test_qwen_code_runs_its_read_file_tool",
    ("test_continue.py", "messages"): "test_continue_cli_runs_its_read_tool",
    ("test_copilot_cli.py", "messages"): "test_copilot_cli_runs_its_view_tool",
    ("test_nanocoder.py", "openai"): "test_nanocoder_runs_its_read_file_tool",
    ("test_mistral_vibe.py", "responses"): "test_mistral_vibe_runs_its_read_file_tool",
}


def _verified(file: str, test: str, param: str) -> tuple[str, ...]:
    """The suite's test of a setup, and its tool round trip if it has one."""
    tool = _TOOL_TESTS.get((file, param))
    return (
        SUITE + f"{file}::{test}[{param}]",
        *((SUITE + f"{file}::{tool}",) if tool else ()),
    )


def _pi(api: str, base: Slot) -> ConfigFile:
    provider: dict[str | Slot, Template] = {
        "baseUrl": base,
        "api": api,
        # pi reads a key given as the name of an environment variable from it.
        "apiKey": TOKEN_ENV,
        "models": [{"id": MODEL}],
    }
    return ConfigFile("~/.pi/agent/models.json", "json", {"providers": {"aibridge": provider}})


def _pi_setup(api: Api, protocol: str, model: str, pi_api: str, base: Slot, test: str) -> Setup:
    return Setup(
        api,
        protocol,
        model=model,
        file=_pi(pi_api, base),
        env=((TOKEN_ENV, TOKEN), ("PI_OFFLINE", "1")),
        run=("pi", "-p", "--model", join("aibridge/", MODEL), PROMPT),
        verified_by=_verified("test_pi.py", "test_pi_print", test),
    )


def _qwen_setup(api: Api, protocol: str, model: str, auth_type: str, test: str) -> Setup:
    prefix = "ANTHROPIC" if api == "anthropic" else "OPENAI"
    return Setup(
        api,
        protocol,
        model=model,
        env=(
            (f"{prefix}_BASE_URL", ANTHROPIC if api == "anthropic" else OPENAI_V1),
            (f"{prefix}_API_KEY", TOKEN),
            (f"{prefix}_MODEL", MODEL),
        ),
        run=("qwen", "--auth-type", auth_type, PROMPT),
        verified_by=_verified("test_qwen_code.py", "test_qwen_code_prompt", test),
    )


def _continue(provider: str, base: Slot) -> ConfigFile:
    model: dict[str | Slot, Template] = {
        "name": join(MODEL, " (AI Bridge)"),
        "provider": provider,
        "model": MODEL,
        "apiBase": base,
        "apiKey": "${{ secrets." + TOKEN_ENV + " }}",
        "roles": ["chat", "edit", "apply"],
    }
    return ConfigFile(
        "~/.continue/config.yaml",
        "yaml",
        {"name": "AI Bridge", "version": "1.0.0", "schema": "v1", "models": [model]},
    )


def _continue_setup(api: Api, protocol: str, model: str, base: Slot, test: str) -> Setup:
    return Setup(
        api,
        protocol,
        model=model,
        file=_continue(api, base),
        env=((TOKEN_ENV, TOKEN), ("CONTINUE_CLI_ENABLE_TELEMETRY", "0")),
        run=("cn", "-p", PROMPT),
        verified_by=_verified("test_continue.py", "test_continue_cli_print", test),
    )


def _copilot_setup(api: Api, protocol: str, model: str, test: str) -> Setup:
    wire: tuple[tuple[str, Template], ...] = ()
    if protocol == "Responses":
        wire = (("COPILOT_PROVIDER_WIRE_API", "responses"),)
    return Setup(
        api,
        protocol,
        model=model,
        env=(
            ("COPILOT_PROVIDER_BASE_URL", ANTHROPIC if api == "anthropic" else OPENAI_V1),
            ("COPILOT_PROVIDER_TYPE", api),
            *wire,
            ("COPILOT_PROVIDER_API_KEY", TOKEN),
            ("COPILOT_MODEL", MODEL),
            ("COPILOT_OFFLINE", "true"),
        ),
        run=("copilot", "-p", PROMPT, "-s", "--allow-all-tools", "--disable-client-telemetry"),
        verified_by=_verified("test_copilot_cli.py", "test_copilot_cli_prompt", test),
    )


def _nanocoder_setup(api: Api, protocol: str, model: str, base: Slot, test: str) -> Setup:
    provider: dict[str | Slot, Template] = {
        "name": "aibridge",
        "baseUrl": base,
        "apiKey": "${" + TOKEN_ENV + "}",
        "models": [MODEL],
    }
    if api == "anthropic":
        provider["sdkProvider"] = "anthropic"
    return Setup(
        api,
        protocol,
        model=model,
        file=ConfigFile(
            "~/.config/nanocoder/agents.config.json",
            "json",
            {"nanocoder": {"providers": [provider]}},
        ),
        env=((TOKEN_ENV, TOKEN),),
        run=(
            *("nanocoder", "--provider", "aibridge", "--model", MODEL),
            *("run", "--trust-directory", PROMPT),
        ),
        verified_by=_verified("test_nanocoder.py", "test_nanocoder_run", test),
    )


def _vibe_setup(api: Api, protocol: str, model: str, style: str, base: Slot, test: str) -> Setup:
    provider: dict[str | Slot, Template] = {
        "name": "aibridge",
        "api_base": base,
        "api_key_env_var": TOKEN_ENV,
        "api_style": style,
        "backend": "generic",
    }
    config: dict[str | Slot, Template] = {
        "active_model": MODEL,
        "providers": [provider],
        "models": [{"name": MODEL, "provider": "aibridge", "alias": MODEL}],
    }
    return Setup(
        api,
        protocol,
        model=model,
        file=ConfigFile("~/.vibe/config.toml", "toml", config),
        env=((TOKEN_ENV, TOKEN),),
        run=("vibe", "-p", PROMPT, "--trust"),
        verified_by=_verified("test_mistral_vibe.py", "test_mistral_vibe_prompt", test),
    )


CLIENTS: tuple[Client, ...] = (
    Client(
        "claude-code",
        "Claude Code",
        wire=Wire(
            user_agent_prefixes=("claude-cli/", "claude-code/"),
            header_markers=(("X-Claude-Code-Session-Id", ""),),
            session_headers=("X-Claude-Code-Session-Id",),
            session_in_metadata_user_id=True,
        ),
        setups=(
            Setup(
                "anthropic",
                "Messages",
                model=CLAUDE_MODEL,
                env=(
                    ("ANTHROPIC_BASE_URL", ANTHROPIC),
                    ("ANTHROPIC_AUTH_TOKEN", TOKEN),
                    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
                ),
                run=("claude",),
                notes=(
                    "`ANTHROPIC_AUTH_TOKEN` goes out as `Authorization: Bearer`;"
                    " `ANTHROPIC_API_KEY` works too (as `X-Api-Key`), though an interactive"
                    " session may ask once to approve a key it finds in the environment.",
                    "`CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` is optional: it stops"
                    " telemetry and update checks, which have no use through the bridge.",
                ),
                verified_by=(
                    SUITE + "test_claude_code.py::test_claude_code_prompt[ANTHROPIC_AUTH_TOKEN]",
                    SUITE + "test_claude_code.py::test_claude_code_prompt[ANTHROPIC_API_KEY]",
                    SUITE + "test_claude_code.py::test_claude_code_runs_its_read_tool",
                ),
                byok=Byok(
                    env=(
                        ("ANTHROPIC_BASE_URL", ANTHROPIC),
                        ("ANTHROPIC_CUSTOM_HEADERS", join(BYOK_HEADER, ": ", TOKEN)),
                        ("ANTHROPIC_API_KEY", USER_KEY),
                        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
                    ),
                    notes=(
                        "BYOK: `ANTHROPIC_CUSTOM_HEADERS` carries the gateway token;"
                        " `ANTHROPIC_API_KEY` is your own Anthropic key. Signed in with a"
                        " Claude subscription (`/login`) instead, leave `ANTHROPIC_API_KEY`"
                        " unset: Claude Code then sends its own OAuth token, which the"
                        " bridge forwards as sent with its `anthropic-beta` header (the"
                        " subscription sign-in is not run here).",
                    ),
                    verified_by=(SUITE + "test_claude_code.py::test_claude_code_byok",),
                ),
            ),
        ),
        notes=("Tool use included: the suite has it run its `Read` tool through the bridge.",),
        pinned="npm:@anthropic-ai/claude-code",
        version="2.1.332",
        aliases=("claude",),
    ),
    Client(
        "codex",
        "Codex CLI",
        recorded_as="Codex",
        wire=Wire(
            user_agent_prefixes=("codex_exec/", "codex_cli_rs/", "codex_", "codex/"),
            header_markers=(("originator", "codex"),),
            session_headers=("session-id", "session_id"),
        ),
        setups=(
            Setup(
                "openai",
                "Responses",
                model=GPT_MODEL,
                file=ConfigFile(
                    "~/.codex/config.toml",
                    "toml",
                    {
                        "model": MODEL,
                        "model_provider": "aibridge",
                        "model_providers": {
                            "aibridge": {
                                "name": "AI Bridge",
                                "base_url": OPENAI_V1,
                                "env_key": TOKEN_ENV,
                                "wire_api": "responses",
                            }
                        },
                    },
                ),
                env=((TOKEN_ENV, TOKEN),),
                run=("codex",),
                notes=(
                    "A custom model provider on the Responses API; `CODEX_HOME` moves"
                    " `~/.codex`. The same keys work on the command line"
                    " (`-c model_provider=aibridge ...`).",
                    "The suite also passes `-c features.enable_request_compression=false`"
                    " (bodies stay plain JSON) and `-c features.plugins=false` (no plugin"
                    " sync from GitHub).",
                ),
                verified_by=(
                    SUITE + "test_codex.py::test_codex_exec_prompt",
                    SUITE + "test_codex.py::test_codex_runs_its_shell_tool",
                ),
                byok=Byok(
                    file=ConfigFile(
                        "~/.codex/config.toml",
                        "toml",
                        {
                            "model": MODEL,
                            "model_provider": "aibridge",
                            "model_providers": {
                                "aibridge": {
                                    "name": "AI Bridge",
                                    "base_url": OPENAI_V1,
                                    "env_key": "OPENAI_API_KEY",
                                    "env_http_headers": {BYOK_HEADER: TOKEN_ENV},
                                    "wire_api": "responses",
                                }
                            },
                        },
                    ),
                    env=((TOKEN_ENV, TOKEN), ("OPENAI_API_KEY", USER_KEY)),
                    notes=(
                        "BYOK: `env_http_headers` sends the gateway token from"
                        f" `{TOKEN_ENV}`; `OPENAI_API_KEY` is your own OpenAI key.",
                    ),
                    verified_by=(SUITE + "test_codex.py::test_codex_byok",),
                ),
                websocket=(("model_providers", "aibridge", "supports_websockets"), True),
                websocket_verified_by=(
                    SUITE + "test_codex.py::test_codex_over_websocket_prompt_and_tool_call",
                ),
            ),
        ),
        notes=("Tool use included: the suite has it run its shell tool through the bridge.",),
        pinned="npm:@openai/codex",
        version="0.171.0",
    ),
    Client(
        "opencode",
        "OpenCode",
        wire=Wire(
            user_agent_prefixes=("opencode/",),
            header_markers=(("originator", "opencode"),),
            session_headers=("X-Session-Id",),
        ),
        setups=(
            Setup(
                "anthropic",
                "Messages",
                model=CLAUDE_MODEL,
                file=ConfigFile(
                    "~/.config/opencode/opencode.json",
                    "json",
                    {
                        "$schema": "https://opencode.ai/config.json",
                        "provider": {"anthropic": _ai_sdk_provider(ANTHROPIC_V1)},
                    },
                ),
                env=((TOKEN_ENV, TOKEN),),
                run=("opencode", "run", "-m", join("anthropic/", MODEL), PROMPT),
                verified_by=(SUITE + "test_opencode.py::test_opencode_run[anthropic]",),
                byok=Byok(
                    file=ConfigFile(
                        "~/.config/opencode/opencode.json",
                        "json",
                        {
                            "$schema": "https://opencode.ai/config.json",
                            "provider": {"anthropic": _ai_sdk_provider(ANTHROPIC_V1, byok=True)},
                        },
                    ),
                    env=((TOKEN_ENV, TOKEN), (USER_KEY_ENV, USER_KEY)),
                    notes=(_AI_SDK_BYOK_NOTE,),
                    verified_by=(SUITE + "test_opencode.py::test_opencode_byok",),
                ),
            ),
            Setup(
                "openai",
                "Responses",
                model=GPT_MODEL,
                file=ConfigFile(
                    "~/.config/opencode/opencode.json",
                    "json",
                    {
                        "$schema": "https://opencode.ai/config.json",
                        "provider": {"openai": _ai_sdk_provider(OPENAI_V1)},
                    },
                ),
                env=((TOKEN_ENV, TOKEN),),
                run=("opencode", "run", "-m", join("openai/", MODEL), PROMPT),
                verified_by=(SUITE + "test_opencode.py::test_opencode_run[openai]",),
                byok=Byok(
                    file=ConfigFile(
                        "~/.config/opencode/opencode.json",
                        "json",
                        {
                            "$schema": "https://opencode.ai/config.json",
                            "provider": {"openai": _ai_sdk_provider(OPENAI_V1, byok=True)},
                        },
                    ),
                    env=((TOKEN_ENV, TOKEN), (USER_KEY_ENV, USER_KEY)),
                    notes=(_AI_SDK_BYOK_NOTE,),
                ),
            ),
        ),
        notes=(
            "A project's `opencode.json` (or the file `OPENCODE_CONFIG` names) takes the"
            " same content. List the models you use: with the model catalog fetch off"
            " (`OPENCODE_DISABLE_MODELS_FETCH=1`) OpenCode knows only those.",
            "Its search tools want `rg` on `PATH` (else it downloads ripgrep).",
        ),
        pinned="npm:opencode-ai",
        version="1.18.33",
    ),
    Client(
        "factory",
        "Factory (Droid)",
        recorded_as="Factory",
        wire=Wire(
            user_agent_prefixes=("factory-cli/",),
            # Its session id, on the Responses API only.
            session_body_fields=("prompt_cache_key",),
        ),
        setups=(
            Setup(
                "anthropic",
                "Messages",
                model=CLAUDE_MODEL,
                file=_factory("anthropic", ANTHROPIC),
                env=((TOKEN_ENV, TOKEN),),
                run=("droid", "exec", "-m", join("custom:", MODEL), PROMPT),
                verified_by=(SUITE + "test_factory.py::test_factory_droid_exec[anthropic]",),
            ),
            Setup(
                "openai",
                "Responses",
                model=GPT_MODEL,
                file=_factory("openai", OPENAI_V1),
                env=((TOKEN_ENV, TOKEN),),
                run=("droid", "exec", "-m", join("custom:", MODEL), PROMPT),
                notes=(
                    'Provider `"generic-chat-completion-api"` speaks Chat Completions'
                    " instead (not run here).",
                ),
                verified_by=(SUITE + "test_factory.py::test_factory_droid_exec[openai]",),
            ),
        ),
        notes=(
            "Bring-your-own-key custom models: no Factory sign-in is needed. Droid still"
            " calls Factory's API and telemetry hosts; it goes on when they are refused."
            " Its session id shows only on the Responses API, as `prompt_cache_key`.",
            "The suite runs the Linux x64 build straight from its platform package (npm"
            " `@factory/cli-linux-x64`, program `bin/droid`): the `@factory/cli` release"
            " of the same version names a platform package missing from the registry.",
        ),
        pinned="npm:@factory/cli-linux-x64",
        version="0.225.2",
        aliases=("droid",),
    ),
    Client(
        "goose",
        "Goose",
        wire=Wire(
            user_agent_prefixes=("goose/",),
            header_markers=(("goose-session-id", ""),),
            session_headers=("goose-session-id",),
        ),
        setups=(
            Setup(
                "anthropic",
                "Messages",
                model=CLAUDE_MODEL,
                env=(
                    ("GOOSE_PROVIDER", "anthropic"),
                    ("GOOSE_MODEL", MODEL),
                    ("ANTHROPIC_HOST", ANTHROPIC),
                    ("ANTHROPIC_API_KEY", TOKEN),
                ),
                run=("goose", "session"),
            ),
            Setup(
                "openai",
                "Chat Completions",
                model=GPT_MODEL,
                env=(
                    ("GOOSE_PROVIDER", "openai"),
                    ("GOOSE_MODEL", MODEL),
                    ("OPENAI_HOST", OPENAI),
                    ("OPENAI_API_KEY", TOKEN),
                ),
                run=("goose", "session"),
                notes=(
                    "Goose adds `OPENAI_BASE_PATH` (default `v1/chat/completions`) to"
                    " `OPENAI_HOST` itself, so its host is the mount without `/v1`.",
                ),
            ),
        ),
        untested="its CLI ships as a binary on GitHub releases, which the suite's"
        " machine cannot download",
        notes=("Goose sends its session as `goose-session-id`, which the records pick up.",),
    ),
    Client(
        "cline",
        "Cline",
        wire=Wire(
            user_agent_prefixes=("cline/", "cline-cli/"),
            # The Cline CLI 3 sends only the AI SDK's User-Agent.
            system_prompt_prefixes=("You are Cline,",),
        ),
        setups=(
            Setup(
                "openai",
                "Chat Completions",
                model=GPT_MODEL,
                commands=(
                    (
                        *("cline", "auth", "--provider", "openai", "--apikey", TOKEN),
                        *("--modelid", MODEL, "--baseurl", OPENAI_V1),
                    ),
                ),
                run=("cline", PROMPT),
                notes=(
                    "`cline auth` stores the provider in Cline's settings; the VS Code"
                    ' extension takes the same values (API Provider "OpenAI Compatible").',
                ),
                verified_by=(SUITE + "test_cline.py::test_cline_run",),
            ),
            Setup(
                "anthropic",
                "Messages",
                model=CLAUDE_MODEL,
                settings=(
                    ("API Provider", "Anthropic"),
                    ("Use custom base URL", ANTHROPIC),
                    ("API Key", TOKEN),
                    ("Model", MODEL),
                ),
                notes=(
                    "VS Code extension only: the Cline CLI 3 keeps a base URL for OpenAI-style"
                    " providers only (`cline auth` says so; asserted by"
                    f" `{SUITE}test_cline.py::test_cline_anthropic_provider_takes_no_base_url`).",
                ),
            ),
        ),
        untested="an editor extension cannot run in the suite",
        notes=("Cline sends no session id.",),
        pinned="npm:cline",
        version="3.0.65",
    ),
    Client(
        "kilo-code",
        "Kilo Code",
        wire=Wire(
            user_agent_prefixes=("kilo-code/", "kilocode/", "kilo/"),
            header_markers=(("originator", "kilo-code"), ("X-KiloCode-TaskId", "")),
            # The Kilo CLI 7 sends its session as X-Session-Id.
            session_headers=("X-KiloCode-TaskId", "X-Session-Id"),
        ),
        setups=(
            Setup(
                "openai",
                "Chat Completions",
                model=GPT_MODEL,
                file=ConfigFile(
                    "~/.config/kilo/kilo.json",
                    "json",
                    {
                        "provider": {
                            "aibridge": _ai_sdk_provider(
                                OPENAI_V1,
                                {"npm": "@ai-sdk/openai-compatible", "name": "AI Bridge"},
                            )
                        }
                    },
                ),
                env=((TOKEN_ENV, TOKEN),),
                run=("kilo", "run", "-m", join("aibridge/", MODEL), PROMPT),
                verified_by=(SUITE + "test_kilo_code.py::test_kilo_code_run[openai]",),
                byok=Byok(
                    file=ConfigFile(
                        "~/.config/kilo/kilo.json",
                        "json",
                        {
                            "provider": {
                                "aibridge": _ai_sdk_provider(
                                    OPENAI_V1,
                                    {"npm": "@ai-sdk/openai-compatible", "name": "AI Bridge"},
                                    byok=True,
                                )
                            }
                        },
                    ),
                    env=((TOKEN_ENV, TOKEN), (USER_KEY_ENV, USER_KEY)),
                    notes=(_AI_SDK_BYOK_NOTE,),
                ),
            ),
            Setup(
                "anthropic",
                "Messages",
                model=CLAUDE_MODEL,
                file=ConfigFile(
                    "~/.config/kilo/kilo.json",
                    "json",
                    {"provider": {"anthropic": _ai_sdk_provider(ANTHROPIC_V1)}},
                ),
                env=((TOKEN_ENV, TOKEN),),
                run=("kilo", "run", "-m", join("anthropic/", MODEL), PROMPT),
                verified_by=(SUITE + "test_kilo_code.py::test_kilo_code_run[anthropic]",),
                byok=Byok(
                    file=ConfigFile(
                        "~/.config/kilo/kilo.json",
                        "json",
                        {"provider": {"anthropic": _ai_sdk_provider(ANTHROPIC_V1, byok=True)}},
                    ),
                    env=((TOKEN_ENV, TOKEN), (USER_KEY_ENV, USER_KEY)),
                    notes=(_AI_SDK_BYOK_NOTE,),
                ),
            ),
        ),
        notes=(
            "The Kilo CLI also reads a project's `kilo.json`, or the file `KILO_CONFIG`"
            " names. It asks its own cloud for models whatever the settings, and goes on"
            " when refused.",
            'Its VS Code extension takes the same values (API Provider "OpenAI Compatible",'
            ' or "Anthropic" with a custom base URL); not run here, an editor extension'
            " cannot run in the suite.",
        ),
        pinned="npm:@kilocode/cli",
        version="7.7.7",
        aliases=("kilo",),
    ),
    Client(
        "pi",
        "pi",
        wire=Wire(
            # pi sends its SDKs' User-Agents (Anthropic/JS, OpenAI/JS).
            system_prompt_prefixes=("You are an expert coding assistant operating inside pi",),
            session_headers=("session_id",),
            session_body_fields=("prompt_cache_key",),
        ),
        setups=(
            _pi_setup(
                "anthropic", "Messages", CLAUDE_MODEL, "anthropic-messages", ANTHROPIC, "messages"
            ),
            _pi_setup(
                "openai", "Chat Completions", GPT_MODEL, "openai-completions", OPENAI_V1, "chat"
            ),
            _pi_setup("openai", "Responses", GPT_MODEL, "openai-responses", OPENAI_V1, "responses"),
        ),
        notes=(
            "The coding agent `pi` (npm `@mariozechner/pi-coding-agent`). `PI_OFFLINE=1`"
            " stops its update checks and install telemetry, which have no use through the"
            " bridge. Tool use included: the suite has it run its `read` tool.",
        ),
        pinned="npm:@mariozechner/pi-coding-agent",
        version="0.73.1",
        aliases=("pi-coding-agent",),
    ),
    Client(
        "qwen-code",
        "Qwen Code",
        wire=Wire(
            user_agent_prefixes=("QwenCode/",),
            # On Anthropic it sends `claude-cli/<its version>` and `x-app: cli`:
            # its system prompts tell it from Claude Code (the agent's, and the
            # memory-extraction subagent's it runs after each prompt).
            system_prompt_prefixes=(
                "You are Qwen Code",
                "You are now acting as the managed memory extraction subagent",
            ),
            session_body_fields=("prompt_cache_key",),
        ),
        setups=(
            _qwen_setup("openai", "Chat Completions", GPT_MODEL, "openai", "chat"),
            _qwen_setup("openai", "Responses", GPT_MODEL, "openai-responses", "responses"),
            _qwen_setup("anthropic", "Messages", CLAUDE_MODEL, "anthropic", "messages"),
        ),
        notes=(
            "`qwen <prompt>` runs one prompt; without one it starts interactively."
            " `--auth-type` may instead be `security.auth.selectedType` in"
            " `~/.qwen/settings.json`, where the suite also turns off its update checks"
            " and usage statistics (`general.enableAutoUpdate`,"
            " `privacy.usageStatisticsEnabled`, `telemetry.enabled`: false).",
        ),
        pinned="npm:@qwen-code/qwen-code",
        version="0.24.4",
        aliases=("qwen",),
    ),
    Client(
        "continue",
        "Continue CLI",
        recorded_as="Continue",
        wire=Wire(
            # Its User-Agents are its libraries' (`ls/JS`, `node-fetch`).
            system_prompt_prefixes=("You are an agent in the Continue CLI",),
        ),
        setups=(
            _continue_setup("openai", "Responses", GPT_MODEL, OPENAI_V1, "responses"),
            _continue_setup("anthropic", "Messages", CLAUDE_MODEL, ANTHROPIC_V1, "messages"),
        ),
        notes=(
            "The Continue CLI `cn` (npm `@continuedev/cli`) without a Continue sign-in:"
            " the model is a local config file, whose `${{ secrets.NAME }}` it reads"
            " from the environment. It sends no session id. With the `openai` provider it"
            " speaks the Responses API to `gpt-5` (and kept doing so in the suite with"
            " `useResponsesApi: false`).",
        ),
        pinned="npm:@continuedev/cli",
        version="1.5.47",
        aliases=("cn", "continue-cli"),
    ),
    Client(
        "copilot-cli",
        "GitHub Copilot CLI",
        recorded_as="Copilot CLI",
        wire=Wire(
            # It sends its SDKs' User-Agents (with `x-initiator` and
            # `x-interaction-type` headers of Copilot's own).
            system_prompt_prefixes=("You are the GitHub Copilot CLI",),
            session_body_fields=("prompt_cache_key",),
        ),
        setups=(
            _copilot_setup("openai", "Chat Completions", GPT_MODEL, "chat"),
            _copilot_setup("openai", "Responses", GPT_MODEL, "responses"),
            _copilot_setup("anthropic", "Messages", CLAUDE_MODEL, "messages"),
        ),
        notes=(
            "The `copilot` command (npm `@github/copilot`) with a bring-your-own-key"
            " provider: no GitHub sign-in is needed, and `COPILOT_OFFLINE=true` keeps it"
            " off GitHub's services (telemetry, updates, web tools) altogether. Its session"
            " shows only on Responses, as `prompt_cache_key`.",
        ),
        pinned="npm:@github/copilot",
        version="1.0.102",
        aliases=("github-copilot-cli",),
    ),
    Client(
        "grok-cli",
        "Grok CLI",
        wire=Wire(system_prompt_prefixes=("You are Grok CLI",)),
        setups=(
            Setup(
                "openai",
                "Chat Completions",
                model=GPT_MODEL,
                env=(
                    ("GROK_BASE_URL", OPENAI_V1),
                    ("GROK_API_KEY", TOKEN),
                    ("GROK_MODEL", MODEL),
                ),
                run=("grok", "-p", PROMPT),
                verified_by=(
                    SUITE + "test_grok_cli.py::test_grok_cli_prompt",
                    SUITE + "test_grok_cli.py::test_grok_cli_runs_its_view_file_tool",
                ),
            ),
        ),
        notes=(
            "The community Grok CLI (npm `@vibe-kit/grok-cli`), made for xAI's"
            " OpenAI-compatible API. Its requests are not streamed and carry xAI's"
            " `search_parameters` field, which the bridge passes on as sent: the provider"
            " behind the bridge must accept it. It sends no session id.",
        ),
        pinned="npm:@vibe-kit/grok-cli",
        version="0.0.34",
        aliases=("grok",),
    ),
    Client(
        "nanocoder",
        "Nanocoder",
        wire=Wire(system_prompt_prefixes=("You are Nanocoder,",)),
        setups=(
            _nanocoder_setup("openai", "Chat Completions", GPT_MODEL, OPENAI_V1, "openai"),
            _nanocoder_setup("anthropic", "Messages", CLAUDE_MODEL, ANTHROPIC_V1, "anthropic"),
        ),
        notes=(
            "Nanocoder (npm `@nanocollective/nanocoder`) also reads a project's"
            " `agents.config.json`; `NANOCODER_CONFIG_DIR` moves the global one. It needs"
            " Node.js 22 or later. It sends only the AI SDK's User-Agent and no session id.",
        ),
        pinned="npm:@nanocollective/nanocoder",
        version="1.30.0",
    ),
    Client(
        "aider",
        "Aider",
        wire=Wire(system_prompt_prefixes=("Act as an expert software developer",)),
        setups=(
            Setup(
                "openai",
                "Chat Completions",
                model=GPT_MODEL,
                env=(
                    ("OPENAI_API_BASE", OPENAI_V1),
                    ("OPENAI_API_KEY", TOKEN),
                    ("AIDER_MODEL", join("openai/", MODEL)),
                ),
                run=("aider", "--message", PROMPT),
                verified_by=(SUITE + "test_aider.py::test_aider_message[openai]",),
            ),
            Setup(
                "anthropic",
                "Messages",
                model=CLAUDE_MODEL,
                env=(
                    ("ANTHROPIC_API_BASE", ANTHROPIC),
                    ("ANTHROPIC_API_KEY", TOKEN),
                    ("AIDER_MODEL", join("anthropic/", MODEL)),
                ),
                run=("aider", "--message", PROMPT),
                verified_by=(SUITE + "test_aider.py::test_aider_message[anthropic]",),
            ),
        ),
        notes=(
            "Aider (PyPI `aider-chat`) reaches models through LiteLLM: it sends the OpenAI"
            " SDK's User-Agent or LiteLLM's; `AIDER_*` variables are its command-line"
            " options. It sends no session id. It asks GitHub for LiteLLM's model list"
            " whatever its settings, and goes on when refused.",
        ),
        pinned="pypi:aider-chat",
        version="0.86.2",
    ),
    Client(
        "shell-gpt",
        "ShellGPT",
        wire=Wire(system_prompt_prefixes=("You are ShellGPT",)),
        setups=(
            Setup(
                "openai",
                "Chat Completions",
                model=GPT_MODEL,
                env=(
                    ("API_BASE_URL", OPENAI_V1),
                    ("OPENAI_API_KEY", TOKEN),
                    ("DEFAULT_MODEL", MODEL),
                ),
                run=("sgpt", PROMPT),
                verified_by=(SUITE + "test_shell_gpt.py::test_shell_gpt_prompt",),
            ),
        ),
        notes=(
            "`sgpt` (PyPI `shell-gpt`); the same keys go in `~/.config/shell_gpt/.sgptrc`,"
            " which the environment overrides. It sends the OpenAI SDK's User-Agent and no"
            " session id.",
        ),
        pinned="pypi:shell-gpt",
        version="1.5.1",
        aliases=("sgpt",),
    ),
    Client(
        "mistral-vibe",
        "Mistral Vibe",
        wire=Wire(
            # It sends httpx's User-Agent; its session travels as `x-affinity`.
            header_markers=(("x-affinity", ""),),
            session_headers=("x-affinity",),
        ),
        setups=(
            _vibe_setup("openai", "Chat Completions", GPT_MODEL, "openai", OPENAI_V1, "chat"),
            _vibe_setup(
                "openai", "Responses", GPT_MODEL, "openai-responses", OPENAI_V1, "responses"
            ),
            _vibe_setup("anthropic", "Messages", CLAUDE_MODEL, "anthropic", ANTHROPIC, "messages"),
        ),
        notes=(
            "`vibe` (PyPI `mistral-vibe`, Python 3.12 or later). `--trust` lets it work in"
            " the current folder for this run without asking.",
        ),
        pinned="pypi:mistral-vibe",
        version="3.0.3",
        aliases=("vibe",),
    ),
    Client(
        "gptme",
        "gptme",
        wire=Wire(
            # Its own prompt, and that of the title it asks for once per conversation.
            system_prompt_prefixes=("You are gptme", "Generate concise conversation titles."),
        ),
        setups=(
            Setup(
                "openai",
                "Responses",
                model=GPT_MODEL,
                env=(("OPENAI_BASE_URL", OPENAI_V1), ("OPENAI_API_KEY", TOKEN)),
                run=("gptme", "--non-interactive", "--model", join("openai/", MODEL), PROMPT),
                verified_by=(SUITE + "test_gptme.py::test_gptme_prompt[openai]",),
            ),
            Setup(
                "anthropic",
                "Messages",
                model=CLAUDE_MODEL,
                env=(("ANTHROPIC_BASE_URL", ANTHROPIC), ("ANTHROPIC_API_KEY", TOKEN)),
                run=(
                    *("gptme", "--non-interactive", "--model"),
                    *(join("anthropic/", MODEL), PROMPT),
                ),
                verified_by=(SUITE + "test_gptme.py::test_gptme_prompt[anthropic]",),
            ),
        ),
        notes=(
            "gptme (PyPI `gptme`) builds the providers' own SDKs, which read these"
            " variables; it sends their User-Agents and no session id. Its token counter"
            " (tiktoken) asks OpenAI's blob storage for its encodings, and gptme goes on"
            " when refused.",
        ),
        pinned="pypi:gptme",
        version="0.35.1",
    ),
    Client(
        "roo-code",
        "Roo Code",
        wire=Wire(
            user_agent_prefixes=("roo-code/", "roocode/"),
            header_markers=(("originator", "roo-code"),),
        ),
        setups=(
            Setup(
                "anthropic",
                "Messages",
                model=CLAUDE_MODEL,
                settings=(
                    ("API Provider", "Anthropic"),
                    ("Use custom base URL", ANTHROPIC),
                    ("API Key", TOKEN),
                    ("Model", MODEL),
                ),
            ),
            Setup(
                "openai",
                "Chat Completions",
                model=GPT_MODEL,
                settings=(
                    ("API Provider", "OpenAI Compatible"),
                    ("Base URL", OPENAI_V1),
                    ("API Key", TOKEN),
                    ("Model", MODEL),
                ),
            ),
        ),
        untested="a VS Code extension; there is no VS Code in the suite",
    ),
    Client(
        "vscode",
        "VS Code (Copilot Chat)",
        recorded_as="VS Code Copilot",
        wire=Wire(
            user_agent_prefixes=("GitHubCopilotChat/",),
            session_headers=("x-interaction-id",),
        ),
        setups=(
            Setup(
                "openai",
                "Chat Completions",
                model=GPT_MODEL,
                settings=(
                    ("Provider (Manage Models)", "OpenAI Compatible"),
                    ("Model id", MODEL),
                    ("Endpoint URL", CHAT_COMPLETIONS),
                    ("API key", TOKEN),
                ),
                notes=(
                    "Copilot Chat wants the full endpoint; a model on the Responses API"
                    " takes the `/openai/v1/responses` endpoint instead.",
                ),
            ),
        ),
        untested="it needs VS Code and a GitHub Copilot sign-in",
        notes=(
            "Bring-your-own-key models of Copilot Chat (first in VS Code Insiders with"
            " the pre-release Copilot Chat). There is no custom base URL for Anthropic"
            " models.",
        ),
        aliases=("copilot", "vs-code"),
    ),
    Client(
        "jetbrains",
        "JetBrains AI Assistant",
        setups=(
            Setup(
                "openai",
                "Chat Completions",
                model=GPT_MODEL,
                settings=(
                    ("Third-party AI providers", "OpenAI-compatible"),
                    ("URL", OPENAI_V1),
                    ("API key", TOKEN),
                ),
                notes=(
                    "It may list the models first (`GET /v1/models`), which the bridge"
                    " passes through. Anthropic-style endpoints cannot be configured.",
                ),
            ),
        ),
        untested="an IDE plugin; there is no IDE in the suite",
    ),
    Client(
        "zed",
        "Zed",
        wire=Wire(user_agent_prefixes=("Zed/",)),
        setups=(
            Setup(
                "anthropic",
                "Messages",
                model=CLAUDE_MODEL,
                file=ConfigFile(
                    "~/.config/zed/settings.json",
                    "json",
                    {"language_models": {"anthropic": {"api_url": ANTHROPIC}}},
                ),
                env=(("ANTHROPIC_API_KEY", TOKEN),),
            ),
            Setup(
                "openai",
                "Chat Completions",
                model=GPT_MODEL,
                file=ConfigFile(
                    "~/.config/zed/settings.json",
                    "json",
                    {"language_models": {"openai": {"api_url": OPENAI_V1}}},
                ),
                env=(("OPENAI_API_KEY", TOKEN),),
            ),
        ),
        untested="a desktop editor, not in the registries the suite can reach",
        notes=(
            "Merge `language_models` into your existing settings. The key can also be"
            " entered in the agent panel's provider settings instead of the environment"
            " Zed starts in.",
        ),
    ),
    Client(
        "windsurf",
        "Windsurf",
        unsupported="Windsurf has no setting to send its model traffic to another base"
        " URL; it goes through Windsurf's own service.",
    ),
    Client(
        "cursor",
        "Cursor",
        wire=Wire(header_markers=(("x-cursor-client-version", ""),)),
        unsupported="Cursor's \"Override OpenAI Base URL\" is called from Cursor's servers,"
        " not from the editor (the bridge would have to be public), users report that it"
        " calls the wrong endpoint, and there is no such setting for Anthropic.",
    ),
    Client(
        "amp",
        "Amp",
        unsupported="Amp works through its own service and account; it has no setting for"
        " a model provider's base URL.",
    ),
    Client(
        "kiro",
        "Kiro",
        unsupported="Kiro's models come from its own service; there is no base URL setting.",
    ),
    Client(
        "gemini-cli",
        "Gemini CLI",
        wire=Wire(user_agent_prefixes=("GeminiCLI",)),
        setups=(
            Setup(
                "gemini",
                "generateContent, streamGenerateContent",
                model=GEMINI_MODEL,
                file=ConfigFile(
                    "~/.gemini/settings.json",
                    "json",
                    {
                        "security": {"auth": {"selectedType": "gemini-api-key"}},
                        "model": {"name": MODEL},
                        "privacy": {"usageStatisticsEnabled": False},
                    },
                ),
                env=(("GOOGLE_GEMINI_BASE_URL", GEMINI), ("GEMINI_API_KEY", TOKEN)),
                run=("gemini",),
                notes=(
                    "`GEMINI_API_KEY` goes out as `x-goog-api-key`. The settings pick API-key"
                    " auth (without it Gemini CLI picks a gateway mode that it refuses in"
                    " headless runs) and name the model; with the default `auto` model it"
                    " first asks a small model to route each turn (one more call).",
                    "`privacy.usageStatisticsEnabled: false` is optional: it stops the usage"
                    " statistics Gemini CLI otherwise sends to Google directly.",
                    "Headless runs (`gemini -p ...`) in a folder it has not been told to trust"
                    " also need `GEMINI_CLI_TRUST_WORKSPACE=true`.",
                ),
                verified_by=(
                    SUITE + "test_gemini_cli.py::test_gemini_cli_prompt",
                    SUITE + "test_gemini_cli.py::test_gemini_cli_runs_its_read_file_tool",
                ),
            ),
        ),
        notes=("Tool use included: the suite has it run its `read_file` tool through the bridge.",),
        pinned="npm:@google/gemini-cli",
        version="0.61.0",
        aliases=("gemini",),
    ),
    Client(
        "antigravity",
        "Antigravity",
        unsupported="Google's Antigravity editor has no base URL setting for its models.",
    ),
    Client(
        "openai-python",
        "OpenAI SDK for Python",
        recorded_as="openai-python",
        wire=Wire(user_agent_prefixes=("OpenAI/Python", "AsyncOpenAI/Python"), generic=True),
        setups=(
            Setup(
                "openai",
                "Chat Completions, Responses",
                model=GPT_MODEL,
                env=(("OPENAI_BASE_URL", OPENAI_V1), ("OPENAI_API_KEY", TOKEN)),
                notes=("`openai.OpenAI()` reads both variables.",),
                byok=_sdk_byok(
                    ("OPENAI_BASE_URL", OPENAI_V1),
                    "OPENAI_API_KEY",
                    "openai.OpenAI(default_headers={{{header}: os.environ[{token}]}})",
                ),
                verified_by=(
                    "tests/test_client_kit.py::test_python_sdk_from_configured_env[openai-python]",
                ),
            ),
        ),
        pinned="pypi:openai",
        version="3.57.0",
    ),
    Client(
        "anthropic-python",
        "Anthropic SDK for Python",
        recorded_as="anthropic-python",
        wire=Wire(user_agent_prefixes=("Anthropic/Python", "AsyncAnthropic/Python"), generic=True),
        setups=(
            Setup(
                "anthropic",
                "Messages",
                model=CLAUDE_MODEL,
                env=(("ANTHROPIC_BASE_URL", ANTHROPIC), ("ANTHROPIC_API_KEY", TOKEN)),
                notes=("`anthropic.Anthropic()` reads both variables.",),
                byok=_sdk_byok(
                    ("ANTHROPIC_BASE_URL", ANTHROPIC),
                    "ANTHROPIC_API_KEY",
                    "anthropic.Anthropic(default_headers={{{header}: os.environ[{token}]}})",
                ),
                verified_by=(
                    "tests/test_client_kit.py::"
                    "test_python_sdk_from_configured_env[anthropic-python]",
                ),
            ),
        ),
        pinned="pypi:anthropic",
        version="2.14.0",
    ),
    Client(
        "google-genai-python",
        "Google Gen AI SDK for Python",
        recorded_as="google-genai-python",
        wire=Wire(user_agent_prefixes=("google-genai-sdk/",), generic=True),
        setups=(
            Setup(
                "gemini",
                "generateContent, streamGenerateContent",
                model=GEMINI_MODEL,
                env=(("GOOGLE_GEMINI_BASE_URL", GEMINI), ("GEMINI_API_KEY", TOKEN)),
                notes=(
                    "`genai.Client()` reads both variables; or pass them:"
                    ' `genai.Client(api_key=..., http_options={"base_url": ...})`.',
                ),
                verified_by=(
                    "tests/test_client_kit.py::"
                    "test_python_sdk_from_configured_env[google-genai-python]",
                ),
            ),
        ),
        pinned="pypi:google-genai",
        version="3.6.1",
    ),
    Client(
        "openai-node",
        "OpenAI SDK for Node",
        recorded_as="openai-node",
        wire=Wire(user_agent_prefixes=("OpenAI/JS",), generic=True),
        setups=(
            Setup(
                "openai",
                "Chat Completions, Responses",
                model=GPT_MODEL,
                env=(("OPENAI_BASE_URL", OPENAI_V1), ("OPENAI_API_KEY", TOKEN)),
                notes=("`new OpenAI()` reads both variables.",),
                byok=_sdk_byok(
                    ("OPENAI_BASE_URL", OPENAI_V1),
                    "OPENAI_API_KEY",
                    "new OpenAI({{ defaultHeaders: {{ {header}: process.env.{bare} }} }})",
                ),
                verified_by=(
                    SUITE + "test_node_sdks.py::test_openai_node[chat-stream-/chat/completions]",
                    SUITE + "test_node_sdks.py::test_openai_node[chat-plain-/chat/completions]",
                    SUITE + "test_node_sdks.py::test_openai_node[responses-stream-/responses]",
                    SUITE + "test_node_sdks.py::test_openai_node[responses-plain-/responses]",
                ),
            ),
        ),
        pinned="npm:openai",
        version="7.59.0",
    ),
    Client(
        "anthropic-node",
        "Anthropic SDK for Node",
        recorded_as="anthropic-node",
        wire=Wire(user_agent_prefixes=("Anthropic/JS",), generic=True),
        setups=(
            Setup(
                "anthropic",
                "Messages",
                model=CLAUDE_MODEL,
                env=(("ANTHROPIC_BASE_URL", ANTHROPIC), ("ANTHROPIC_API_KEY", TOKEN)),
                byok=_sdk_byok(
                    ("ANTHROPIC_BASE_URL", ANTHROPIC),
                    "ANTHROPIC_API_KEY",
                    "new Anthropic({{ defaultHeaders: {{ {header}: process.env.{bare} }} }})",
                ),
                notes=(
                    "`new Anthropic()` reads both variables; the 1.x SDK sends the key as"
                    " `Authorization: Bearer`, which the bridge accepts as well.",
                ),
                verified_by=(
                    SUITE + "test_node_sdks.py::test_anthropic_node[stream]",
                    SUITE + "test_node_sdks.py::test_anthropic_node[plain]",
                ),
            ),
        ),
        pinned="npm:@anthropic-ai/sdk",
        version="1.14.0",
    ),
)
