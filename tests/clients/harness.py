"""What the real-client tests share: the host, the scripted upstream, the
outside-traffic trap, running a client, and the checks every run must pass.

A run goes: the client (a real program from ``node_modules``) talks to a
small Starlette host on loopback that mounts the bridge at
``/api/v2/aibridge``; the bridge talks to the library's fake upstream on
another loopback port. Nothing else is reachable: every client gets proxy
variables pointing at :class:`OutsideTrap`, which refuses and remembers any
attempt to reach a host that is not loopback, and an npm registry address
that does not answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from aibridge_asgi import (
    InterceptionEnded,
    InterceptionStarted,
    PromptUsage,
    TokenUsage,
    ToolUsage,
)
from aibridge_asgi.client_table import GEMINI_MODEL, Api
from aibridge_asgi.client_table import PROMPT as PROMPT_PLACEHOLDER
from aibridge_asgi.clients import ClientConfig, configure
from aibridge_asgi.testing import (
    ANTHROPIC_KEY,
    GOOGLE_KEY,
    OPENAI_KEY,
    FakeResponse,
    FakeUpstream,
    ReceivedRequest,
)
from aibridge_asgi.testing.streams import (
    ToolCall,
    Usage,
    anthropic_events,
    anthropic_message,
    chat_completion,
    chat_events,
    gemini_error,
    gemini_events,
    gemini_json_array,
    gemini_response,
    response_events,
    response_object,
)

from ..conftest import HOST_TOKEN, Running

SUITE = Path(__file__).resolve().parent
BIN = SUITE / "node_modules" / ".bin"
MOUNT = "/api/v2/aibridge"
ACTOR_ID = "alice"  # what tests/conftest.py's resolver names HOST_TOKEN's owner

#: The scripted upstream's answer text; every client must print it.
REPLY = "Relayed by the bridge: pelican 4711 says hello."
#: Token counts the scripted upstream reports (in the bridge's convention:
#: input excludes cached input). OpenAI's usage has no cache writes.
ANTHROPIC_USAGE = Usage(input_tokens=321, output_tokens=54, cache_read=1200, cache_write=80)
OPENAI_USAGE = Usage(input_tokens=321, output_tokens=54, cache_read=1200, reasoning=9)
#: Gemini counts thoughts apart from the answer; the bridge records both as output.
GEMINI_USAGE = Usage(input_tokens=321, output_tokens=54, cache_read=1200, reasoning=9)

BRIDGED_PATHS = ("/v1/messages", "/v1/chat/completions", "/v1/responses")
GEMINI_METHODS = (":generateContent", ":streamGenerateContent")


def is_bridged(path: str) -> bool:
    """Whether an upstream path is one of the bridged APIs'."""
    return path in BRIDGED_PATHS or (
        path.startswith(("/v1beta/models/", "/v1/models/")) and path.endswith(GEMINI_METHODS)
    )


#: The prompt of :func:`read_tool_round_trip`.
TOOL_PROMPT = "Read notes.txt and tell me what it says."


#: Programs not linked in ``node_modules/.bin``: one shipped in a platform
#: package, and the PyPI clients, each in a virtualenv of its own (their
#: dependencies' pins clash with the SDKs of the project's .venv).
PROGRAMS = {
    "droid": SUITE / "node_modules/@factory/cli-linux-x64/bin/droid",
    "aider": SUITE / "pyenvs/aider-chat/bin/aider",
    "sgpt": SUITE / "pyenvs/shell-gpt/bin/sgpt",
    "gptme": SUITE / "pyenvs/gptme/bin/gptme",
    "vibe": SUITE / "pyenvs/mistral-vibe/bin/vibe",
}


def client_program(name: str) -> str:
    """The path of an installed client program; fails (never skips) when the
    pinned clients are not installed."""
    path = PROGRAMS.get(name, BIN / name)
    if not path.exists():
        pytest.fail(
            f"{path} is missing: install the pinned clients with `bash scripts/install-clients`",
            pytrace=False,
        )
    return str(path)


def require_package(name: str) -> Path:
    """The folder of an installed npm package (an SDK); fails like :func:`client_program`."""
    path = SUITE / "node_modules" / name
    if not (path / "package.json").exists():
        pytest.fail(
            f"{path} is missing: install the pinned clients with `bash scripts/install-clients`",
            pytrace=False,
        )
    return path


