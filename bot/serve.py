"""``ctbot serve``: the web app, the Slack transports and/or the console, until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from aiohttp import web

from bot.console import ConsoleAlerts, run_console
from bot.health import health_metrics, start_health, stop_health
from bot.logs import configure_logging, stop_logging
from bot.relay import SOCKET_NAME
from bot.remote import listen
from bot.runtime import Runtime
from bot.service_manager import ServiceManager
from bot.settings import Settings
from bot.slack_app import SlackBolt, build_bolt_app, build_web_client
from bot.slack_guard import SlackRequestGuard
from bot.slack_progress import sync_stale_messages
from bot.socket_mode import SocketModeTransport
from bot.web import build_web_app
from bot.webhook_rules import RuleError, check_rules
from bot.webhooks import WebhookEndpoints, secrets_of
from handlers.context import Transport
from services.health.schedule import HealthSchedule
from services.machines.recovery import reconcile

log = logging.getLogger("ctbot")

HOUSEKEEPING_SECONDS = 60.0
# How long a stop lets running jobs finish before it interrupts them (a create then
# rolls back). templates/service/ctbot.service.j2's TimeoutStopSec leaves room for it.
DRAIN_SECONDS = 30.0
REACH_SECONDS = 15.0  # how long READY waits for the hosts to answer


async def serve(settings: Settings, *, console_allowed: bool = True,
                log_level: str | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `quit` in the console); returns the exit status."""
    slack = settings.slack
    with_console = console_allowed and not (slack.http_enabled or slack.socket_mode_enabled)
    level = log_level or settings.log_level
    # The console's replies and log lines must not interleave: with the console, the log
    # goes to a file under the state directory, unless asked for debugging.
    log_file = settings.log_file or (
        settings.state_dir / "ctbot.log"
        if with_console and level != "debug" and not settings.log_to_stderr else None)
    configure_logging(level, secrets=slack.secrets + tuple(
        t for t in (settings.metrics.token,) if t) + secrets_of(settings.webhooks),
        path=log_file, threaded=True)
    manager = ServiceManager()
    manager.status(f"opening the store {settings.database_path}")
    runtime = await Runtime.open(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    runner: web.AppRunner | None = None
    slack_http = build_bolt_app(runtime, transport=Transport.SLACK) if slack.http_enabled else None
    slack_socket: SlackBolt | None = None
    socket_mode: SocketModeTransport | None = None
    housekeeping: asyncio.Task[None] | None = None
    console: asyncio.Task[None] | None = None
    schedule: HealthSchedule | None = None
    webhooks: WebhookEndpoints | None = None
    remote: asyncio.Server | None = None
    try:
        # Controllers' commands, handed over by `ctbot remote` (bot/relay.py): warm.
        # Without the socket (a path over AF_UNIX's 108 bytes, say) they still run, each
        # in a process of its own.
        try:
            remote = await listen(runtime.dispatcher, settings.state_dir / SOCKET_NAME)
        except OSError as exc:
            log.warning("no socket for controllers' commands path=%s error=%s; they run "
                        "in a process each", settings.state_dir / SOCKET_NAME, exc)
        if settings.webhooks:
            manager.status(f"checking {len(settings.webhooks)} webhook rules")
            check_rules(settings.webhooks, runtime.dispatcher.services.registry)
            webhooks = WebhookEndpoints(runtime, client=build_web_client(slack)
                                        if slack.bot_token else None)
            await webhooks.start()
        schedule = start_health(runtime)
        http_slack = slack_http is not None and bool(slack.signing_secret)
        if http_slack or settings.metrics.enabled or webhooks is not None:
            # The listener exists for what needs it (Slack over HTTP, /metrics,
            # webhooks); the console and Socket Mode alone never take a port.
            metrics = health_metrics(runtime, schedule) if settings.metrics.enabled else None
            manager.status(f"listening on {settings.listen}")
            runner = await _listen(settings, build_web_app(
                bolt_app=slack_http.app if http_slack and slack_http else None,
                guard=SlackRequestGuard(slack.signing_secret)
                if http_slack and slack.signing_secret else None,
                metrics=metrics.render if metrics else None,
                metrics_token=settings.metrics.token, webhooks=webhooks))
        log.info("started slack_http=%s socket_mode=%s console=%s webhooks=%d config=%s "
                 "state=%s", "on" if slack_http else "off",
                 "on" if slack.socket_mode_enabled else "off",
                 "on" if with_console else "off", len(settings.webhooks), settings.source,
                 settings.database_path)
        if slack.socket_mode_enabled and slack.app_token:
            manager.status("connecting to Slack (Socket Mode)")
            slack_socket = build_bolt_app(runtime, transport=Transport.SOCKET_MODE)
            socket_mode = SocketModeTransport(slack_socket.app, slack.app_token,
                                              silence_seconds=slack.socket_watchdog_seconds)
            await socket_mode.start()
        housekeeping = asyncio.create_task(
            _housekeeping(runtime, slack_http or slack_socket), name="housekeeping")
        if with_console:
            if log_file is not None:
                print(f"(log: {log_file})")
            if runtime.health.alerts is None:  # no Slack channel: incidents show here
                runtime.health.alerts = ConsoleAlerts()
            console = asyncio.create_task(run_console(runtime), name="console")
            console.add_done_callback(lambda _t: stop.set())
        elif not (slack.http_enabled or slack.socket_mode_enabled):
            log.warning("no Slack credentials and --no-console: only housekeeping runs")
        hosts = runtime.hosts.names()
        if hosts:
            manager.status(f"connecting to {len(hosts)} hosts")
            try:  # READY waits for the hosts at most REACH_SECONDS: systemd waits 90 s
                async with asyncio.timeout(REACH_SECONDS):
                    reachable = await _reach(runtime, hosts)
            except TimeoutError:
                reachable = 0
            log.info("hosts reachable=%d of=%d", reachable, len(hosts))
        manager.ready(_ready_status(settings, runtime, with_console=with_console))
        manager.start_watchdog()
        await stop.wait()
        return 0
    except (ListenError, RuleError) as exc:
        print(f"ctbot: {exc}", file=sys.stderr)
        return 2
    finally:
        running = len(runtime.jobs.running())
        log.info("stopping running_jobs=%d", running)
        manager.stopping(f"stopping: waiting up to {DRAIN_SECONDS:.0f} s for {running} "
                         "running jobs" if running else "stopping")
        if schedule is not None:
            await stop_health(runtime, schedule)
        for task in (housekeeping, console):
            if task is not None:
                task.cancel()
        if socket_mode is not None:
            await socket_mode.stop()
        if remote is not None:
            remote.close()
        if runner is not None:
            await runner.cleanup()  # no new requests; then let started commands finish
        if webhooks is not None:
            await webhooks.drain()
        for bolt in (slack_http, slack_socket):
            if bolt is not None:
                await bolt.close()
        await runtime.close(drain=DRAIN_SECONDS)
        await manager.close()
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
        stop_logging()


async def _reach(runtime: Runtime, names: list[str]) -> int:
    """Connect to every host (each within [hosts] timeout): READY comes once they are
    up, or known to be down. Returns how many answered."""
    from handlers.roles import Role
    from services.hosts.protocol import RemoteReply, RemoteRequest

    request = RemoteRequest(controller=runtime.settings.hosts.name, user="ctbot",
                            role=str(Role.VIEWER), words=[("host", False), ("info", False)],
                            verb="host info", wants_text=False)
    answers = await runtime.hosts.gather(names, request)
    return sum(1 for a in answers.values() if isinstance(a, RemoteReply))


def _ready_status(settings: Settings, runtime: Runtime, *, with_console: bool) -> str:
    """The line `systemctl status ctbot` shows while ctbot runs."""
    slack = settings.slack
    via = [name for name, on in (("Slack HTTP", slack.http_enabled),
                                 ("Socket Mode", slack.socket_mode_enabled),
                                 ("console", with_console)) if on]
    if settings.webhooks:
        via.append(f"{len(settings.webhooks)} webhooks")
    hosts = runtime.hosts.names()
    return (f"ready: {', '.join(via) or 'housekeeping only'}; "
            f"{len(runtime.machines.records.all())} machines"
            + (f"; {len(hosts)} hosts" if hosts else ""))


class ListenError(Exception):
    """The web app cannot listen where it is configured to."""


async def _listen(settings: Settings, app: web.Application) -> web.AppRunner:
    # shutdown_timeout: requests in flight get 10 s at a stop (aiohttp's default is 60),
    # so that the whole stop fits in the unit's TimeoutStopSec after the jobs' drain.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.listen.host, settings.listen.port).start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(f"cannot listen on {settings.listen} ([http] listen / "
                          f"CTBOT_LISTEN): {reason}") from None
    log.info("listening address=%s", settings.listen)
    return runner


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
            runtime.webhooks.store.prune()
            await reconcile(runtime.machines)
        except Exception:
            log.exception("housekeeping failed; retrying in a minute")
