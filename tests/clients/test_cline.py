"""Cline CLI (`cline "<prompt>"`) through an OpenAI-compatible (Chat Completions)
provider; and its refusal of a base URL for its Anthropic provider."""

from __future__ import annotations

import json
from pathlib import Path

from ..conftest import HOST_TOKEN
from .harness import Rig, capture, check_run, client_program, program_argv, script_upstream

PROMPT = "Give me a one-line greeting for the bridge check."
#: Cline's OpenTelemetry and PostHog endpoints: it sends to them whatever its
#: settings say; the suite's trap refuses them and Cline goes on.
CLINE_TELEMETRY = ("otel.cline.bot", "data.cline.bot")


def cline_setup(rig: Rig) -> tuple[str, Path, dict[str, str]]:
    """(program, config dir, environment) for a Cline run with its own config."""
    config_dir = rig.root / "cline"
    settings = config_dir / "data" / "settings"
    settings.mkdir(parents=True)
    (settings / "global-settings.json").write_text(
        json.dumps({"version": "1", "telemetryEnabled": False})
    )
    # In-process sessions: no background hub daemon that would outlive the run.
    env = rig.env({"CLINE_SESSION_BACKEND_MODE": "local", "CLINE_NO_AUTO_UPDATE": "1"})
    return client_program("cline"), config_dir, env


def test_cline_run(rig: Rig) -> None:
    """The `cline auth` command configure("cline") gives, then a prompt."""
    cline, config_dir, env = cline_setup(rig)
    config = rig.configure("cline", api="openai")
    assert not config.env and config.file_path is None  # a command is all it takes
    settings = config_dir / "data" / "settings"
    (auth_command,) = config.commands
    options = ("--config", str(config_dir))
    auth = rig.run(program_argv(auth_command, cline, options=options), env)
    assert auth.returncode == 0, auth.describe()
    stored = json.loads((settings / "providers.json").read_text())
    assert stored["providers"]["openai-compatible"]["settings"]["baseUrl"] == rig.openai_url
    script_upstream(rig.fake)
    result = rig.run(program_argv(config.run, cline, prompt=PROMPT, options=options), env)
    capture(rig, "cline-chat", client="Cline", version="3.0.65")
    started = check_run(
        rig,
        result,
        prompt=PROMPT,
        client="Cline",
        provider="openai",
        session_header=None,
        allowed_outside=CLINE_TELEMETRY,
    )
    assert started.route == "/chat/completions"
    assert started.model == "gpt-5"


def test_cline_anthropic_provider_takes_no_base_url(rig: Rig) -> None:
    """Cline 3.x cannot reach the bridge's Anthropic route: its CLI keeps the
    base URL for OpenAI-style providers only, and says so."""
    cline, config_dir, env = cline_setup(rig)
    auth = rig.run(
        [
            cline,
            "auth",
            "--provider",
            "anthropic",
            "--apikey",
            HOST_TOKEN,
            "--modelid",
            "claude-sonnet-4-5",
            "--baseurl",
            rig.anthropic_url,
            "--config",
            config_dir,
        ],
        env,
    )
    assert auth.returncode != 0, auth.describe()
    reason = "base URL is only supported for OpenAI and OpenAI-compatible providers"
    assert reason in auth.stderr, auth.describe()
    assert not rig.capture.seen and not rig.fake.requests
