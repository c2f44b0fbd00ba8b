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

The body is never logged, nor quoted in an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot import signatures
from bot.runtime import Runtime, new_correlation_id
from bot.slack_progress import SlackJobMessage
from handlers.context import Catalog, CommandRequest, Transport
from handlers.grammar import parse_args, split_words
from handlers.roles import Role
from services.core.audit import Outcome
from services.core.errors import UserError
from services.core.jobs import Job, JobObserver
from services.grammar import QuotedWord, delivery_id_or_none
from services.webhooks import messages
from services.webhooks.commands import Command, matching_rule, render, shape, why_no_rule
from services.webhooks.config import Auth, Rule, WebhookConfig
from services.webhooks.lanes import Admission, Lane
from services.webhooks.store import Delivery, DeliveryState

log = logging.getLogger(__name__)

ACK_BUDGET = 1.0  # seconds a POST waits for its command to become a job (or finish)
BODY_SECONDS = 30  # a body that takes longer is refused (a slow client holds a socket)
DRAIN_SECONDS = 10.0
FORM = "application/x-www-form-urlencoded"
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "x-hub-signature",
                                "x-hub-signature-256", "webhook-signature"})


class RuleError(Exception):
    """A rule that can never run as configured (unknown verb, role, confirmation)."""


def check_rules(configs: Sequence[WebhookConfig], registry: Catalog) -> None:
    """Every rule's verb exists, its ``run_as`` role may run it, a destructive one has
    ``confirm = true``, and its options and arguments fit the verb (each ``{{ … }}`` one
    value; skipped for templates with ``{% … %}``): said at start, not at the first
    delivery. Raises RuleError naming the webhook and the rule."""
    for config in configs:
        role = Role(config.run_as)
        for rule in config.rules:
            where = f"config: [[webhooks]] {config.name} rules[{rule.number}] do"
            try:
                verb, _ = registry.resolve(split_words(rule.verb_text))
            except UserError as exc:
                raise RuleError(f"{where}: {exc}") from None
            if not role.allows(verb.role):
                raise RuleError(f"{where}: `{verb.name}` needs the {verb.role} role; the "
                                f"webhook runs as {role} (run_as)")
            if verb.confirm and not rule.confirm:
                raise RuleError(f"{where}: `{verb.name}` cannot be undone: set "
                                "`confirm = true` on the rule to let a webhook run it")
            words = shape(rule.do)
            if words is None:
                continue
            # The verb's own grammar with every value accepted: what is checked here
            # is the shape (options, how many arguments), not the delivery's values.
            loose = replace(verb.signature, positionals=tuple(
                replace(p, parse=str) for p in verb.signature.positionals), flags=tuple(
                replace(f, parse=str) for f in verb.signature.flags))
            written = next((i for i, w in enumerate(words) if isinstance(w, QuotedWord)),
                           len(words))
            rest = [*words[len(verb.name.split()):written], *words[written:]]
            try:
                parse_args(verb.name, loose, rest)
            except UserError as exc:
                raise RuleError(f"{where}: {exc}") from None


@dataclass
class InFlight:
    """A delivery between its POST and its end, as the POST's answer needs it."""

    answerable: asyncio.Event = field(default_factory=asyncio.Event)
    state: DeliveryState = DeliveryState.QUEUED
    job_id: int | None = None
    result: str | None = None


class DeliveryObserver:
    """Hears of the delivery's job: records its id, lets the POST answer, and passes
    progress on to the channel's one message (when there is a channel)."""

    def __init__(self, endpoint: WebhookEndpoints, config: WebhookConfig, delivery_id: str,
                 flight: InFlight, chat: SlackJobMessage | None) -> None:
        self._endpoint = endpoint
        self._config = config
        self._delivery_id = delivery_id
        self._flight = flight
        self.chat = chat

    async def job_changed(self, job: Job) -> None:
        if self._flight.job_id is None:
            self._flight.job_id = job.id
            self._endpoint.deliveries.update(self._config.name, self._delivery_id,
                                             job_id=job.id)
            self._flight.answerable.set()
        if self.chat is not None:
            await self.chat.job_changed(job)


