"""``ctbot serve`` and ``ctbot cmd "TEXT"``.

Exit codes of ``ctbot cmd``: 0 success, 1 a user error (the message says what to fix),
2 an internal error or a configuration that cannot be loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from bot.console import run_console
from bot.logs import configure_logging
from bot.runtime import Runtime, new_correlation_id
from bot.settings import Settings, SettingsError, load_settings
from bot.slack_app import SlackBolt, build_bolt_app
from bot.slack_guard import SlackRequestGuard
from bot.socket_mode import SocketModeTransport
from bot.web import build_web_app
from handlers.context import CommandRequest, Transport
from handlers.roles import LOCAL_USER, is_valid_user_id
from services.audit import Outcome
from services.errors import CtbotError
from services.jobs import Job

log = logging.getLogger("ctbot")

EXIT_OK, EXIT_USER_ERROR, EXIT_INTERNAL = 0, 1, 2
_EXIT_BY_OUTCOME = {
    Outcome.OK: EXIT_OK,
    Outcome.USER_ERROR: EXIT_USER_ERROR,
    Outcome.DENIED: EXIT_USER_ERROR,
    Outcome.INTERNAL_ERROR: EXIT_INTERNAL,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctbot", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="TOML settings file (or CTBOT_CONFIG)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="overrides [log] level")
    sub = parser.add_subparsers(dest="action", required=True)

    serve = sub.add_parser("serve", help="run the bot: HTTP, Slack and/or the console")
    serve.add_argument("--no-console", action="store_true",
                       help="never start the terminal console")

    cmd = sub.add_parser("cmd", help="run one command and print the reply")
    cmd.add_argument("text", help='the command, quoted: "help", "whoami"')
    cmd.add_argument("--json", action="store_true", help="print one JSON object")
    cmd.add_argument("--as", dest="as_user", default=LOCAL_USER, metavar="USER_ID",
                     help="run as this Slack user id (default: the local admin)")
    cmd.add_argument("--yes", action="store_true", help="confirm a destructive command")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config, os.environ)
    except SettingsError as exc:
        print(f"ctbot: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    level = args.log_level or (settings.log_level if args.action == "serve" else "warning")
    configure_logging(level, secrets=settings.slack.secrets)
    try:
        if args.action == "serve":
            asyncio.run(serve(settings, console_allowed=not args.no_console))
            return EXIT_OK
        return asyncio.run(run_cmd(settings, args.text, as_user=args.as_user,
                                   confirmed=args.yes, as_json=args.json))
    except CtbotError as exc:  # start-up failures: unreadable state database, …
        print(f"ctbot: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        return 130


class _StderrProgress:
    def __init__(self) -> None:
        self._shown = 0

    async def job_changed(self, job: Job) -> None:
        for p in job.progress[self._shown:]:
            print(f"… {p.line}", file=sys.stderr, flush=True)
        self._shown = len(job.progress)


async def run_cmd(settings: Settings, text: str, *, as_user: str, confirmed: bool,
                  as_json: bool) -> int:
    if not is_valid_user_id(as_user):
        message = f"--as {as_user!r} is not a Slack user id (like U012ABCDEF)"
        print(json.dumps({"error": message}) if as_json else f"ctbot: {message}")
        return EXIT_USER_ERROR
    runtime = await Runtime.open(settings)
    try:
        reply = await runtime.dispatcher.dispatch(CommandRequest(
            text=text, user_id=as_user, transport=Transport.CLI,
            correlation_id=new_correlation_id(), confirmed=confirmed,
            observer=_StderrProgress(),
        ))
    finally:
        await runtime.close()
    if as_json:
        print(json.dumps(dict(reply.data), default=str, ensure_ascii=False))
    else:
        print(reply.text.rstrip())
    return _EXIT_BY_OUTCOME[reply.outcome]


async def serve(settings: Settings, *, console_allowed: bool = True) -> None:
    runtime = await Runtime.open(settings)
    slack = settings.slack
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    slack_http = build_bolt_app(runtime, transport=Transport.SLACK) if slack.http_enabled else None
    guard = SlackRequestGuard(slack.signing_secret) if slack.signing_secret else None
    web_app = build_web_app(bolt_app=slack_http.app if slack_http else None, guard=guard)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.listen.host, settings.listen.port)
    await site.start()
    log.info("listening address=%s slack_http=%s config=%s state=%s", settings.listen,
             "on" if slack_http else "off", settings.source, settings.database_path)

    slack_socket: SlackBolt | None = None
    socket_mode: SocketModeTransport | None = None
    if slack.socket_mode_enabled and slack.app_token:
        slack_socket = build_bolt_app(runtime, transport=Transport.SOCKET_MODE)
        socket_mode = SocketModeTransport(slack_socket.app, slack.app_token,
                                          silence_seconds=slack.socket_watchdog_seconds)
        await socket_mode.start()

    console: asyncio.Task[None] | None = None
    if not (slack.http_enabled or slack.socket_mode_enabled):
        if console_allowed:
            console = asyncio.create_task(run_console(runtime), name="console")
            console.add_done_callback(lambda _t: stop.set())
        else:
            log.warning("no Slack credentials and --no-console: only HTTP endpoints are served")

    try:
        await stop.wait()
    finally:
        log.info("stopping")
        if console is not None:
            console.cancel()
        if socket_mode is not None:
            await socket_mode.stop()
        await runner.cleanup()  # no new requests; then let started commands finish
        for bolt in (slack_http, slack_socket):
            if bolt is not None:
                await bolt.close()
        await runtime.close()
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
