"""Durable jobs seen from Slack: ONE message, posted then edited; confirmations by button."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import pytest

from handlers.context import Invocation, Reply
from handlers.jobs import run_job
from handlers.registry import Registry, verb
from handlers.roles import Role
from handlers.verbs import core, jobs
from services.core.job_runner import JobContext
from tests.fakes.slack_payloads import block_action_form, signed_headers, slash_command_form
from tests.scenario.conftest import OPERATOR, VIEWER, SlackBot


@verb("count", role=Role.OPERATOR, mutating=True)
async def run_count(inv: Invocation) -> Reply:
    """Count to three as a durable job (a test verb)."""
    return await run_job(inv, "count", {"to": 3})


@verb("wipe", role=Role.OPERATOR, mutating=True, confirm=True)
async def run_wipe(inv: Invocation) -> Reply:
    """Pretend to destroy something (a test verb that needs confirmation)."""
    return Reply(message=f"wiped by {inv.user_id}")


async def count_job(ctx: JobContext) -> str:
    for n in range(1, int(ctx.args["to"]) + 1):
        await ctx.progress(f"step {n}")
        await asyncio.sleep(0.3)
    return "counted"


@pytest.fixture
def registry_factory() -> Callable[[], Registry]:
    return lambda: Registry.from_modules(core, jobs, sys.modules[__name__])


@pytest.fixture
def bot(slack_bot: SlackBot) -> SlackBot:
    slack_bot.runtime.jobs.register("count", count_job)
    return slack_bot


async def test_job_progress_is_one_message_edited_in_place(bot: SlackBot):
    response, key = await bot.command("count", user_id=OPERATOR)
    assert response.status == 200

    final = await bot.fake.wait_for(
        lambda c: c.method == "chat.update" and "succeeded" in str(c.body), timeout=10)
    posts = bot.fake.of("chat.postMessage")
    assert len(posts) == 1 and posts[0].body["channel"] == "C0OPS"
    updates = bot.fake.of("chat.update")
    assert len({u.body["ts"] for u in updates}) == 1  # always the same message
    assert len(updates) <= 4  # coalesced, not one call per line
    last = str(final[-1].body["blocks"])
    assert "step 1" in last and "step 3" in last and "counted" in last
    await asyncio.sleep(0.2)
    assert bot.fake.responses(key) == []  # no second copy through response_url

    job = bot.runtime.jobs.store.latest(1)[0]
    assert (job.kind, job.state, job.requested_by) == ("count", "succeeded", OPERATOR)
    assert [p.line for p in bot.runtime.jobs.store.get(job.id).progress] == [
        "step 1", "step 2", "step 3"]


async def test_mutating_command_is_acked_with_a_working_note(bot: SlackBot):
    body = slash_command_form("count", user_id=OPERATOR,
                              response_url=bot.fake.response_url("ack"))
    async with bot.session.post(f"{bot.url}/slack/events", data=body,
                                headers=signed_headers(bot.secret, body)) as response:
        ack = await response.json()
    assert "count" in ack["text"] and ack["response_type"] == "ephemeral"
    await bot.fake.wait_for(lambda c: c.method == "chat.update" and "succeeded" in str(c.body))


async def test_destructive_command_waits_for_the_confirm_button(bot: SlackBot):
    _, key = await bot.command("wipe", user_id=OPERATOR)
    prompt = await bot.reply(key)
    assert "cannot be undone" in str(prompt["text"])
    buttons = next(b for b in prompt["blocks"] if b["type"] == "actions")["elements"]
    confirm = next(b for b in buttons if b["action_id"] == "ct_confirm")
    assert confirm["value"] == "wipe"
    assert bot.runtime.dispatcher.services.audit.latest(1)[0].outcome == "user_error"

    # A viewer pressing the button is still refused: the role is checked on click.
    denied = block_action_form(action_id="ct_confirm", value="wipe", user_id=VIEWER,
                               response_url=bot.fake.response_url("click-viewer"))
    assert (await bot.post_raw(denied, signed_headers(bot.secret, denied))).status == 200
    await bot.fake.wait_for(lambda c: c.path == "/response/click-viewer"
                            and "needs the operator role" in str(c.body))

    click = block_action_form(action_id="ct_confirm", value="wipe", user_id=OPERATOR,
                              response_url=bot.fake.response_url("click"))
    assert (await bot.post_raw(click, signed_headers(bot.secret, click))).status == 200
    done = await bot.fake.wait_for(
        lambda c: c.path == "/response/click" and "wiped by" in str(c.body))
    assert done[0].body["response_type"] == "in_channel"