# -- the host: the bridge mounted in Starlette, with what clients sent -------


@dataclass
class Incoming:
    """One request as the client sent it to the host (before the bridge)."""

    method: str
    path: str
    headers: dict[str, str]
    status: int | None = None
    interception_id: str | None = None
    body: bytearray = field(default_factory=bytearray)

    def json(self) -> Any:
        """The body as JSON (None when it is not)."""
        try:
            return json.loads(bytes(self.body))
        except ValueError:
            return None


class Capture:
    """ASGI wrapper that remembers each request's headers as the client sent
    them, and the interception id the bridge answered with."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[Incoming] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        item = Incoming(
            method=scope["method"],
            path=scope["path"],
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
        )
        self.seen.append(item)

        async def read() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                item.body.extend(message.get("body", b""))
            return message

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                item.status = message["status"]
                for key, value in message.get("headers", []):
                    if key.lower() == b"x-aibridge-interception-id":
                        item.interception_id = value.decode("latin-1")
            await send(message)

        await self.app(scope, read, watch)

    def for_interception(self, interception_id: str) -> Incoming:
        for item in self.seen:
            if item.interception_id == interception_id:
                return item
        raise LookupError(f"no captured request answered with interception {interception_id}")


# -- outside traffic ------------------------------------------------------------


class OutsideTrap:
    """A loopback 'proxy' that refuses every request and remembers where the
    client wanted to go (``CONNECT host:443`` or an absolute URL)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.seen: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="outside-trap", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._refuse, args=(conn,), daemon=True).start()

    def _refuse(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                line = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                parts = line.split()
                target = parts[1] if len(parts) > 1 else line
                with self._lock:
                    self.seen.append(target)
                conn.sendall(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            except OSError:
                pass

    def since(self, start: int) -> list[str]:
        with self._lock:
            return list(self.seen[start:])

    def close(self) -> None:
        self._sock.close()


def outside_host(target: str) -> str:
    """``api.example.com`` from ``api.example.com:443`` or ``http://api.example.com/x``."""
    if "://" in target:
        target = target.split("://", 1)[1].split("/", 1)[0]
    return target.rsplit(":", 1)[0] if ":" in target else target


def allowed_host(host: str, allowed: Sequence[str]) -> bool:
    """``host`` is one of ``allowed``, or ends with an entry that starts with a dot."""
    return any(host == a or (a.startswith(".") and host.endswith(a)) for a in allowed)


# -- the scripted upstream ------------------------------------------------------

#: Decides, from a bridged request's path and body, whether the model answers
#: with tool calls (a non-empty list) or with text.
ToolPlan = Callable[[str, Mapping[str, Any]], Sequence[ToolCall]]


def script_upstream(
    fake: FakeUpstream,
    *,
    text: str = REPLY,
    plan: ToolPlan | None = None,
    times: int = 40,
    gemini_models: Sequence[str] = (GEMINI_MODEL,),
) -> None:
    """Answer every bridged call (Messages, Chat Completions, Responses, and
    Gemini's two methods for ``gemini_models``) with ``text`` and the
    suite's token counts, streamed or not as the request asks; with
    ``plan``, answer with the tool calls it returns instead.

    Like the provider, it answers 401 to a call without the fake's keys
    (the provider keys, unless a test gave it a user's own; Gemini: 400, as
    Google does).
    """
    fake.reply = text  # for calls outside the bridged APIs (count_tokens...)

    def respond(request: ReceivedRequest) -> FakeResponse:
        body = request.json()
        stream = body.get("stream") is True
        model = str(body.get("model") or "fake-model")
        calls = list(plan(request.path, body)) if plan is not None else []
        answer = "" if calls else text
        if request.path.endswith(GEMINI_METHODS):
            if request.header("x-goog-api-key") != fake.google_key:
                error = gemini_error(400, "API key not valid.", "INVALID_ARGUMENT")
                return FakeResponse.json(error, 400)
            model = request.path.rsplit("/", 1)[1].split(":")[0]
            options: dict[str, Any] = {"model": model, "tool_calls": calls, "usage": GEMINI_USAGE}
            if request.path.endswith(":generateContent"):
                return FakeResponse.json(gemini_response(answer, **options))
            if "alt=sse" in request.query.split("&"):
                return FakeResponse.sse(gemini_events(answer, **options))
            return FakeResponse(chunks=gemini_json_array(answer, **options))
        if request.path == "/v1/messages":
            if request.header("x-api-key") != fake.anthropic_key:
                return FakeResponse.json(
                    {
                        "type": "error",
                        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
                    },
                    401,
                )
            usage = ANTHROPIC_USAGE
            if stream:
                return FakeResponse.sse(
                    anthropic_events(answer, model=model, tool_calls=calls, usage=usage)
                )
            return FakeResponse.json(
                anthropic_message(answer, model=model, tool_calls=calls, usage=usage)
            )
        if request.header("authorization") != f"Bearer {fake.openai_key}":
            error = {"message": "Incorrect API key provided.", "code": "invalid_api_key"}
            return FakeResponse.json({"error": error}, 401)
        usage = OPENAI_USAGE
        if request.path == "/v1/chat/completions":
            if stream:
                options = body.get("stream_options")
                with_usage = isinstance(options, dict) and options.get("include_usage") is True
                return FakeResponse.sse(
                    chat_events(
                        answer, model=model, tool_calls=calls, usage=usage, include_usage=with_usage
                    )
                )
            return FakeResponse.json(
                chat_completion(answer, model=model, tool_calls=calls, usage=usage)
            )
        if stream:
            return FakeResponse.sse(
                response_events(answer, model=model, tool_calls=calls, usage=usage)
            )
        return FakeResponse.json(
            response_object(answer, model=model, tool_calls=calls, usage=usage)
        )

    paths = [
        *BRIDGED_PATHS,
        *(f"/v1beta/models/{m}{method}" for m in gemini_models for method in GEMINI_METHODS),
    ]
    for path in paths:
        for _ in range(times):
            fake.enqueue(respond, path=path)


def expected_tokens(provider: str) -> tuple[int, int, int, int]:
    """(input, output, cache read, cache write) the bridge should record."""
    usage = {"anthropic": ANTHROPIC_USAGE, "google": GEMINI_USAGE}.get(provider, OPENAI_USAGE)
    write = usage.cache_write if provider == "anthropic" else 0
    return (usage.input_tokens, usage.output_tokens, usage.cache_read, write)


# -- one client run -------------------------------------------------------------


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.argv)}\nexit {self.returncode} after {self.seconds:.1f}s\n"
            f"--- stdout (tail)\n{self.stdout[-3000:]}\n--- stderr (tail)\n{self.stderr[-3000:]}"
        )


