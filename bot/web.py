"""Our aiohttp app: ``POST /slack/events`` (Bolt behind bot/slack_guard.py), ``GET /healthz``,
``GET /metrics`` (Prometheus, when enabled), ``/hooks/NAME`` (bot/webhooks.py)."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable

from aiohttp import web
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.slack_guard import SlackRequestGuard
from bot.webhooks import WebhookEndpoints

log = logging.getLogger(__name__)

# Slack's payloads are a few KB; anything near this is not from Slack.
MAX_BODY_BYTES = 1024 * 1024
FORM = "application/x-www-form-urlencoded"


METRICS_TYPE = "text/plain; version=0.0.4"  # Prometheus's text exposition format


def build_web_app(*, bolt_app: AsyncApp | None = None,
                  guard: SlackRequestGuard | None = None,
                  metrics: Callable[[], bytes] | None = None,
                  metrics_token: str | None = None,
                  webhooks: WebhookEndpoints | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/healthz", healthz)
    if webhooks is not None:
        webhooks.add_routes(app)
    if metrics is not None:
        app.router.add_get("/metrics", MetricsEndpoint(metrics, metrics_token).handle)
    if bolt_app is not None:
        if guard is None:
            # Bolt's own signature check is off (the guard is stricter): never without it.
            raise ValueError("the Slack endpoint needs a SlackRequestGuard")
        app.router.add_post("/slack/events", SlackEventsEndpoint(bolt_app, guard).handle)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class MetricsEndpoint:
    """GET /metrics; with a token, only for ``Authorization: Bearer TOKEN`` (compared in
    constant time). Collecting reads SQLite: milliseconds, so it runs on the loop."""

    def __init__(self, render: Callable[[], bytes], token: str | None) -> None:
        self._render = render
        self._token = token

    async def handle(self, request: web.Request) -> web.Response:
        if self._token is not None:
            # Bytes as they came (aiohttp decoded them with surrogate escapes): a header
            # that is not UTF-8 is a wrong token, not an error. The scheme is
            # case-insensitive (RFC 7235 §2.1), the token is compared in constant time.
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token,
                                                                       self._token.encode()):
                log.info("metrics request rejected status=401 remote=%s", request.remote)
                return web.Response(status=401, text="a bearer token is required\n",
                                    headers={"WWW-Authenticate": "Bearer"})
        return web.Response(body=self._render(),
                            headers={"Content-Type": f"{METRICS_TYPE}; charset=utf-8"})


class SlackEventsEndpoint:
    def __init__(self, bolt_app: AsyncApp, guard: SlackRequestGuard) -> None:
        self._bolt = bolt_app
        self._guard = guard

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            log.info("slack request rejected status=413 bytes=%d", request.content_length)
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES,
                                                actual_size=request.content_length)
        raw = await request.read()  # raises 413 past client_max_size
        verdict = self._guard.check(raw, request.headers)
        if verdict.duplicate:
            log.info("slack request ignored reason=%r retry_num=%s", verdict.reason,
                     request.headers.get("X-Slack-Retry-Num", "-"))
            return web.Response(status=200)
        if not verdict.accepted:
            log.info("slack request rejected status=%d reason=%r remote=%s", verdict.status,
                     verdict.reason, request.remote)
            return web.json_response({"error": verdict.reason}, status=verdict.status)
        if request.content_type != FORM:
            # Slash commands and button clicks come as forms; nothing else is Slack's here.
            log.info("slack request rejected status=415 content_type=%s",
                     request.content_type)
            return web.json_response({"error": "expected a form"}, status=415)
        bolt_response = await self._bolt.async_dispatch(AsyncBoltRequest(
            body=verdict.body, query=request.query_string, headers=dict(request.headers),
        ))
        content_type = bolt_response.headers.pop(
            "content-type",
            ["application/json" if bolt_response.body.startswith("{") else "text/plain"],
        )[0]
        return web.Response(
            status=bolt_response.status,
            body=bolt_response.body.encode(),
            content_type=re.sub(r";\s*charset=utf-8", "", content_type),
            charset="utf-8",
        )
