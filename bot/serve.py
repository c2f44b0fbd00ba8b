"""``ctbot serve``: the web app, the Slack transports and/or the console, until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from bot.console import run_console
from bot.runtime import Runtime
from bot.settings import Settings
from bot.slack_app import SlackBolt, build_bolt_app
from bot.slack_guard import SlackRequestGuard
from bot.slack_progress import sync_stale_messages
from bot.socket_mode import SocketModeTransport
from bot.web import build_web_app
from handlers.context import Transport
from services.machines.recovery import reconcile

log = logging.getLogger("ctbot")

HOUSEKEEPING_SECONDS = 60.0


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

    housekeeping = asyncio.create_task(
        _housekeeping(runtime, slack_http or slack_socket), name="housekeeping")

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
        housekeeping.cancel()
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


async def _housekeeping(runtime: Runtime, slack: SlackBolt | None) -> None:
    """Catch what other ctbot processes left behind (a `ctbot cmd` killed half-way):
    orphaned jobs, interrupted machine operations, and job messages in Slack that still
    show a state from before the crash. Runtime.open() has just recovered and reconciled,
    so the first round only brings Slack up to date; then every minute, all of it."""
    while True:
        try:
            if slack is not None:
                await sync_stale_messages(slack.app.client, runtime.jobs.store)
        except Exception:
            log.exception("housekeeping failed; retrying in a minute")
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        try:
            runtime.jobs.recover_interrupted()
            await reconcile(runtime.machines)
        except Exception:
            log.exception("housekeeping failed; retrying in a minute")
