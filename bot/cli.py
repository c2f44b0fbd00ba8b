"""``ctbot serve`` and ``ctbot cmd "TEXT"``.

Exit codes of ``ctbot cmd``: 0 success, 1 a user error (the message says what to fix),
2 an internal error or a configuration that cannot be loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.console import PrintProgress
from bot.logs import configure_logging
from bot.runtime import Runtime, new_correlation_id
from bot.settings import Settings, SettingsError, load_settings
from handlers.context import CommandRequest, Transport
from handlers.roles import LOCAL_USER, is_valid_user_id
from services.core.audit import Outcome
from services.core.errors import CtbotError

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
            # Imported here: `ctbot cmd` needs neither aiohttp nor Bolt, and starts
            # in a third of the time without them.
            from bot.serve import serve

            asyncio.run(serve(settings, console_allowed=not args.no_console))
            return EXIT_OK
        return asyncio.run(run_cmd(settings, args.text, as_user=args.as_user,
                                   confirmed=args.yes, as_json=args.json))
    except CtbotError as exc:  # start-up failures: unreadable state database, …
        print(f"ctbot: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        return 130


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
            observer=PrintProgress(sys.stderr),
        ))
    finally:
        await runtime.close()
    if as_json:
        print(json.dumps(dict(reply.data), default=str, ensure_ascii=False))
    else:
        print(reply.text.rstrip())
    return _EXIT_BY_OUTCOME[reply.outcome]
