"""Webhooks over a real socket: ctbot's web app with its webhook routes, the real
dispatcher, real jobs and SQLite, results posted to a local fake Slack.

Two test verbs stand in for machine work: `nap TAG` (a job that sleeps and records
when it started and ended) and `echo WORD [--loud]` (says what it received)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.runtime import Runtime
from bot.settings import load_settings
from bot.web import build_web_app
from bot.webhook_rules import check_rules
from bot.webhooks import WebhookEndpoints
from handlers.context import Invocation, Reply
from handlers.grammar import Flag, Positional
from handlers.jobs import run_job
from handlers.registry import Registry, verb
from handlers.roles import Role
from handlers.verbs import core, health, jobs, webhooks
from services.core.job_runner import JobContext
from services.webhooks.store import DeliveryState
from tests.fakes.slack_api import FakeSlack

GITHUB_SECRET = "gh-" + secrets.token_hex(16)
STANDARD_KEY = secrets.token_bytes(32)
STANDARD_SECRET = "whsec_" + base64.b64encode(STANDARD_KEY).decode()
BEARER_TOKEN = "tok-" + secrets.token_hex(16)
CHANNEL = "C0HOOKS01"

CONFIG = f'''
[slack]
response_origins = ["http://127.0.0.1"]

[[webhooks]]
name = "ci"
auth = "github"
secret_env = ["HOOK_CI", "HOOK_CI_NEXT"]
run_as = "operator"
channel = "{CHANNEL}"
max_body = "4K"
[[webhooks.rules]]
when = {{ "header.X-GitHub-Event" = "push", "payload.ref" = ["refs/heads/main"] }}
do = "nap {{{{ payload.repository.name }}}}"
concurrency = "serial"
[[webhooks.rules]]
when = {{ "header.X-GitHub-Event" = "ping" }}
do = "echo {{{{ payload.zen }}}}"
concurrency = "parallel"

[[webhooks]]
name = "deploy"
auth = "standard"
secret_env = "HOOK_DEPLOY"
run_as = "operator"
[[webhooks.rules]]
when = {{ "payload.type" = "glob:deploy.*" }}
do = "echo {{{{ payload.target }}}} --loud"
concurrency = "parallel"

[[webhooks]]
name = "alerts"
auth = "bearer"
secret_env = "HOOK_ALERTS"
run_as = "operator"
[[webhooks.rules]]
when = {{ "payload.mode" = "skip" }}
do = "nap {{{{ payload.tag }}}}"
concurrency = "skip-if-running"
[[webhooks.rules]]
when = {{ "payload.mode" = "coalesce" }}
do = "nap {{{{ payload.tag }}}}"
concurrency = "coalesce"
[[webhooks.rules]]
when = {{ "payload.mode" = "leak" }}
do = "echo {{{{ headers.authorization | default('none') }}}}/{{{{ headers['x-trace'] }}}}"
concurrency = "parallel"
[[webhooks.rules]]
when = {{ "payload.mode" = "sneak" }}
do = "health {{% if payload.a %}}mute all 30d{{% endif %}}"
concurrency = "parallel"
[[webhooks.rules]]
when = {{ "payload.mode" = "peek" }}
do = "peek {{{{ payload.tag }}}}"
concurrency = "serial"
[[webhooks.rules]]
when = {{ "payload.mode" = "count" }}
do = "nap {{{{ payload.tag }}}} --seconds 0"
concurrency = "parallel"

[[webhooks]]
name = "vector"
auth = "github"
secret_env = "HOOK_VECTOR"
run_as = "viewer"
[[webhooks.rules]]
do = "whoami"

[[webhooks]]
name = "unset"
auth = "bearer"
secret_env = "HOOK_NEVER_SET"
run_as = "viewer"
[[webhooks.rules]]
do = "whoami"
'''

NAPS: list[tuple[str, str, float]] = []  # (event, tag, monotonic time)


@verb("nap", role=Role.OPERATOR, mutating=True, positionals=[Positional("TAG")],
      flags=[Flag("seconds", "how long", "S", parse=float)])
async def run_nap(inv: Invocation) -> Reply:
    """Sleep as a job (a stand-in for a restart)."""
    return await run_job(inv, "test.nap", {"tag": inv.args["TAG"],
                                           "seconds": inv.args.get("seconds", 0.3)})


async def nap_job(ctx: JobContext) -> str:
    NAPS.append(("start", ctx.args["tag"], time.monotonic()))
    await ctx.progress(f"napping {ctx.args['tag']}")
    await asyncio.sleep(ctx.args["seconds"])
    NAPS.append(("end", ctx.args["tag"], time.monotonic()))
    return f"napped {ctx.args['tag']}"


@verb("peek", role=Role.VIEWER, positionals=[Positional("TAG")])
async def run_peek(inv: Invocation) -> Reply:
    """Look around for a while (read-only, no job: a stand-in for `exec`, whose verb
    does not say it changes anything)."""
    NAPS.append(("start", inv.args["TAG"], time.monotonic()))
    await asyncio.sleep(0.4)
    NAPS.append(("end", inv.args["TAG"], time.monotonic()))
    return Reply(message=f"peeked {inv.args['TAG']}")


@verb("echo", role=Role.OPERATOR, positionals=[Positional("WORD")],
      flags=[Flag("loud", "shout")])
async def run_echo(inv: Invocation) -> Reply:
    """Say what was received."""
    data = {"word": inv.args["WORD"], "loud": bool(inv.args.get("loud"))}
    return Reply(data=data, message=json.dumps(data))


@dataclass
class Hooks:
    url: str
    runtime: Runtime
    fake: FakeSlack
    session: aiohttp.ClientSession
    log_path: Path
    endpoints: WebhookEndpoints

    async def post(self, name: str, body: bytes, headers: dict[str, str]
                   ) -> tuple[int, dict[str, Any]]:
        async with self.session.post(f"{self.url}/hooks/{name}", data=body,
                                     headers=headers) as response:
            return response.status, await response.json()

    async def github(self, event: str, payload: object, *, delivery: str | None = None,
                     secret: str = GITHUB_SECRET) -> tuple[int, dict[str, Any]]:
        body = json.dumps(payload).encode()
        return await self.post("ci", body, github_headers(body, event, delivery, secret))

    async def bearer(self, payload: object, **headers: str) -> tuple[int, dict[str, Any]]:
        return await self.post("alerts", json.dumps(payload).encode(), {
            "Authorization": f"Bearer {BEARER_TOKEN}", "Content-Type": "application/json",
            **headers})

    async def delivery(self, name: str, delivery_id: str,
                       headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """GET the delivery's status, signed as the README says: over its path."""
        path = f"/hooks/{name}/deliveries/{delivery_id}"
        if headers is None:
            headers = read_headers(name, path)
        async with self.session.get(f"{self.url}{path}", headers=headers) as response:
            return response.status, await response.json()

    async def finished(self, name: str, delivery_id: str,
                       timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = await self.delivery(name, delivery_id)
            assert status == 200, body
            if body["state"] not in ("received", "queued", "running"):
                return body
            await asyncio.sleep(0.05)
        raise AssertionError(f"delivery {delivery_id} did not finish: {body}")

    def audited(self, user: str) -> list[str]:
        return [e.command for e in self.runtime.dispatcher.services.audit.latest(1000)
                if e.user_id == user][::-1]


def github_headers(body: bytes, event: str, delivery: str | None = None,
                   secret: str = GITHUB_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or secrets.token_hex(8),
            "X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


def standard_headers(body: bytes, msg_id: str, *, key: bytes = STANDARD_KEY,
                     at: float | None = None) -> dict[str, str]:
    ts = str(int(time.time() if at is None else at))
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": ts,
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
            "Content-Type": "application/json"}


BEARER = {"Authorization": f"Bearer {BEARER_TOKEN}"}


def read_headers(name: str, path: str) -> dict[str, str]:
    """A status read's credentials: the webhook's scheme over the request's path."""
    if name == "deploy":
        return standard_headers(path.encode(), "msg_" + secrets.token_hex(6))
    if name == "alerts":
        return dict(BEARER)
    digest = hmac.new(GITHUB_SECRET.encode(), path.encode(), hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}"}


@pytest.fixture
async def hooks(tmp_path: Path, fake_slack: FakeSlack) -> AsyncIterator[Hooks]:
    NAPS.clear()
    config = tmp_path / "ctbot.toml"
    config.write_text(CONFIG)
    log_path = tmp_path / "ctbot.log"
    handler = logging.FileHandler(log_path)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    settings = load_settings(config, {
        "CTBOT_STATE_DIR": str(tmp_path / "state"), "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_API_URL": fake_slack.api_url, "HOOK_CI": GITHUB_SECRET,
        "HOOK_DEPLOY": STANDARD_SECRET, "HOOK_ALERTS": BEARER_TOKEN,
        "HOOK_VECTOR": "It's a Secret to Everybody"})
    registry = Registry.from_modules(core, jobs, health, webhooks, sys.modules[__name__])
    runtime = await Runtime.open(settings, registry=registry)
    runtime.jobs.register("test.nap", nap_job)
    check_rules(settings.webhooks, registry)
    from bot.slack_app import build_web_client

    endpoints = WebhookEndpoints(runtime, client=build_web_client(settings.slack))
    await endpoints.start()
    runner = web.AppRunner(build_web_app(webhooks=endpoints), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    session = aiohttp.ClientSession()
    hooks: Hooks | None = None
    try:
        hooks = Hooks(f"http://127.0.0.1:{runner.addresses[0][1]}", runtime, fake_slack,
                      session, log_path, endpoints)
        yield hooks
    finally:
        await session.close()
        await runner.cleanup()
        await endpoints.drain()
        if hooks is not None and hooks.endpoints is not endpoints:  # a test restarted them
            await hooks.endpoints.drain()
        await runtime.close()
        logging.getLogger().removeHandler(handler)
        handler.close()


# ---------------------------------------------------------------------------- GitHub

async def test_a_push_runs_its_command_reports_to_the_channel_and_runs_once(hooks: Hooks):
    push = {"ref": "refs/heads/main", "repository": {"name": "web1"}}
    status, answer = await hooks.github("push", push, delivery="push-1")
    assert status == 202, answer
    assert answer["state"] in ("running", "succeeded") and isinstance(answer["job"], int)
    assert answer["command"] == "nap 'web1'"
    assert answer["status_url"] == "/hooks/ci/deliveries/push-1"
    done = await hooks.finished("ci", "push-1")
    assert done["state"] == "succeeded" and done["job"]["state"] == "succeeded"
    assert "napped web1" in done["result"]
    # The job's one message in the channel, edited to its end.
    final = await hooks.fake.wait_for(lambda c: c.method in ("chat.postMessage",
                                                             "chat.update")
                                      and "succeeded" in json.dumps(c.body), timeout=10)
    assert final[-1].body["channel"] == CHANNEL
    # GitHub redelivers with the same X-GitHub-Delivery: answered, nothing runs.
    status, again = await hooks.github("push", push, delivery="push-1")
    assert status == 200 and again["duplicate"] is True and again["job"] == answer["job"]
    await asyncio.sleep(0.3)
    assert [e for e in NAPS if e[0] == "start"] == [NAPS[0]]
    assert hooks.audited("webhook:ci") == ["nap 'web1'"]
    entry = hooks.runtime.dispatcher.services.audit.latest(1)[0]
    assert (entry.role, entry.transport, entry.detail) == ("operator", "webhook",
                                                           f"job #{answer['job']}")


async def test_githubs_published_test_vector_over_the_socket(hooks: Hooks):
    """GitHub Docs' vector: its signature passes (the body, "Hello, World!", is then
    refused as not JSON); one changed digit fails the signature."""
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    headers = {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": "vector-1"}
    status, answer = await hooks.post("vector", b"Hello, World!", headers)
    assert (status, answer["error"]) == (400, "the body is not JSON at line 1 column 1")
    tampered = {**headers, "X-Hub-Signature-256": signature[:-1] + "8"}
    assert (await hooks.post("vector", b"Hello, World!", tampered))[0] == 401


async def test_no_rule_matched_is_202_and_recorded(hooks: Hooks):
    status, answer = await hooks.github("push", {"ref": "refs/heads/dev",
                                                 "repository": {"name": "web1"}},
                                        delivery="dev-1")
    assert status == 202 and answer["state"] == "no-match"
    assert answer["result"].startswith("no rule matched (rule 1: payload.ref")
    _, recorded = await hooks.delivery("ci", "dev-1")
    assert recorded["state"] == "no-match"
    # …and says why: each rule's first condition that failed, with what came.
    assert recorded["result"] == ('no rule matched (rule 1: payload.ref is "refs/heads/dev", '
                                  'not "refs/heads/main"; rule 2: header.X-GitHub-Event is '
                                  '"push", not "ping")')
    assert NAPS == [] and hooks.audited("webhook:ci") == []


async def test_github_refusals(hooks: Hooks):
    body = json.dumps({"zen": "hi"}).encode()
    bad = {**github_headers(body, "ping"), "X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert (await hooks.post("ci", body, bad))[0] == 401
    wrong_secret = github_headers(body, "ping", secret="another-secret-0123456789")
    assert (await hooks.post("ci", body, wrong_secret))[0] == 401
    sha1_only = {k: v for k, v in github_headers(body, "ping").items()
                 if k != "X-Hub-Signature-256"} | {"X-Hub-Signature": "sha1=" + "0" * 40}
    status, answer = await hooks.post("ci", body, sha1_only)
    assert status == 401 and "sha1" in answer["error"]
    big = json.dumps({"zen": "x" * 5000}).encode()
    assert (await hooks.post("ci", big, github_headers(big, "ping")))[0] == 413
    not_json = b"zen=hi"
    status, answer = await hooks.post("ci", not_json, github_headers(not_json, "ping"))
    assert status == 400 and answer["error"].startswith("the body is not JSON")
    assert (await hooks.post("nope", body, github_headers(body, "ping")))[0] == 404
    # Other methods and paths under /hooks/ answer in JSON as well.
    async with hooks.session.put(f"{hooks.url}/hooks/ci", data=b"{}") as response:
        assert response.status == 405 and response.headers["Allow"] == "POST"
        assert (await response.json())["error"].startswith("PUT is not allowed")
    async with hooks.session.post(f"{hooks.url}/hooks/ci/", data=b"{}") as response:
        assert response.status == 404 and "no such webhook" in (await response.json())["error"]
    # a webhook whose secret is not set refuses everything, with or without a token
    assert (await hooks.post("unset", b"{}", {"Authorization": "Bearer anything"}))[0] == 503
    # Nothing ran, nothing refused was recorded as a delivery, the body is not in the log.
    assert hooks.audited("webhook:ci") == []
    assert hooks.runtime.webhooks.store.latest("ci", 10) == []
    assert "xxxxxxxxxx" not in hooks.log_path.read_text()


async def test_githubs_form_encoding_is_read(hooks: Hooks):
    from urllib.parse import urlencode

    body = urlencode({"payload": json.dumps({"zen": "Design for failure."})}).encode()
    headers = {**github_headers(body, "ping"),
               "Content-Type": "application/x-www-form-urlencoded"}
    status, answer = await hooks.post("ci", body, headers)
    assert status == 202 and answer["command"] == "echo 'Design for failure.'", answer
    done = await hooks.finished("ci", answer["delivery"])
    assert json.loads(done["result"]) == {"word": "Design for failure.", "loud": False}


async def test_status_of_a_delivery_needs_the_same_auth(hooks: Hooks):
    status, answer = await hooks.github("ping", {"zen": "a"}, delivery="ping-1")
    # A quick command without a job: answered when done (within the ack budget).
    assert status == 202 and answer["state"] == "succeeded" and answer["job"] is None
    assert json.loads(answer["result"]) == {"word": "a", "loud": False}
    assert (await hooks.delivery("ci", "ping-1", {}))[0] == 401
    found = await hooks.finished("ci", "ping-1")
    assert found["state"] == "succeeded" and found["rule"] == 2
    assert found["status_url"] == "/hooks/ci/deliveries/ping-1"
    assert (await hooks.delivery("ci", "nope"))[0] == 404
    # A read is signed over its own path: one captured status request reads no other.
    other = read_headers("ci", "/hooks/ci/deliveries/push-1")
    assert (await hooks.delivery("ci", "ping-1", other))[0] == 401
    # one webhook's secret reads none of another's deliveries
    assert (await hooks.delivery("alerts", "ping-1", {
        "Authorization": f"Bearer {GITHUB_SECRET}"}))[0] == 401


# ---------------------------------------------------------------------------- injection

@pytest.mark.parametrize("value", ["--yes", "x; reboot", "a\nrestart web1", "{{ 7*7 }}",
                                   "{{ ''.__class__ }}", "--loud", "--"])
async def test_a_field_is_one_literal_argument(hooks: Hooks, value: str):
    body = json.dumps({"type": "deploy.done", "target": value}).encode()
    status, answer = await hooks.post("deploy", body, standard_headers(body, "msg_" +
                                                                       secrets.token_hex(6)))
    assert status == 202, answer
    found = await hooks.finished("deploy", answer["delivery"])
    # `echo` received exactly the field as its WORD, and --loud only from the template.
    assert json.loads(found["result"]) == {"word": value, "loud": True}


async def test_templates_never_see_the_credentials(hooks: Hooks):
    """A rule that names the Authorization header gets nothing from it."""
    status, answer = await hooks.bearer({"mode": "leak"}, **{"X-Trace": "t-1"})
    assert status == 202
    done = await hooks.finished("alerts", answer["delivery"])
    assert json.loads(done["result"])["word"] == "none/t-1"
    assert BEARER_TOKEN not in json.dumps(done) + "".join(hooks.audited("webhook:alerts"))


async def test_a_template_cannot_change_its_verb(hooks: Hooks):
    """`health {% if %}mute all 30d{% endif %}` was checked as `health` (read-only):
    a payload that turns it into `health mute` is refused, not run."""
    status, answer = await hooks.bearer({"mode": "sneak", "a": True})
    assert status == 202
    done = await hooks.finished("alerts", answer["delivery"])
    assert done["state"] == "failed" and "not `health`" in done["result"]
    assert hooks.runtime.store.query("SELECT COUNT(*) AS n FROM health_mutes")[0]["n"] == 0


async def test_a_started_delivery_is_never_run_again(hooks: Hooks):
    """A read-only verb (or `exec`, which says nothing of what it changes) is recorded
    as running before it starts: a stop or a crash after that marks it interrupted,
    and the next start does not run it again."""
    answers = await asyncio.gather(hooks.bearer({"mode": "peek", "tag": "p1"}),
                                   hooks.bearer({"mode": "peek", "tag": "p2"}))
    states = sorted(a["state"] for _, a in answers)
    assert states == ["queued", "succeeded"], answers
    second = next(a for _, a in answers if a["state"] == "queued")
    deadline = time.monotonic() + 5
    while (await hooks.delivery("alerts", second["delivery"]))[1]["state"] == "queued":
        assert time.monotonic() < deadline, "the second never started"
        await asyncio.sleep(0.02)
    # What the next start does after a crash now: the started one is not taken up again.
    store = hooks.runtime.webhooks.store
    assert second["delivery"] not in [d.id for d, _ in store.queued()]


async def test_a_github_body_is_one_delivery_whatever_its_unsigned_headers_say(hooks: Hooks):
    """GitHub signs the body only: replayed with a new X-GitHub-Delivery, or another
    X-GitHub-Event to pick another rule, it is the delivery already seen."""
    body = json.dumps({"zen": "Keep it logically awesome."}).encode()
    first = await hooks.post("ci", body, github_headers(body, "ping", "orig-1"))
    assert first[0] == 202
    again = await hooks.post("ci", body, github_headers(body, "ping", "replay-2"))
    assert again[0] == 200 and again[1]["delivery"] == "orig-1" and again[1]["duplicate"]
    other_event = await hooks.post("ci", body, github_headers(body, "push", "replay-3"))
    assert other_event[0] == 200 and other_event[1]["delivery"] == "orig-1"
    # An empty body is never GitHub's (and would be a constant signature).
    status, answer = await hooks.post("ci", b"", github_headers(b"", "ping", "empty-1"))
    assert status == 400 and "empty body" in answer["error"]


async def test_slow_bodies_and_non_json_numbers_are_refused(hooks: Hooks, monkeypatch):
    import bot.webhooks

    monkeypatch.setattr(bot.webhooks, "BODY_SECONDS", 0.5)
    port = int(hooks.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /hooks/alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                 b"Authorization: Bearer " + BEARER_TOKEN.encode() + b"\r\n\r\n{")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 408"), status_line
    for body in (b'{"mode": NaN}', b'{"mode": 1e999}'):
        status, answer = await hooks.post("alerts", body, {
            "Authorization": f"Bearer {BEARER_TOKEN}"})
        assert status == 400 and answer["error"].startswith("the body is not JSON")


# ---------------------------------------------------------------------------- Standard

async def test_standard_webhooks(hooks: Hooks):
    body = json.dumps({"type": "deploy.started", "target": "web1"}).encode()
    good = standard_headers(body, "msg_good")
    assert (await hooks.post("deploy", body, good))[0] == 202
    wrong = standard_headers(body, "msg_wrong", key=secrets.token_bytes(32))
    assert (await hooks.post("deploy", body, wrong))[0] == 401
    old = standard_headers(body, "msg_old", at=time.time() - 301)
    status, answer = await hooks.post("deploy", body, old)
    assert status == 401 and "300 s" in answer["error"]
    other_id = {**standard_headers(body, "msg_other"), "webhook-id": "msg_forged"}
    assert (await hooks.post("deploy", body, other_id))[0] == 401
    again = standard_headers(body, "msg_good")  # a retry: new timestamp, same id
    status, answer = await hooks.post("deploy", body, again)
    assert status == 200 and answer["duplicate"] is True
    await hooks.finished("deploy", "msg_good")
    assert hooks.audited("webhook:deploy") == ["echo 'web1' --loud"]


# ---------------------------------------------------------------------------- once

async def test_100_concurrent_copies_run_once(hooks: Hooks):
    payload = {"mode": "count", "tag": "once"}
    results = await asyncio.gather(*(hooks.bearer(payload, **{"Idempotency-Key": "k-1"})
                                     for _ in range(100)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 99 + [202]
    assert {answer["delivery"] for _, answer in results} == {"k-1"}
    await hooks.finished("alerts", "k-1")
    assert [e[1] for e in NAPS if e[0] == "start"] == ["once"]
    assert hooks.audited("webhook:alerts") == ["nap 'once' --seconds 0"]


async def test_bearer_without_a_key_is_deduplicated_by_body(hooks: Hooks):
    first = await hooks.bearer({"mode": "count", "tag": "body"})
    second = await hooks.bearer({"mode": "count", "tag": "body"})
    assert (first[0], second[0]) == (202, 200)
    assert second[1]["delivery"] == first[1]["delivery"]


# ---------------------------------------------------------------------------- lanes

async def test_serial_rule_runs_five_deliveries_one_at_a_time_in_order(hooks: Hooks):
    for n in range(5):
        status, answer = await hooks.github("push", {"ref": "refs/heads/main",
                                                     "repository": {"name": f"m{n}"}},
                                            delivery=f"serial-{n}")
        assert status == 202
        assert answer["state"] == ("running" if n == 0 else "queued"), answer
    for n in range(5):
        done = await hooks.finished("ci", f"serial-{n}")
        assert done["state"] == "succeeded"
    assert [(event, tag) for event, tag, _ in NAPS] == [
        x for n in range(5) for x in (("start", f"m{n}"), ("end", f"m{n}"))]


async def test_queued_deliveries_run_after_a_restart_in_order(hooks: Hooks):
    """Accepted is a promise: deliveries still waiting when ctbot stops are kept (with
    their command's words) and run when it starts again, in the order they came."""
    for n in range(3):
        await hooks.github("push", {"ref": "refs/heads/main",
                                    "repository": {"name": f"r{n}"}}, delivery=f"restart-{n}")
    await hooks.endpoints.drain()  # what `ctbot serve` does on SIGTERM
    assert [tag for event, tag, _ in NAPS if event == "start"] == ["r0"]
    _, waiting = await hooks.delivery("ci", "restart-2")
    assert waiting["state"] == "queued"
    from bot.slack_app import build_web_client

    again = WebhookEndpoints(hooks.runtime,
                             client=build_web_client(hooks.runtime.settings.slack))
    await again.start()  # the next start, before its listener opens
    hooks.endpoints = again
    for n in (1, 2):
        assert (await hooks.finished("ci", f"restart-{n}"))["state"] == "succeeded"
    assert [tag for event, tag, _ in NAPS if event == "start"] == ["r0", "r1", "r2"]
    assert hooks.audited("webhook:ci") == ["nap 'r0'", "nap 'r1'", "nap 'r2'"]


async def test_a_full_lane_answers_503_and_records_nothing(hooks: Hooks, monkeypatch):
    """Back-pressure: past MAX_WAITING waiting deliveries a rule refuses more with 503
    and Retry-After, and keeps no record of them, so the sender's retry runs."""
    import services.webhooks.lanes

    monkeypatch.setattr(services.webhooks.lanes, "MAX_WAITING", 1)
    answers = []
    for n in range(3):
        answers.append(await hooks.github("push", {"ref": "refs/heads/main",
                                                   "repository": {"name": f"f{n}"}},
                                          delivery=f"full-{n}"))
    assert [status for status, _ in answers] == [202, 202, 503]
    assert "retry later" in answers[2][1]["error"]
    assert (await hooks.delivery("ci", "full-2"))[0] == 404
    await hooks.finished("ci", "full-1")
    status, retried = await hooks.github("push", {"ref": "refs/heads/main",
                                                  "repository": {"name": "f2"}},
                                         delivery="full-2")
    assert status == 202 and retried["delivery"] == "full-2"
    assert (await hooks.finished("ci", "full-2"))["state"] == "succeeded"


async def test_a_queued_delivery_whose_rule_changed_is_not_run(hooks: Hooks):
    """After a restart, words made by a rule that is no longer in the config as it was
    do not run: the delivery is interrupted, saying so."""
    store = hooks.runtime.webhooks.store
    store.claim("ci", "old-1", state=DeliveryState.QUEUED, rule=1, command="nap 'x'",
                words=json.dumps({"do": "nap {{ payload.old }}", "words": "[]"}))
    again = WebhookEndpoints(hooks.runtime, client=None)
    await again.start()
    hooks.endpoints = again
    found = await hooks.finished("ci", "old-1")
    assert found["state"] == "interrupted" and "no longer in the config" in found["result"]
    assert NAPS == []


async def test_skip_if_running_records_later_ones_as_skipped(hooks: Hooks):
    first = await hooks.bearer({"mode": "skip", "tag": "a"})
    later = [await hooks.bearer({"mode": "skip", "tag": t}) for t in ("b", "c")]
    assert first[1]["state"] == "running"
    for status, answer in later:
        assert status == 202 and answer["state"] == "skipped"
        assert first[1]["delivery"] in answer["result"]
        _, found = await hooks.delivery("alerts", answer["delivery"])
        assert found["state"] == "skipped"
    await hooks.finished("alerts", first[1]["delivery"])
    assert [tag for event, tag, _ in NAPS if event == "start"] == ["a"]
    # once it is done, the rule runs again
    status, answer = await hooks.bearer({"mode": "skip", "tag": "d"})
    assert answer["state"] == "running"


async def test_coalesce_runs_the_newest_waiting_delivery(hooks: Hooks):
    answers = [(await hooks.bearer({"mode": "coalesce", "tag": t}))[1] for t in "abcd"]
    assert [a["state"] for a in answers] == ["running", "queued", "queued", "queued"]
    await hooks.finished("alerts", answers[3]["delivery"])
    for replaced, newer in ((1, 2), (2, 3)):
        _, found = await hooks.delivery("alerts", answers[replaced]["delivery"])
        assert found["state"] == "coalesced"
        assert found["superseded_by"] == answers[newer]["delivery"]
    assert [tag for event, tag, _ in NAPS if event == "start"] == ["a", "d"]


# ---------------------------------------------------------------------------- the verb

async def test_webhooks_verb_lists_endpoints_and_deliveries(hooks: Hooks):
    await hooks.github("ping", {"zen": "z"}, delivery="listed-1")
    await hooks.finished("ci", "listed-1")
    from handlers.context import CommandRequest, Transport

    reply = await hooks.runtime.dispatcher.dispatch(CommandRequest(
        text="webhooks", user_id="local", transport=Transport.CLI, correlation_id="c-t"))
    assert reply.ok, reply.text
    text = reply.text
    assert "POST /hooks/ci  (github, runs as operator, results to C0HOOKS01)" in text
    assert "listed-1  succeeded  rule 2  `echo 'z'`" in text
    assert "refuses every request: no usable secret in HOOK_NEVER_SET" in text
    assert "HOOK_CI set (HOOK_CI_NEXT unset)" in text
    assert GITHUB_SECRET not in text and BEARER_TOKEN not in text