class WebhookEndpoints:
    """The webhook routes of one serve, with their lanes and deliveries in flight."""

    def __init__(self, runtime: Runtime, *, client: AsyncWebClient | None) -> None:
        self._runtime = runtime
        self._client = client
        self._configs = {c.name: c for c in runtime.settings.webhooks}
        self.deliveries = runtime.webhooks.store
        self._lanes = {(c.name, r.number): Lane(r.concurrency)
                       for c in self._configs.values() for r in c.rules}
        # The verb each rule was checked as at start (check_rules): a rendered command
        # must have that verb, whatever its template's {% … %} blocks made.
        registry = runtime.dispatcher.services.registry
        self._verbs = {(c.name, r.number): registry.resolve(split_words(r.verb_text))[0].name
                       for c in self._configs.values() for r in c.rules}
        self._flights: dict[tuple[str, str], InFlight] = {}
        self._posts: set[asyncio.Task[None]] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/hooks/{name}", self.post)
        app.router.add_get("/hooks/{name}/deliveries/{delivery_id:.+}", self.get)
        # Everything else under /hooks/ answers in JSON too, as senders parse it.
        app.router.add_route("*", "/hooks/{name}", _only("POST"))
        app.router.add_route("*", "/hooks/{name}/deliveries/{delivery_id:.+}", _only("GET"))
        app.router.add_route("*", "/hooks/{tail:.*}", _not_found)

    async def start(self) -> None:
        """Before the listener opens: deliveries whose command was running when ctbot
        last stopped are marked interrupted; queued ones are taken up again, in order."""
        interrupted = self.deliveries.interrupt_running()
        if interrupted:
            log.warning("webhook deliveries interrupted by the last stop count=%d "
                        "(their commands' jobs say how far they got)", interrupted)
        for delivery, words in self.deliveries.queued():
            self._resume(delivery, words)
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
        for (name, number), lane in self._lanes.items():
            waiting = await lane.drain(DRAIN_SECONDS)
            if waiting:
                log.info("webhook deliveries left queued for the next start webhook=%s "
                         "rule=%d count=%d", name, number, len(waiting))
        if self._posts:
            await asyncio.wait(set(self._posts), timeout=DRAIN_SECONDS)

    # ------------------------------------------------------------------ requests

    async def post(self, request: web.Request) -> web.Response:
        config, refusal = self._config_of(request)
        if config is None:
            return refusal
        try:
            async with asyncio.timeout(BODY_SECONDS):
                raw = await _read_bounded(request, config.max_body)
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
            payload = _payload(raw, form=config.auth is Auth.GITHUB
                               and request.content_type == FORM
                               and raw.startswith(b"payload="))
        except ValueError as exc:
            return self._refuse(request, config, 400, str(exc))
        # What rules and templates see of the headers: never the credentials.
        headers = {k.lower(): v for k, v in request.headers.items()
                   if k.lower() not in CREDENTIAL_HEADERS}
        rule = matching_rule(config.rules, headers, payload)
        if rule is None:
            return self._settled(config, delivery_id, DeliveryState.NO_MATCH, None,
                                 why_no_rule(config.rules, headers, payload), digest)
        try:
            command = render(rule, payload=payload, headers=headers, webhook=config.name,
                             delivery=delivery_id)
        except UserError as exc:
            return self._settled(config, delivery_id, DeliveryState.FAILED, rule, str(exc),
                                 digest)
        return await self._admit(config, rule, delivery_id, command, digest)

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
                                  "status_url": self._status_url(config, found.id)})

    # ------------------------------------------------------------------ running

    async def _admit(self, config: WebhookConfig, rule: Rule, delivery_id: str,
                     command: Command, digest: str | None) -> web.Response:
        lane = self._lanes[(config.name, rule.number)]
        # Decided, recorded and admitted in one step of the event loop (no await between):
        # the state stored is what the lane then does.
        admitted = lane.admission()
        if admitted.admission is Admission.FULL:
            log.warning("webhook delivery refused webhook=%s delivery=%s rule=%d "
                        "reason=too many waiting", config.name, delivery_id, rule.number)
            return web.json_response({"error": "too many deliveries are waiting for this "
                                      "rule; retry later"}, status=503,
                                     headers={"Retry-After": "30"})
        state = DeliveryState(str(admitted.admission))
        skipped = messages.skipped(admitted.other) if state is DeliveryState.SKIPPED else None
        first = self.deliveries.claim(
            config.name, delivery_id, state=state, rule=rule.number, command=command.text,
            words=_stored(rule, command) if state is DeliveryState.QUEUED else None,
            result=skipped, digest=digest)
        if first is not None:
            return self._duplicate(config, delivery_id, first)
        if skipped is not None:
            log.info("webhook delivery webhook=%s delivery=%s rule=%d state=skipped "
                     "running=%s", config.name, delivery_id, rule.number, admitted.other)
            return web.json_response({**self._answer(config, delivery_id, state, rule=rule,
                                                     command=command), "result": skipped},
                                     status=202)
        flight = self._enter(config, rule, delivery_id, command, state, lane)
        if admitted.other is not None:  # coalesce: the one that waited is replaced
            self._flights.pop((config.name, admitted.other), None)
            self.deliveries.update(config.name, admitted.other,
                                   state=DeliveryState.COALESCED, superseded_by=delivery_id,
                                   result=messages.coalesced(delivery_id))
        log.debug("webhook delivery webhook=%s delivery=%s rule=%d state=%s", config.name,
                  delivery_id, rule.number, state)
        if state is DeliveryState.RUNNING:  # answered with its job (or its result)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ACK_BUDGET):
                    await flight.answerable.wait()
        answer = self._answer(config, delivery_id, flight.state, rule=rule, command=command,
                              job_id=flight.job_id)
        if flight.result is not None:  # it finished before the answer went out
            answer["result"] = flight.result
        return web.json_response(answer, status=202)

    def _enter(self, config: WebhookConfig, rule: Rule, delivery_id: str, command: Command,
               state: DeliveryState, lane: Lane) -> InFlight:
        """Hand a recorded delivery to its rule's lane."""
        flight = InFlight(state=state)
        key = (config.name, delivery_id)
        self._flights[key] = flight

        async def work() -> None:
            try:
                await self._run(config, rule, delivery_id, command, flight)
            finally:
                self._flights.pop(key, None)
                flight.answerable.set()

        lane.admit(delivery_id, work)
        return flight

    def _resume(self, delivery: Delivery, words: str | None) -> None:
        """A delivery that was queued when ctbot stopped: run it now, unless its rule
        changed meanwhile (then it is interrupted, saying so)."""
        config = self._configs.get(delivery.webhook)
        rule = next((r for r in config.rules if r.number == delivery.rule), None) \
            if config is not None else None
        stored = json.loads(words) if words else None
        if config is None or rule is None or stored is None or stored["do"] != rule.do:
            self.deliveries.update(delivery.webhook, delivery.id,
                                   state=DeliveryState.INTERRUPTED,
                                   result="ctbot stopped before it ran, and its rule is no "
                                          "longer in the config as it was; redeliver it "
                                          "to run it under the current rules")
            return
        command = Command.from_json(stored["words"])
        self._enter(config, rule, delivery.id, command, DeliveryState.QUEUED,
                    self._lanes[(config.name, rule.number)])
        log.info("webhook delivery taken up again webhook=%s delivery=%s rule=%d",
                 config.name, delivery.id, rule.number)

    async def _run(self, config: WebhookConfig, rule: Rule, delivery_id: str,
                   command: Command, flight: InFlight) -> None:
        started = time.monotonic()
        if flight.state is DeliveryState.QUEUED:
            # Its turn came: recorded before it starts, so that neither a stop nor a crash
            # runs it again (a command may change things whatever its verb says).
            self.deliveries.update(config.name, delivery_id, state=DeliveryState.RUNNING)
        flight.state = DeliveryState.RUNNING
        channel = rule.channel or config.channel
        chat = (SlackJobMessage(self._client, channel, jobs=self._runtime.jobs.store)
                if self._client is not None and channel else None)
        observer: JobObserver = DeliveryObserver(self, config, delivery_id, flight, chat)
        cid = new_correlation_id()
        reply = await self._runtime.dispatcher.dispatch(CommandRequest(
            text=command.text, words=command.words, user_id=f"webhook:{config.name}",
            transport=Transport.WEBHOOK, correlation_id=cid,
            channel_id=channel, confirmed=rule.confirm, observer=observer,
            run_as=Role(config.run_as), verb=self._verbs[(config.name, rule.number)]))
        flight.state = DeliveryState.SUCCEEDED if reply.ok else DeliveryState.FAILED
        text = flight.result = reply.text
        self.deliveries.update(config.name, delivery_id, state=flight.state,
                               outcome=str(reply.outcome), result=text)
        log.info("webhook delivery webhook=%s delivery=%s rule=%d state=%s job=%s ms=%.1f "
                 "cid=%s", config.name, delivery_id, rule.number, flight.state,
                 reply.job_id or "-", (time.monotonic() - started) * 1000, cid)
        if channel and self._client is not None and not (chat is not None and chat.posted):
            self._post(channel, messages.posted_result(config.name, delivery_id,
                                                       command.text, text))

    def _settled(self, config: WebhookConfig, delivery_id: str, state: DeliveryState,
                 rule: Rule | None, result: str, digest: str | None) -> web.Response:
        """A delivery that ends as it comes: no rule matched, or the rule's command
        cannot be made (recorded, audited and posted like a refused command)."""
        first = self.deliveries.claim(config.name, delivery_id, state=state,
                                      rule=rule.number if rule else None, result=result,
                                      digest=digest)
        if first is not None:
            return self._duplicate(config, delivery_id, first)
        log.info("webhook delivery webhook=%s delivery=%s rule=%s state=%s reason=%r",
                 config.name, delivery_id, rule.number if rule else "-", state, result)
        if rule is not None:
            self._runtime.dispatcher.services.audit.record(
                user_id=f"webhook:{config.name}", role=config.run_as,
                transport=Transport.WEBHOOK, command=f"(rule {rule.number}: {rule.do})",
                outcome=Outcome.USER_ERROR, detail=result,
                correlation_id=new_correlation_id())
            channel = rule.channel or config.channel
            if channel and self._client is not None:
                self._post(channel, messages.posted_result(config.name, delivery_id,
                                                           f"rule {rule.number}", result))
        return web.json_response({**self._answer(config, delivery_id, state, rule=rule),
                                  "result": result}, status=202)

    def _duplicate(self, config: WebhookConfig, delivery_id: str,
                   first: Delivery) -> web.Response:
        """A copy: the first delivery's id (a GitHub body seen under another id is that
        delivery), state and result; 200, nothing runs."""
        log.info("webhook delivery duplicate webhook=%s delivery=%s of=%s state=%s",
                 config.name, delivery_id, first.id, first.state)
        return web.json_response({**self._answer(config, first.id, first.state,
                                                 job_id=first.job_id),
                                  "rule": first.rule, "command": first.command,
                                  "duplicate": True, "result": first.result}, status=200)

    def _post(self, channel: str, text: str) -> None:
        assert self._client is not None
        client = self._client

        async def post() -> None:
            try:
                await client.chat_postMessage(channel=channel,
                                              text=html.escape(text, quote=False),
                                              unfurl_links=False, unfurl_media=False)
            except Exception as exc:
                log.warning("webhook result not posted channel=%s error=%s", channel, exc)

        task = asyncio.create_task(post(), name="webhook-post")
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

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

    def _answer(self, config: WebhookConfig, delivery_id: str, state: DeliveryState, *,
                rule: Rule | None = None, command: Command | None = None,
                job_id: int | None = None) -> dict[str, Any]:
        return {"webhook": config.name, "delivery": delivery_id, "state": str(state),
                "rule": rule.number if rule else None,
                "command": command.text if command else None, "job": job_id,
                "status_url": self._status_url(config, delivery_id)}

    @staticmethod
    def _status_url(config: WebhookConfig, delivery_id: str) -> str:
        return f"{config.path}/deliveries/{urllib.parse.quote(delivery_id, safe='')}"