@dataclass
class Rig:
    """A bridge under a Starlette host, its fake upstream, and a sandbox for
    one client run (``home``, ``work``) under the test's tmp_path."""

    running: Running
    fake: FakeUpstream
    capture: Capture
    trap: OutsideTrap
    root: Path
    trap_start: int = 0
    results: list[Result] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def anthropic_url(self) -> str:
        """What Anthropic clients take as base URL (they append /v1/messages)."""
        return self.running.url + "/anthropic"

    @property
    def gemini_url(self) -> str:
        """What Gemini clients take as base URL (they append /v1beta/models/...)."""
        return self.running.url + "/gemini"

    @property
    def openai_url(self) -> str:
        """What OpenAI clients take as base URL (they append /chat/completions...)."""
        return self.running.url + "/openai/v1"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A clean environment: nothing of the caller's (no real keys, no
        real HOME), everything outside loopback routed to the trap."""
        node_dir = os.path.dirname(shutil.which("node") or "/usr/bin/node")
        env = {
            "PATH": os.pathsep.join(
                dict.fromkeys((node_dir, "/usr/local/bin", "/usr/bin", "/bin"))
            ),
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "XDG_STATE_HOME": str(self.home / ".local" / "state"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "TMPDIR": str(self.root / "tmp"),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "NO_COLOR": "1",
            "npm_config_registry": "http://127.0.0.1:9/",
            "npm_config_update_notifier": "false",
        }
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env[name] = env[name.lower()] = self.trap.url
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
        env.update(extra or {})
        return env

    def configure(
        self,
        client: str,
        *,
        api: Api | None = None,
        model: str | None = None,
        protocol: str | None = None,
        **options: Any,
    ) -> ClientConfig:
        """What ``configure()`` gives for this bridge (its mount URL) and the
        host token, for ``api`` and ``protocol``; further ``configure``
        options (``byok=True, user_key=...`` for the bring-your-own-key form,
        ``websocket=True``)."""
        return configure(
            client,
            self.running.url,
            HOST_TOKEN,
            api=api,
            model=model,
            protocol=protocol,
            **options,
        )

    def install(
        self, config: ClientConfig, isolation: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Put ``config`` in place for a run, as a user would: its file at its
        path under the sandbox's HOME; return the run's environment, the
        clean one of :meth:`env` plus the config's variables and the suite's
        ``isolation`` switches (which may not change the config's own)."""
        location = config.file_location(home=self.home)
        if location is not None:
            assert config.file_content is not None
            location.parent.mkdir(parents=True, exist_ok=True)
            location.write_text(config.file_content, encoding="utf-8")
        overlap = set(config.env_vars) & set(isolation or {})
        assert not overlap, f"the test would override the generated configuration: {overlap}"
        return self.env({**config.env_vars, **(isolation or {})})

    def run(self, argv: Sequence[str], env: Mapping[str, str], timeout: float = 120.0) -> Result:
        """Run a client in ``work`` with no stdin; kill its whole process
        group when it is done or out of time."""
        argv = [str(a) for a in argv]
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=self.work,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        timed_out = False
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            stdout, stderr = proc.communicate()
        _kill_group(proc.pid)  # helpers the client left behind
        result = Result(argv, proc.returncode, stdout, stderr, time.monotonic() - started)
        self.results.append(result)
        if timed_out:
            pytest.fail(f"client timed out after {timeout}s\n{result.describe()}", pytrace=False)
        return result

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every started interception has ended and its records arrived."""
        recorder = self.running.recorder

        def done(r: Any) -> bool:
            return len(r.of_type(InterceptionEnded)) >= len(r.of_type(InterceptionStarted))

        recorder.wait_sync(done, timeout)
        self.running.flush()

    def outside(self) -> list[str]:
        return self.trap.since(self.trap_start)

    def bridged_requests(self) -> list[ReceivedRequest]:
        return [r for r in self.fake.requests if is_bridged(r.path)]


def program_argv(
    argv: Sequence[str], program: str, *, prompt: str | None = None, options: Sequence[str] = ()
) -> list[str]:
    """A configuration's command with the installed ``program`` in front and
    the suite's ``prompt`` for the placeholder one; ``options`` go before the
    prompt (at the end when there is none)."""
    rest = list(argv[1:])
    if prompt is None:
        return [program, *rest, *options]
    at = rest.index(PROMPT_PLACEHOLDER)
    return [program, *rest[:at], *options, prompt, *rest[at + 1 :]]


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# -- the checks every run passes ----------------------------------------------


def check_run(
    rig: Rig,
    result: Result,
    *,
    prompt: str,
    client: str,
    provider: str,
    session_header: str | None,
    session_field: str | None = None,
    allowed_outside: Sequence[str] = (),
    reply: str = REPLY,
    byok_key: str | None = None,
) -> InterceptionStarted:
    """Assert what the issue asks of every run; return the start record of
    the interception that carried the prompt. The session id is expected
    from the ``session_header`` the client sent, else from the body's
    ``session_field``, else none. With ``byok_key`` the client brought its
    own key: the host token came in ``X-AIBridge-Token`` and the upstream
    saw ``byok_key`` instead of the provider key."""
    assert result.returncode == 0, result.describe()
    assert reply in result.stdout, result.describe()
    rig.settle()
    records = rig.running.recorder

    # The client sent the host token to the host ...
    assert rig.capture.seen, "the client sent nothing to the bridge"
    bridged_in = [i for i in rig.capture.seen if i.interception_id is not None]
    assert bridged_in, f"no bridged call: {[(i.method, i.path) for i in rig.capture.seen]}"
    for item in bridged_in:
        sent = " ".join(
            item.headers.get(name, "") for name in ("authorization", "x-api-key", "x-goog-api-key")
        )
        if byok_key is not None:
            assert item.headers.get("x-aibridge-token") == HOST_TOKEN, item.headers
            assert byok_key in sent, f"{item.path} did not carry the user's key: {item.headers}"
            continue
        assert HOST_TOKEN in sent, f"{item.path} did not carry the host token: {item.headers}"

    # ... and the upstream saw only the provider key.
    upstream = rig.bridged_requests()
    assert upstream, "no bridged call reached the fake upstream"
    for request in rig.fake.requests:
        for name, value in request.headers:
            assert HOST_TOKEN not in value, f"host token upstream in header {name}"
        assert HOST_TOKEN.encode() not in request.body, f"host token upstream in {request.path}"
    for request in upstream:
        assert request.header("x-aibridge-token") is None, request.headers
        if byok_key is not None:
            sent = f"{request.header('authorization')} {request.header('x-api-key')}"
            assert byok_key in sent, request.headers
            assert ANTHROPIC_KEY not in sent and OPENAI_KEY not in sent, request.headers
        elif provider == "anthropic":
            assert request.header("x-api-key") == ANTHROPIC_KEY, request.headers
            assert request.header("authorization") is None, request.headers
        elif provider == "google":
            assert request.header("x-goog-api-key") == GOOGLE_KEY, request.headers
            assert request.header("authorization") is None, request.headers
            assert request.header("x-api-key") is None, request.headers
            assert "key=" not in request.query, request.query
        else:
            assert request.header("authorization") == f"Bearer {OPENAI_KEY}", request.headers
            assert request.header("x-api-key") is None, request.headers

    # Records: the prompt, who, which client, which session, tokens, outcome.
    prompts = [p for p in records.of_type(PromptUsage) if prompt in p.prompt]
    assert prompts, (
        f"no PromptUsage holds {prompt!r}: {[p.prompt[:200] for p in records.of_type(PromptUsage)]}"
    )
    interception_id = prompts[-1].interception_id
    started = records.started(interception_id)
    assert started is not None
    incoming = rig.capture.for_interception(interception_id)
    assert started.actor.id == ACTOR_ID
    assert started.provider == provider
    assert started.client == client, f"user agent {started.user_agent!r}"
    assert started.user_agent == incoming.headers.get("user-agent")
    if session_field is not None:
        sent_session = incoming.json().get(session_field)
        assert sent_session, f"the client sent no {session_field} in the body"
        assert started.client_session_id == sent_session
    elif session_header is None:
        assert started.client_session_id is None
    else:
        sent_session = incoming.headers.get(session_header)
        assert sent_session, f"the client sent no {session_header} header: {incoming.headers}"
        assert started.client_session_id == sent_session

    starts = records.of_type(InterceptionStarted)
    assert len(starts) == len(upstream), "one interception per bridged upstream call"
    for start in starts:
        assert start.actor.id == ACTOR_ID
        assert start.client == client
    tokens = records.of_type(TokenUsage)
    assert [t.interception_id for t in tokens if t.interception_id == interception_id] == [
        interception_id
    ], "exactly one TokenUsage for the prompt's interception"
    for usage in tokens:
        got = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
            usage.cache_write_input_tokens,
        )
        assert got == expected_tokens(provider), usage
    assert len(tokens) == len(starts)
    for end in records.of_type(InterceptionEnded):
        assert (end.status, end.http_status, end.error) == ("completed", 200, None), end
        assert end.credential == ("pool" if byok_key is None else "byok"), end

    # Nothing left loopback except what this client is known to try (refused).
    unexpected = [t for t in rig.outside() if not allowed_host(outside_host(t), allowed_outside)]
    assert not unexpected, f"the client tried to reach outside hosts: {unexpected}"
    return started


def tool_usages(rig: Rig) -> list[ToolUsage]:
    return rig.running.recorder.of_type(ToolUsage)


# -- captured requests: the fixtures of the detection tests -----------------------

#: Where :func:`capture` stores what the clients sent (tests/test_client_detection.py reads them).
CAPTURED = SUITE / "captured"
#: Set to 1 to (re)write the fixtures while the suite runs the clients.
CAPTURE_VARIABLE = "AIBRIDGE_CAPTURE_FIXTURES"
_TEXT_LIMIT = 300


def _short(value: Any) -> Any:
    """A system prompt (string or list of text parts) cut to its opening."""
    if isinstance(value, str):
        return value[:_TEXT_LIMIT]
    if isinstance(value, list) and value:
        first = value[0]
        if isinstance(first, dict) and isinstance(first.get("text"), str):
            return [{**first, "text": first["text"][:_TEXT_LIMIT]}]
        return [first] if isinstance(first, str) else []
    return value


def _trimmed_body(body: Any) -> Any:
    """What detection may read of a body, and no more: the fields around the
    system prompt (cut to its opening), ``metadata`` and the session-ish
    top-level strings; the names of all the other fields."""
    if not isinstance(body, dict):
        return None
    kept: dict[str, Any] = {"keys": sorted(body)}
    for key in ("model", "stream", "metadata", "prompt_cache_key", "user"):
        if key in body:
            kept[key] = body[key]
    for key in ("system", "instructions"):
        if key in body:
            kept[key] = _short(body[key])
    for key in ("messages", "input"):
        items = body.get(key)
        if isinstance(items, list) and items and isinstance(items[0], dict):
            first = items[0]
            if first.get("role") in ("system", "developer"):
                kept[key] = [{**first, "content": _short(first.get("content"))}]
    return kept


def capture(rig: Rig, name: str, *, client: str, version: str) -> None:
    """With ``AIBRIDGE_CAPTURE_FIXTURES=1``, store the bridged requests this
    run's client sent (headers and the body fields detection reads; the host
    token and the rig's port masked) as ``captured/<name>.json``."""
    if os.environ.get(CAPTURE_VARIABLE) != "1":
        return
    port = rig.running.url.split("//", 1)[1].split("/", 1)[0]
    requests = []
    for item in rig.capture.seen:
        if item.interception_id is None:
            continue
        headers = {
            k: v.replace(HOST_TOKEN, "<host token>").replace(port, "127.0.0.1:<port>")
            for k, v in sorted(item.headers.items())
        }
        requests.append(
            {
                "method": item.method,
                "path": item.path.replace(MOUNT, "<mount>", 1),
                "headers": headers,
                "body": _trimmed_body(item.json()),
            }
        )
    assert requests, "nothing to capture"
    CAPTURED.mkdir(exist_ok=True)
    data = {"client": client, "version": version, "requests": requests}
    text = json.dumps(data, indent=1, ensure_ascii=False).replace(HOST_TOKEN, "<host token>")
    (CAPTURED / f"{name}.json").write_text(text + "\n", encoding="utf-8")


