"""ShellGPT (`sgpt`, PyPI `shell-gpt`) through the bridge's Chat Completions route."""

from __future__ import annotations

from .harness import Rig, capture, check_run, client_program, program_argv, script_upstream

PROMPT = "Give me a one-line greeting for the bridge check."
VERSION = "1.5.1"


def test_shell_gpt_prompt(rig: Rig) -> None:
    config = rig.configure("shell-gpt")
    assert config.env_vars["API_BASE_URL"] == rig.openai_url
    env = rig.install(config, {"PRETTIFY_MARKDOWN": "false"})
    script_upstream(rig.fake)
    result = rig.run(program_argv(config.run, client_program("sgpt"), prompt=PROMPT), env)
    capture(rig, "shell-gpt-chat", client="ShellGPT", version=VERSION)
    started = check_run(
        rig, result, prompt=PROMPT, client="ShellGPT", provider="openai", session_header=None
    )
    assert started.route == "/chat/completions"
