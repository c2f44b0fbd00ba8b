"""The `ctbot` program: `ctbot serve` runs the bot, `ctbot cmd "TEXT"` runs one command.

Exit codes of `ctbot cmd`: 0 success, 1 a user error (the message says what to fix),
2 an internal error or a configuration that cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.settings import Settings

EXIT_OK, EXIT_USER_ERROR, EXIT_INTERNAL = 0, 1, 2
# services.core.audit.Outcome's values: imported only where a command runs (`ctbot
# remote` imports nothing heavy before it hands its request on: bot/relay.py).
_EXIT_BY_OUTCOME = {
    "ok": EXIT_OK,
    "user_error": EXIT_USER_ERROR,
    "denied": EXIT_USER_ERROR,
    "internal_error": EXIT_INTERNAL,
}
DESCRIPTION = ("Chat-ops for systemd-nspawn hosts. `ctbot serve` runs the bot (Slack, the "
               "terminal console); `ctbot cmd \"TEXT\"` runs one command and prints the reply.")
EPILOG = ('examples:\n  ctbot serve --config /etc/ctbot/ctbot.toml\n'
          '  ctbot cmd "list" --json\n  ctbot cmd "destroy web1" --yes\n'
          '  ctbot install   # as a systemd service (make install)')


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--config and --log-level, accepted before or after the subcommand. Under a
    subcommand they default to SUPPRESS, so that a value given before it survives."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--config", type=Path, default=default, metavar="PATH",
                        help="TOML settings file (or CTBOT_CONFIG)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        default=default, help="overrides [log] level")


def build_parser() -> argparse.ArgumentParser:
    from handlers.roles import LOCAL_USER

    parser = argparse.ArgumentParser(prog="ctbot", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_options(parser, top=True)
    sub = parser.add_subparsers(dest="action",
                                metavar="{serve,cmd,install,uninstall,remote}")

    serve = sub.add_parser("serve", help="run the bot: Slack (HTTP, Socket Mode) or the "
                                         "terminal console")
    _common_options(serve, top=False)
    serve.add_argument("--no-console", action="store_true",
                       help="never start the terminal console")

    cmd = sub.add_parser("cmd", help="run one command and print the reply")
    _common_options(cmd, top=False)
    cmd.add_argument("text", help='the command, quoted: "help", "status web1"')
    cmd.add_argument("--json", action="store_true", help="print one JSON object")
    cmd.add_argument("--as", dest="as_user", default=LOCAL_USER, metavar="USER_ID",
                     help="run as this Slack user id (default: the local admin)")
    cmd.add_argument("--yes", action="store_true", help="confirm a destructive command")

    install = sub.add_parser("install", help="install (or upgrade) ctbot as a systemd "
                                             "service: a venv, /etc/ctbot, ctbot.service")
    install.add_argument("--prefix", type=Path, default=Path("/opt/ctbot"),
                         help="the venv to install into (default: /opt/ctbot)")
    install.add_argument("--wheelhouse", type=Path, metavar="DIR",
                         help="install offline from these wheels (pip wheel --wheel-dir DIR .)")
    install.add_argument("--no-start", dest="start", action="store_false",
                         help="enable the service but do not (re)start it")
    uninstall = sub.add_parser("uninstall", help="stop and remove the service and its venv "
                                                 "(keeps /etc/ctbot, state and machines)")
    uninstall.add_argument("--prefix", type=Path, default=Path("/opt/ctbot"))

    remote = sub.add_parser("remote", help="run a controller's command (what a host's "
                                           "authorized_keys line runs; JSON on stdin)")
    _common_options(remote, top=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if "remote" in words and words.index("remote") in (0, 2) \
            and words[:words.index("remote")][:1] in ([], ["--config"]):
        words = [*words[words.index("remote"):], *words[:words.index("remote")]]
    if words[:1] == ["remote"]:
        # What a host's authorized_keys line runs for the controller: before anything
        # heavy is imported (bot/relay.py hands it to the running service).
        from bot import relay

        return relay.main(words[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.action is None:
        parser.print_usage(sys.stderr)
        print('ctbot: say what to do: `ctbot serve` or `ctbot cmd "help"` '
              "(`ctbot --help` for more)", file=sys.stderr)
        return EXIT_INTERNAL
    if args.action in ("install", "uninstall"):
        from bot import install

        return install.main(args.action, prefix=args.prefix, start=getattr(args, "start", True),
                            wheelhouse=getattr(args, "wheelhouse", None))
    import asyncio

    from bot.settings import SettingsError, load_settings
    from services.core.errors import CtbotError

    try:
        settings = load_settings(args.config, os.environ)
    except SettingsError as exc:
        print(f"ctbot: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    try:
        if args.action == "serve":
            # Imported here: `ctbot cmd` needs neither aiohttp nor Bolt.
            from bot.serve import serve

            return asyncio.run(serve(settings, console_allowed=not args.no_console,
                                     log_level=args.log_level))
        from bot.logs import configure_logging

        configure_logging(args.log_level or "warning", secrets=settings.slack.secrets)
        return asyncio.run(run_cmd(settings, args.text, as_user=args.as_user,
                                   confirmed=args.yes, as_json=args.json))
    except CtbotError as exc:  # start-up failures: unreadable state database, …
        print(f"ctbot: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `ctbot cmd list | head`: the reader left; that is not an error of ours.
        # Point stdout at /dev/null so that flushing it at exit raises nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


async def run_cmd(settings: Settings, text: str, *, as_user: str, confirmed: bool,
                  as_json: bool) -> int:
    from bot.runtime import Runtime, new_correlation_id
    from bot.terminal import TerminalProgress
    from handlers.context import CommandRequest, Transport
    from handlers.roles import is_valid_user_id

    if not is_valid_user_id(as_user):
        message = f"--as {as_user!r} is not a Slack user id (like U012ABCDEF)"
        print(json.dumps({"error": message}) if as_json else f"ctbot: {message}")
        return EXIT_USER_ERROR
    runtime = await Runtime.open(settings)
    progress = TerminalProgress(sys.stderr)
    try:
        reply = await runtime.dispatcher.dispatch(CommandRequest(
            text=text, user_id=as_user, transport=Transport.CLI,
            correlation_id=new_correlation_id(), confirmed=confirmed, observer=progress,
            wants_text=not as_json,
        ))
    finally:
        progress.close()
        await runtime.close()
    if as_json:
        print(json.dumps(dict(reply.data), default=str, ensure_ascii=False))
    else:
        # Progress went to stderr as it happened; stdout gets the outcome once.
        print(progress.reply_text(reply).rstrip())
    sys.stdout.flush()
    return _EXIT_BY_OUTCOME[str(reply.outcome)]
