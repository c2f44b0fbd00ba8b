"""The JSON every ``/hooks/`` request is answered with: a delivery's id, state, rule,
command, job and status URL; and the refusals of a method or path that is not served.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.webhooks.commands import Command
from services.webhooks.config import Rule, WebhookConfig
from services.webhooks.store import DeliveryState


def answer(config: WebhookConfig, delivery_id: str, state: DeliveryState, *,
           rule: Rule | None = None, command: Command | None = None,
           job_id: int | None = None) -> dict[str, Any]:
    return {"webhook": config.name, "delivery": delivery_id, "state": str(state),
            "rule": rule.number if rule else None,
            "command": command.text if command else None, "job": job_id,
            "status_url": status_url(config, delivery_id)}


def status_url(config: WebhookConfig, delivery_id: str) -> str:
    return f"{config.path}/deliveries/{urllib.parse.quote(delivery_id, safe='')}"


def only(method: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": f"{request.method} is not allowed here; use "
                                  f"{method}"}, status=405, headers={"Allow": method})
    return refuse


async def not_found(request: web.Request) -> web.Response:
    return web.json_response({"error": "no such webhook (POST /hooks/NAME)"}, status=404)