# -- a tool round trip ----------------------------------------------------------------


def read_tool_round_trip(
    rig: Rig,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    tool: str,
    arg: str,
    client: str,
    provider: str,
    session_header: str | None = None,
    session_field: str | None = None,
) -> None:
    """Run ``argv`` (whose prompt is :data:`TOOL_PROMPT`), have the
    fake upstream answer the first turn with a call to the client's own file
    tool ``tool`` (its path argument named ``arg``), and check that the next
    turn carries the file's content back as the tool's result, that the
    client printed the final answer, and that the records hold the
    ``ToolUsage`` with its arguments (besides all of :func:`check_run`)."""
    secret = f"bridge-notes-{uuid.uuid4().hex[:12]}"
    notes = rig.work / "notes.txt"
    notes.write_text(f"The launch code is {secret}.\n")
    call = ToolCall(tool, {arg: str(notes)}, id=f"call_bridge_{tool.lower()}_01")
    prompt = TOOL_PROMPT

    def plan(path: str, body: Mapping[str, Any]) -> Sequence[ToolCall]:
        sent = json.dumps(body)
        offered = [t.get("function", t).get("name") for t in body.get("tools", [])]
        if prompt in sent and call.id not in sent and tool in offered:
            return [call]
        return []

    script_upstream(rig.fake, plan=plan)
    result = rig.run(argv, env)
    check_run(
        rig,
        result,
        prompt=prompt,
        client=client,
        provider=provider,
        session_header=session_header,
        session_field=session_field,
    )
    bodies = [r.json() for r in rig.bridged_requests()]
    answered = [b for b in bodies if call.id in json.dumps(b)]
    assert answered, f"no turn after the {tool} call: {len(bodies)} requests"
    assert secret in json.dumps(answered[0]), "the tool result did not carry the file"
    usages = [u for u in tool_usages(rig) if u.tool_call_id == call.id]
    assert [(u.tool, u.args, u.injected) for u in usages] == [(tool, {arg: str(notes)}, False)]
