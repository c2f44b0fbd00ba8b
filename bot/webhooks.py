"""``POST /hooks/NAME`` and ``GET /hooks/NAME/deliveries/ID``: other systems run ctbot
commands, each delivery once.

A POST is, in order: the body read within the webhook's limit and BODY_SECONDS (413,
408), its signature checked on the raw bytes (bot/signatures.py: 401 bad, 400
malformed), the JSON read (400), the first matching rule's command rendered
(services/webhooks/commands.py), the delivery claimed by its id (a copy gets 200 and
the first one's state; nothing runs) and handed to the rule's lane
(services/webhooks/lanes.py). The answer, 202, goes out as soon as the command has
become a job, has finished, or has waited ``ACK_BUDGET`` seconds — whichever is first —
with the delivery's id, state and job (a queued delivery is answered at once). The command runs
through the same dispatcher as chat (parser, role ``run_as``, confirmation, audit as
``webhook:NAME``); its job's progress and its result go to the rule's channel.

Here: the routes, and each request up to its command. The body and its payload are read
by bot/webhook_payloads.py, the delivery is run by bot/webhook_deliveries.py, the answers'
JSON is bot/webhook_answers.py's; bot/webhook_rules.py checks the rules at start.

The body is never logged, nor quoted in an answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable

import aiohttp
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot import signatures
from bot.runtime import Runtime
from bot.webhook_answers import not_found, only, status_url
from bot.webhook_deliveries import DeliveryRunner
from bot.webhook_payloads import parse_payload, read_bounded
from services.core.errors import UserError
from services.grammar.webhooks import delivery_id_or_none
from services.webhooks import messages
from services.webhooks.commands import matching_rule, render, why_no_rule
from services.webhooks.config import Auth, WebhookConfig
from services.webhooks.store import DeliveryState

log = logging.getLogger(__name__)

BODY_SECONDS = 30  # a body that takes longer is refused (a slow client holds a socket)
FORM = "application/x-www-form-urlencoded"
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "x-hub-signature",
                                "x-hub-signature-256", "webhook-signature"})


class WebhookEndpoints:
    """The webhook routes of one serve, with their lanes and deliveries in flight."""

    def __init__(self, runtime: Runtime, *, client: AsyncWebClient | None) -> None:
        self._runtime = runtime
        self._client = client
        self._configs = {c.name: c for c in runtime.settings.webhooks}
        self.deliveries = runtime.webhooks.store
        self._runner = DeliveryRunner(runtime, self._configs, client=client)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/hooks/{name}", self.post)
        app.router.add_get("/hooks/{name}/deliveries/{delivery_id:.+}", self.get)
        # Everything else under /hooks/ answers in JSON too, as senders parse it.
        app.router.add_route("*", "/hooks/{name}", only("POST"))
        app.router.add_route("*", "/hooks/{name}/deliveries/{delivery_id:.+}", only("GET"))
        app.router.add_route("*", "/hooks/{tail:.*}", not_found)

    async def start(self) -> None:
        """Before the listener opens: deliveries whose command was running when ctbot
        last stopped are marked interrupted; queued ones are taken up again, in order."""
        self._runner.start()
        for config in self._configs.values():
            for problem in config.secret_problems:
                log.warning("webhook secret not used webhook=%s reason=%r", config.name,
                            problem)
            if not config.secrets:
                log.warning("webhook refuses every request webhook=%s reason=%r",
                            config.name, messages.no_secret(config.name, config.secret_env))
            channels = {r.channel or config.channel for r in config.rules} - {None}
            if channels and self._client is None:
                log.warning("webhook results not posted webhook=%s reason=%r", config.name,
                            messages.no_channel_client(config.name,
                                                       ", ".join(sorted(map(str, channels)))))
            log.info("webhook ready path=%s auth=%s run_as=%s rules=%d", config.path,
                     config.auth, config.run_as, len(config.rules))

    async def drain(self) -> None:
        """At stop: running commands finish (bounded); waiting ones stay queued in the
        store and run at the next start."""
        await self._runner.drain()

    # ------------------------------------------------------------------ requests

    async def post(self, request: web.Request) -> web.Response:
        config, refusal = self._config_of(request)
        if config is None:
            return refusal
        try:
            async with asyncio.timeout(BODY_SECONDS):
                raw = await read_bounded(request, config.max_body)
        except TimeoutError:
            return self._refuse(request, config, 408, f"the body took over {BODY_SECONDS} s")
        except (ConnectionError, aiohttp.ClientError) as exc:
            log.info("webhook request abandoned webhook=%s reason=%r remote=%s",
                     config.name, str(exc) or type(exc).__name__, request.remote)
            return web.Response(status=400)
        if raw is None:
            return self._refuse(request, config, 413,
                                f"the body is over this webhook's limit of "
                                f"{config.max_body} bytes (max_body)")
        if not raw and config.auth is Auth.GITHUB:
            return self._refuse(request, config, 400, "an empty body (GitHub always sends "
                                                      "one)")
        verdict = signatures.verify(config.auth, config.secrets, raw, request.headers,
                                    now=time.time())
        if not verdict.accepted:
            return self._refuse(request, config, verdict.status, verdict.reason)
        delivery_id = str(verdict.delivery_id)
        # GitHub signs the body only: its delivery id and headers are not signed, so a
        # body seen before is the same delivery, whatever id or event it comes with.
        digest = hashlib.sha256(raw).hexdigest() if config.auth is Auth.GITHUB else None
        try:
            # GitHub's form type carries `payload=…`; a JSON body sent with curl -d's
            # default form type is read as the JSON it is.
            payload = parse_payload(raw, form=config.auth is Auth.GITHUB
                                    and request.content_type == FORM
                                    and raw.startswith(b"payload="))
        except ValueError as exc:
            return self._refuse(request, config, 400, str(exc))
        # What rules and templates see of the headers: never the credentials.
        headers = {k.lower(): v for k, v in request.headers.items()
                   if k.lower() not in CREDENTIAL_HEADERS}
        rule = matching_rule(config.rules, headers, payload)
        if rule is None:
            return self._runner.settled(config, delivery_id, DeliveryState.NO_MATCH, None,
                                        why_no_rule(config.rules, headers, payload), digest)
        try:
            command = render(rule, payload=payload, headers=headers, webhook=config.name,
                             delivery=delivery_id)
        except UserError as exc:
            return self._runner.settled(config, delivery_id, DeliveryState.FAILED, rule,
                                        str(exc), digest)
        return await self._runner.admit(config, rule, delivery_id, command, digest)

    async def get(self, request: web.Request) -> web.Response:
        config, refusal = self._config_of(request)
        if config is None:
            return refusal
        delivery_id = delivery_id_or_none(request.match_info["delivery_id"])
        path = f"{config.path}/deliveries/{request.match_info['delivery_id']}"
        verdict = signatures.verify_read(config.auth, config.secrets, path, request.headers,
                                         now=time.time())
        if not verdict.accepted:
            return self._refuse(request, config, verdict.status, verdict.reason)
        found = self.deliveries.get(config.name, delivery_id) if delivery_id else None
        if found is None:
            return web.json_response({"error": "no such delivery (they are kept 7 days)"},
                                     status=404)
        job = None
        if found.job_id is not None:
            job = self._runtime.jobs.store.get(found.job_id).to_json()
        return web.json_response({**found.to_json(), "job": job,
                                  "status_url": status_url(config, found.id)})

    # ------------------------------------------------------------------ answers

    def _config_of(self, request: web.Request) -> tuple[WebhookConfig | None, web.Response]:
        config = self._configs.get(request.match_info["name"])
        if config is None:
            return None, web.json_response({"error": "no such webhook"}, status=404)
        if not config.secrets:
            log.warning("webhook request refused webhook=%s status=503 reason=%r",
                        config.name, messages.no_secret(config.name, config.secret_env))
            return None, web.json_response(
                {"error": "this webhook has no secret configured on the ctbot side"},
                status=503)
        return config, web.Response()

    def _refuse(self, request: web.Request, config: WebhookConfig, status: int,
                reason: str) -> web.Response:
        log.info("webhook request rejected webhook=%s status=%d reason=%r remote=%s",
                 config.name, status, reason, request.remote)
        return web.json_response({"error": reason}, status=status)


def secrets_of(configs: Iterable[WebhookConfig]) -> tuple[str, ...]:
    """Every webhook secret as set, for the log's redaction."""
    return tuple(s for c in configs for s in c.secret_texts)

