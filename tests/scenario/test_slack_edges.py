"""What an attacker or a broken network does to the Slack edge: replies go only to
Slack, one slow destination delays no one else, a click is authorized before anything
changes, and text cannot mention anyone."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable

import pytest

from handlers.context import Invocation, Reply
from handlers.registry import Registry, verb
from handlers.roles import Role
from handlers.verbs import core, jobs
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_payloads import block_action_form, signed_headers, slash_command_form
from tests.scenario.conftest import ADMIN, OPERATOR, VIEWER, SlackBot


@verb("wipe", role=Role.OPERATOR, mutating=True, confirm=True)
async def run_wipe(inv: Invocation) -> Reply:
    """Pretend to destroy something (a test verb that needs confirmation)."""
    return Reply(message=f"wiped by {inv.user_id}")


@pytest.fixture
def registry_factory() -> Callable[[], Registry]:
    return lambda: Registry.from_modules(core, jobs, sys.modules[__name__])


async def test_replies_go_only_to_slacks_origins(slack_bot: SlackBot):
    elsewhere = FakeSlack()  # a loopback service the payload points at
    await elsewhere.start()
    try:
        for url in (elsewhere.response_url("x"), "http://169.254.169.254/latest/meta-data",
                    f"http://[::1]:{elsewhere.port}/response/y"):
            body = slash_command_form("whoami", user_id=ADMIN, response_url=url)
            response = await slack_bot.post_raw(body, signed_headers(slack_bot.secret, body))
            assert response.status == 200
        _, key = await slack_bot.command("whoami")  # …while Slack's own still gets its reply
        await slack_bot.reply(key)
        await asyncio.sleep(0.3)
        assert elsewhere.calls == []
    finally:
        await elsewhere.stop()


async def test_a_json_body_is_not_a_slash_command(slack_bot: SlackBot):
    body = json.dumps({"command": "/ct", "text": "whoami", "user_id": ADMIN,
                       "response_url": slack_bot.fake.response_url("j")}).encode()
    response = await slack_bot.post_raw(body, signed_headers(
        slack_bot.secret, body, content_type="application/json"))
    assert response.status == 415
    await asyncio.sleep(0.2)
    assert slack_bot.fake.responses("j") == []


async def test_a_hanging_destination_delays_no_one_else(slack_bot: SlackBot):
    slack_bot.fake.hanging |= {f"slow{n}" for n in range(8)}
    for n in range(8):
        await slack_bot.command("whoami", key=f"slow{n}")
    started = time.monotonic()
    _, key = await slack_bot.command("whoami", user_id=VIEWER)
    await slack_bot.reply(key, timeout=5)
    assert time.monotonic() - started < 2.0
    slack_bot.fake.hanging.clear()
    slack_bot.fake._release.set()  # the slow destination answers at last


async def test_a_refused_click_changes_nothing_and_every_click_is_audited(slack_bot: SlackBot):
    _, key = await slack_bot.command("wipe", user_id=OPERATOR)
    await slack_bot.reply(key)
    for clicker in (VIEWER, "local"):
        click = block_action_form(action_id="ct_confirm", value="wipe", user_id=clicker,
                                  response_url=slack_bot.fake.response_url(f"c-{clicker}"))
        assert (await slack_bot.post_raw(click, signed_headers(slack_bot.secret,
                                                               click))).status == 200
        refused = await slack_bot.fake.wait_for(
            lambda c, who=clicker: c.path == f"/response/c-{who}")
        assert "needs the operator role" in str(refused[0].body)
        assert not any(c.body.get("replace_original") for c in refused)  # prompt kept
    audited = [(e.user_id, e.outcome) for e in
               slack_bot.runtime.dispatcher.services.audit.latest(5)]
    assert ("local", "denied") in audited and (VIEWER, "denied") in audited


async def test_text_cannot_mention_anyone(slack_bot: SlackBot):
    _, key = await slack_bot.command("job <!channel>")
    reply = await slack_bot.reply(key)
    raw = json.dumps(reply)
    assert "<!channel>" not in raw and "&lt;!channel&gt;" in raw