def _only(method: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": f"{request.method} is not allowed here; use "
                                  f"{method}"}, status=405, headers={"Allow": method})
    return refuse


async def _not_found(request: web.Request) -> web.Response:
    return web.json_response({"error": "no such webhook (POST /hooks/NAME)"}, status=404)


async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` bytes (read no further)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _payload(raw: bytes, *, form: bool) -> Any:
    """The JSON payload: the body, or in GitHub's form encoding (``form``: its
    ``payload=…`` field); an empty body is ``{}``. Any other Content-Type is read as
    JSON (curl's -d sends a form type). Raises ValueError saying what is wrong, never
    quoting the body."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8") from None
    if form:
        fields = urllib.parse.parse_qs(text, max_num_fields=10)
        values = fields.get("payload")
        if not values or len(values) != 1:
            raise ValueError("a form body needs exactly one `payload` field (GitHub's "
                             "application/x-www-form-urlencoded)")
        text = values[0]
    try:
        return json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" \
            if isinstance(exc, json.JSONDecodeError) else ""
        raise ValueError(f"the body is not JSON{where}") from None


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is too large for a number")
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON (RFC 8259 has no NaN or Infinity)")


def _stored(rule: Rule, command: Command) -> str:
    """What a queued delivery keeps to run after a restart: its words, and the rule's
    template they came from (a changed rule does not run old words)."""
    return json.dumps({"do": rule.do, "words": command.to_json()})


def secrets_of(configs: Iterable[WebhookConfig]) -> tuple[str, ...]:
    """Every webhook secret as set, for the log's redaction."""
    return tuple(s for c in configs for s in c.secret_texts)

