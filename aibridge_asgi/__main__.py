"""``python -m aibridge_asgi``: the client configuration kit on the command line.

- ``configure CLIENT --base-url URL [--token T] [--api A] [--protocol P]
  [--websocket] [--write [--force]]``
  prints a client's configuration for the bridge at ``URL`` (the mount URL,
  e.g. ``https://host/api/v2/aibridge``), or writes its config file: merged
  into an existing one (the user's other settings kept), after showing the
  diff and asking (or with ``--force``);
- ``clients`` lists the known clients;
- ``docs-clients`` prints (or writes) docs/clients.md.

The token comes from ``--token`` or, to keep it out of the process list and
shell history, from the ``AIBRIDGE_TOKEN`` environment variable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from . import client_docs
from .client_table import API_NAMES, CLIENTS, TOKEN_ENV
from .clients import ClientConfig, ClientNotSupported, UnknownClient, configure
from .config_merge import MergeError, diff, merge_config

__all__ = ["main", "write_config_file"]


class Refused(Exception):
    """The file exists and the user did not agree to replace it."""


def _backup_path(path: Path) -> Path:
    candidate = path.with_name(path.name + ".bak")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak.{n}")
        n += 1
    return candidate


def _ask(question: str, stdin: TextIO, stderr: TextIO) -> bool:
    stderr.write(question + " [y/N] ")
    stderr.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


def write_config_file(
    path: Path,
    content: str,
    *,
    force: bool,
    stdin: TextIO,
    stderr: TextIO,
    syntax: str | None = None,
) -> str:
    """Write ``content`` to ``path``; say what was done.

    With ``syntax`` (``"toml"`` or ``"json"``), ``content`` is merged into
    an existing file (:mod:`aibridge_asgi.config_merge`: the user's other
    settings, comments and order stay); without it, or when the file cannot
    be merged, it would replace the file. Either way the change is shown as
    a diff first, and made only with ``force`` or when the user says yes at
    a terminal; the old content is kept as ``<path>.bak`` (``.bak.1``... if
    that exists too). Raises :class:`Refused` otherwise.
    """
    mode = 0o644
    if path.exists():
        old = path.read_text(encoding="utf-8")
        action = "replace"
        if syntax is not None:
            try:
                content = merge_config(old, content, syntax)
                action = "merge"
            except MergeError as exc:
                stderr.write(f"{path} cannot be merged: {exc}\n")
        if old == content:
            return f"{path} is up to date"
        stderr.write(diff(old, content, str(path)))
        if not force:
            interactive = stdin.isatty()
            question = f"{path} exists: {action} the changes above into it?"
            if action == "replace":
                question = f"{path} exists: replace it?"
            if not interactive or not _ask(question, stdin, stderr):
                raise Refused(f"{path} exists; not changed (use --force to {action})")
        mode = path.stat().st_mode & 0o777
        backup = _backup_path(path)
        backup.write_text(old, encoding="utf-8")
        verb = "merged into" if action == "merge" else "replaced"
        done = f"{verb} {path} (the old one is {backup})"
    else:
        done = f"wrote {path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside it and rename: the file is never half-written.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return done


def _print_config(config: ClientConfig, fmt: str, stdout: TextIO) -> None:
    if fmt == "json":
        stdout.write(json.dumps(config.as_dict(), indent=2) + "\n")
    elif fmt == "env":
        stdout.write("".join(line + "\n" for line in config.env_lines))
    else:
        stdout.write(config.render())


def _configure(args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    if not token:
        stderr.write(f"error: give the host token with --token or in ${TOKEN_ENV}\n")
        return 2
    try:
        config = configure(
            args.client,
            args.base_url,
            token,
            api=args.api,
            model=args.model,
            byok=args.byok,
            byok_header=args.byok_header,
            websocket=args.websocket,
            protocol=args.protocol,
        )
    except (UnknownClient, ClientNotSupported, ValueError) as exc:
        stderr.write(f"error: {exc}\n")
        return 2
    if args.write:
        location = config.file_location()
        if location is None or config.file_content is None:
            stderr.write(f"{config.name} has no config file; nothing written\n")
        else:
            try:
                done = write_config_file(
                    location,
                    config.file_content,
                    force=args.force,
                    stdin=stdin,
                    stderr=stderr,
                    syntax=config.file_syntax,
                )
            except Refused as exc:
                stderr.write(f"error: {exc}\n")
                return 1
            stderr.write(done + "\n")
            # The file is written: what is left to do is the rest.
            config = _without_file(config)
    _print_config(config, args.format, stdout)
    return 0


def _without_file(config: ClientConfig) -> ClientConfig:
    return replace(config, file_path=None, file_syntax=None, file_content=None)


def _clients(args: argparse.Namespace, stdout: TextIO) -> int:
    if args.format == "json":
        data = [
            {
                "key": c.key,
                "name": c.name,
                "recorded_as": c.recorded,
                "apis": list(c.apis),
                "setups": [
                    {"api": s.api, "protocol": s.protocol, "verified": bool(s.verified_by)}
                    for s in c.setups
                ],
                "supported": c.supported,
                "unsupported": c.unsupported,
                "verified": list(dict.fromkeys(s.api for s in c.setups if s.verified_by)),
            }
            for c in CLIENTS
        ]
        stdout.write(json.dumps(data, indent=2) + "\n")
        return 0
    rows = [("CLIENT", "NAME", "APIS", "STATUS")]
    for c in CLIENTS:
        apis = ", ".join(f"{API_NAMES[s.api]} ({s.protocol})" for s in c.setups)
        if not c.supported:
            status = "not possible"
        elif all(s.verified_by for s in c.setups):
            status = "verified"
        elif any(s.verified_by for s in c.setups):
            status = "partly verified"
        else:
            status = "documented"
        rows.append((c.key, c.name, apis if c.supported else "-", status))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
        stdout.write("  ".join([*cells, row[3]]) + "\n")
    return 0


def _docs(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    page = client_docs.render()
    if args.output is None:
        stdout.write(page)
        return 0
    path = Path(args.output)
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != page:
            stderr.write(f"{path} is out of date: run without --check to regenerate it\n")
            return 1
        return 0
    path.write_text(page, encoding="utf-8")
    stderr.write(f"wrote {path}\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aibridge_asgi", description="Point AI clients at the bridge."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    conf = sub.add_parser("configure", help="a client's configuration for this bridge")
    conf.add_argument("client", help="a client (see `clients`), e.g. claude-code, codex")
    conf.add_argument(
        "--base-url",
        required=True,
        help="the bridge's mount URL, e.g. https://host/api/v2/aibridge",
    )
    conf.add_argument("--token", help=f"the host token (default: ${TOKEN_ENV})")
    conf.add_argument(
        "--api", choices=("anthropic", "openai", "gemini"), help="for clients that speak several"
    )
    conf.add_argument(
        "--protocol",
        help="for clients that speak several protocols of one API: chat, responses",
    )
    conf.add_argument("--model", help="the model to configure (default: the client's)")
    conf.add_argument(
        "--byok",
        action="store_true",
        help="bring your own key: the token in an extra header, your own provider key as the key",
    )
    conf.add_argument(
        "--byok-header",
        default="X-AIBridge-Token",
        help="the header the host token goes in with --byok (default: X-AIBridge-Token)",
    )
    conf.add_argument(
        "--websocket",
        action="store_true",
        help="turn on the client's Responses-over-WebSocket transport (Codex)",
    )
    conf.add_argument(
        "--format", choices=("text", "json", "env"), default="text", help="what to print"
    )
    conf.add_argument("--write", action="store_true", help="write the client's config file")
    conf.add_argument(
        "--force",
        action="store_true",
        help="with --write: change an existing file without asking (the old one kept as .bak)",
    )

    lst = sub.add_parser("clients", help="the known clients")
    lst.add_argument("--format", choices=("text", "json"), default="text")

    docs = sub.add_parser("docs-clients", help="docs/clients.md, generated from the table")
    docs.add_argument("--output", help="write it here instead of printing it")
    docs.add_argument(
        "--check", action="store_true", help="with --output: fail if the file differs"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    args = _parser().parse_args(argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if args.command == "configure":
        return _configure(args, stdin, stdout, stderr)
    if args.command == "clients":
        return _clients(args, stdout)
    return _docs(args, stdout, stderr)


if __name__ == "__main__":
    sys.exit(main())
