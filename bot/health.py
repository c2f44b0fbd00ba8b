"""Wiring for health checks in `ctbot serve`: the schedule, Slack alerts, /metrics."""

from __future__ import annotations

import logging

from bot.runtime import Runtime
from bot.slack_alerts import SlackAlerts
from bot.slack_app import build_web_client
from handlers.views import render_view
from services.core.errors import InvalidInput
from services.health.metrics import Metrics
from services.health.schedule import HealthSchedule

log = logging.getLogger(__name__)


def start_health(runtime: Runtime) -> HealthSchedule:
    """Alerts to `[health] channel` (when Slack has a bot token), and the scheduler."""
    settings, health = runtime.settings, runtime.health
    config = settings.health
    if config.channel and settings.slack.bot_token:
        health.alerts = SlackAlerts(build_web_client(settings.slack), config.channel,
                                    host=settings.hosts.name)
    elif config.channel:
        log.warning("[health] channel is set but SLACK_BOT_TOKEN is not: incidents go to "
                    "the log and `health` only")

    async def sweep() -> None:
        report = await health.monitor.sweep()
        log.debug("health sweep checks=%d probed=%d took=%.3fs transitions=%d posted=%d",
                  report.checks, report.probed, report.took, report.transitions,
                  report.posted)

    async def digest() -> None:
        await health.post_digest(lambda data: render_view("health_digest", data))

    async def prune() -> None:
        health.prune()

    if config.timeout >= config.interval:
        log.warning("[health] timeout (%gs) is not shorter than interval (%gs): a sweep "
                    "with a silent machine takes the whole interval, and the next is "
                    "skipped", config.timeout, config.interval)
    schedule = HealthSchedule(runtime.store, interval=config.interval,
                              digest=config.digest_time, timezone=config.timezone,
                              sweep=sweep, send_digest=digest, prune=prune)
    schedule.start()
    log.info("health checks every %gs; digest at %s %s; alerts to %s", config.interval,
             config.digest_at, config.timezone,
             config.channel if health.alerts else "the log")
    return schedule


async def stop_health(runtime: Runtime, schedule: HealthSchedule) -> None:
    """No new jobs; the sweep in progress (if any) ends before ctbot does."""
    schedule.pause()
    await runtime.health.monitor.idle(timeout=runtime.settings.health.timeout * 2 + 5)
    schedule.shutdown()


def health_metrics(runtime: Runtime, schedule: HealthSchedule) -> Metrics:
    registry = runtime.dispatcher.services.registry

    def verb_of(command: str) -> str:
        words = command.split()
        if not words:
            return "none"
        try:
            return registry.resolve(words)[0].name
        except InvalidInput:  # audited, but no such verb
            return "unknown"

    metrics = Metrics(runtime.store, runtime.health, runtime.health.machines,
                      verb_of=verb_of)
    schedule.on_lag = metrics.scheduler_lag.observe
    schedule.on_skip = metrics.sweeps_skipped.inc
    return metrics
