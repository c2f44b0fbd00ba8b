"""Our aiohttp app: ``POST /slack/events`` (Bolt behind bot/slack_guard.py), ``GET /healthz``."""

from __future__ import annotations

import logging
import re

from aiohttp import web
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.slack_guard import SlackRequestGuard

log = logging.getLogger(__name__)

# Slack's payloads are a few KB; anything near this is not from Slack.
MAX_BODY_BYTES = 1024 * 1024
FORM = "application/x-www-form-urlencoded"


def build_web_app(*, bolt_app: AsyncApp | None = None,
                  guard: SlackRequestGuard | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/healthz", healthz)
    if bolt_app is not None:
        if guard is None:
            # Bolt's own signature check is off (the guard is stricter): never without it.
            raise ValueError("the Slack endpoint needs a SlackRequestGuard")
        app.router.add_post("/slack/events", SlackEventsEndpoint(bolt_app, guard).handle)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


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
