"""A webhook delivery from its claim to its end: admitted to its rule's lane
(services/webhooks/lanes.py), run through the dispatcher, its state and result recorded
(services/webhooks/store.py) and posted to the rule's channel.

A POST is answered (bot/webhooks.py) as soon as the command has become a job, has
finished, or has waited ``ACK_BUDGET`` seconds, whichever is first; a queued delivery is
answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot.runtime import Runtime, new_correlation_id
from bot.slack_progress import SlackJobMessage
from bot.webhook_answers import answer
from handlers.context import CommandRequest, Transport
from handlers.grammar import split_words
from handlers.roles import Role
from services.core.audit import Outcome
from services.core.jobs import Job, JobObserver
from services.webhooks import messages
from services.webhooks.commands import Command
from services.webhooks.config import Rule, WebhookConfig
from services.webhooks.lanes import Admission, Lane
from services.webhooks.store import Delivery, DeliveryState

log = logging.getLogger(__name__)

ACK_BUDGET = 1.0  # seconds a POST waits for its command to become a job (or finish)
DRAIN_SECONDS = 10.0


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

    def __init__(self, runner: DeliveryRunner, config: WebhookConfig, delivery_id: str,
                 flight: InFlight, chat: SlackJobMessage | None) -> None:
        self._runner = runner
        self._config = config
        self._delivery_id = delivery_id
        self._flight = flight
        self.chat = chat

    async def job_changed(self, job: Job) -> None:
        if self._flight.job_id is None:
            self._flight.job_id = job.id
            self._runner.deliveries.update(self._config.name, self._delivery_id,
                                           job_id=job.id)
            self._flight.answerable.set()
        if self.chat is not None:
            await self.chat.job_changed(job)


class DeliveryRunner:
    """Each rule's lane and the deliveries in flight, for the webhooks of one serve."""

    def __init__(self, runtime: Runtime, configs: Mapping[str, WebhookConfig], *,
                 client: AsyncWebClient | None) -> None:
        self._runtime = runtime
        self._client = client
        self._configs = configs
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

    def start(self) -> None:
        """Deliveries whose command was running when ctbot last stopped are marked
        interrupted; queued ones are taken up again, in order."""
        interrupted = self.deliveries.interrupt_running()
        if interrupted:
            log.warning("webhook deliveries interrupted by the last stop count=%d "
                        "(their commands' jobs say how far they got)", interrupted)
        for delivery, words in self.deliveries.queued():
            self._resume(delivery, words)

    async def drain(self) -> None:
        """Running commands finish (bounded); waiting ones stay queued in the store and
        run at the next start."""
        for (name, number), lane in self._lanes.items():
            waiting = await lane.drain(DRAIN_SECONDS)
            if waiting:
                log.info("webhook deliveries left queued for the next start webhook=%s "
                         "rule=%d count=%d", name, number, len(waiting))
        if self._posts:
            await asyncio.wait(set(self._posts), timeout=DRAIN_SECONDS)

    async def admit(self, config: WebhookConfig, rule: Rule, delivery_id: str,
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
            return web.json_response({**answer(config, delivery_id, state, rule=rule,
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
        data = answer(config, delivery_id, flight.state, rule=rule, command=command,
                      job_id=flight.job_id)
        if flight.result is not None:  # it finished before the answer went out
            data["result"] = flight.result
        return web.json_response(data, status=202)

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

    def settled(self, config: WebhookConfig, delivery_id: str, state: DeliveryState,
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
        return web.json_response({**answer(config, delivery_id, state, rule=rule),
                                  "result": result}, status=202)

    def _duplicate(self, config: WebhookConfig, delivery_id: str,
                   first: Delivery) -> web.Response:
        """A copy: the first delivery's id (a GitHub body seen under another id is that
        delivery), state and result; 200, nothing runs."""
        log.info("webhook delivery duplicate webhook=%s delivery=%s of=%s state=%s",
                 config.name, delivery_id, first.id, first.state)
        return web.json_response({**answer(config, first.id, first.state,
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



def _stored(rule: Rule, command: Command) -> str:
    """What a queued delivery keeps to run after a restart: its words, and the rule's
    template they came from (a changed rule does not run old words)."""
    return json.dumps({"do": rule.do, "words": command.to_json()})

