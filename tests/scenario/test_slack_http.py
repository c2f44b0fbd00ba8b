"""Signed, real-format slash commands through the real Bolt app over a real socket."""

from __future__ import annotations

import asyncio
import html
import time

import pytest

from tests.fakes.slack_payloads import signed_headers, slash_command_form
from tests.scenario.conftest import ADMIN, STRANGER, VIEWER, SlackBot


def reply_text(body: dict[str, object]) -> str:
    """What the user reads: Slack shows &lt; &gt; &amp; as < > &."""
    return html.unescape(str(body.get("text", "")) + "\n" + str(body.get("blocks", "")))


async def test_help_is_acked_within_3s_and_answered_at_response_url(slack_bot: SlackBot):
    started = time.monotonic()
    response, key = await slack_bot.command("help")
    ack_seconds = time.monotonic() - started

    assert response.status == 200
    assert ack_seconds < 3.0  # Slack's own deadline for an ack
    reply = await slack_bot.reply(key)
    assert reply["response_type"] == "ephemeral"
    assert "whoami" in reply_text(reply) and "audit" in reply_text(reply)


async def test_whoami_shows_the_callers_slack_id_and_role(slack_bot: SlackBot):
    _, key = await slack_bot.command("whoami", user_id=VIEWER)
    assert f"You are {VIEWER} with the viewer role" in reply_text(await slack_bot.reply(key))


async def test_typo_gets_did_you_mean(slack_bot: SlackBot):
    _, key = await slack_bot.command("audti 5")
    text = reply_text(await slack_bot.reply(key))
    assert "unknown command `audti`" in text and "did you mean `audit`" in text


async def test_slack_mangled_text_is_restored(slack_bot: SlackBot):
    # Slack's desktop client turns a typed `--` into an em dash, and Slack HTML-escapes
    # &<> in slash command text; the parser must see what the user typed.
    _, dash = await slack_bot.command("jobs —bogus")
    _, escaped = await slack_bot.command("job &lt;1&gt;")
    assert "`jobs` has no option `--bogus`" in reply_text(await slack_bot.reply(dash))
    assert "`<1>` is not a job id" in reply_text(await slack_bot.reply(escaped))


async def test_viewer_is_denied_admin_verb_and_told_which_role(slack_bot: SlackBot):
    _, key = await slack_bot.command("audit", user_id=VIEWER)
    text = reply_text(await slack_bot.reply(key))
    assert "needs the admin role; you are viewer" in text
    entries = slack_bot.runtime.dispatcher.services.audit.latest(5)
    assert [(e.user_id, e.outcome) for e in entries] == [(VIEWER, "denied")]


async def test_stranger_without_role_is_told_how_to_get_one(slack_bot: SlackBot):
    _, key = await slack_bot.command("jobs", user_id=STRANGER)
    text = reply_text(await slack_bot.reply(key))
    assert "you have no role on this bot" in text and "whoami" in text


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def _assert_rejected(slack_bot: SlackBot, caplog: pytest.LogCaptureFixture,
                           body: bytes, headers: dict[str, str], status: int) -> None:
    response = await slack_bot.post_raw(body, headers)
    assert response.status == status
    await asyncio.sleep(0.2)  # give a (wrongly) started handler the chance to show up
    assert slack_bot.fake.of("response_url") == []
    assert slack_bot.runtime.dispatcher.services.audit.latest(5) == []
    _no_tracebacks(caplog)


@pytest.mark.parametrize(
    ("timestamp", "status"),
    [
        pytest.param(lambda: int(time.time()) - 301, 401, id="older-than-300s"),
        pytest.param(lambda: int(time.time()) + 301, 401, id="newer-than-300s"),
        pytest.param(lambda: "abc", 400, id="abc"),
        pytest.param(lambda: "", 400, id="empty"),
        pytest.param(lambda: "9" * 5000, 400, id="5000-digits"),
        pytest.param(lambda: "-5", 400, id="negative"),
    ],
)
async def test_bad_timestamps_are_rejected_before_the_handler(
    slack_bot: SlackBot, caplog: pytest.LogCaptureFixture, timestamp, status
):
    body = slash_command_form("whoami", user_id=ADMIN,
                              response_url=slack_bot.fake.response_url("t"))
    headers = signed_headers(slack_bot.secret, body, timestamp=timestamp())
    await _assert_rejected(slack_bot, caplog, body, headers, status)


async def test_bad_signature_is_401(slack_bot: SlackBot, caplog: pytest.LogCaptureFixture):
    body = slash_command_form("whoami", user_id=ADMIN,
                              response_url=slack_bot.fake.response_url("s"))
    headers = signed_headers("not-the-secret", body)
    await _assert_rejected(slack_bot, caplog, body, headers, 401)


async def test_missing_signature_is_401(slack_bot: SlackBot, caplog: pytest.LogCaptureFixture):
    body = slash_command_form("whoami", user_id=ADMIN,
                              response_url=slack_bot.fake.response_url("m"))
    headers = signed_headers(slack_bot.secret, body)
    del headers["X-Slack-Signature"]
    await _assert_rejected(slack_bot, caplog, body, headers, 401)


async def test_tampered_body_is_401(slack_bot: SlackBot, caplog: pytest.LogCaptureFixture):
    body = slash_command_form("whoami", user_id=VIEWER,
                              response_url=slack_bot.fake.response_url("x"))
    headers = signed_headers(slack_bot.secret, body)
    await _assert_rejected(slack_bot, caplog, body.replace(VIEWER.encode(), ADMIN.encode()),
                           headers, 401)


async def test_non_utf8_body_is_400(slack_bot: SlackBot, caplog: pytest.LogCaptureFixture):
    body = slash_command_form("whoami", user_id=ADMIN,
                              response_url=slack_bot.fake.response_url("u")) + b"&x=\xff\xfe"
    await _assert_rejected(slack_bot, caplog, body, signed_headers(slack_bot.secret, body), 400)


async def test_10mb_body_is_413(slack_bot: SlackBot, caplog: pytest.LogCaptureFixture):
    body = b"text=" + b"a" * (10 * 1024 * 1024)
    await _assert_rejected(slack_bot, caplog, body, signed_headers(slack_bot.secret, body), 413)


async def test_slack_retry_of_a_handled_request_is_not_handled_twice(slack_bot: SlackBot):
    body = slash_command_form("whoami", user_id=ADMIN,
                              response_url=slack_bot.fake.response_url("r"))
    first = await slack_bot.post_raw(body, signed_headers(slack_bot.secret, body))
    await slack_bot.reply("r")
    retry_headers = signed_headers(slack_bot.secret, body, timestamp=int(time.time()) + 1)
    retry_headers |= {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    retry = await slack_bot.post_raw(body, retry_headers)

    assert (first.status, retry.status) == (200, 200)
    await asyncio.sleep(0.3)
    assert len(slack_bot.fake.responses("r")) == 1
    assert len(slack_bot.runtime.dispatcher.services.audit.latest(10)) == 1


async def test_healthz(slack_bot: SlackBot):
    async with slack_bot.session.get(f"{slack_bot.url}/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}
