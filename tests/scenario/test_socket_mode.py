"""Socket Mode end to end: the real slack_sdk client and our watchdog against a local fake
of Slack's Socket Mode server, over a real loopback websocket.

Slack's side is the only fake (tests/fakes/socket_mode_server.py): ``apps.connections.open``
with the xapp- token, ``hello`` on connect, envelopes pushed, acks recorded, replies to
``response_url``. The connection is then broken the two ways production sees: the TCP
connection dies, or the socket stays open and goes silent.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.runtime import Runtime
from bot.settings import Settings, load_settings
from bot.slack_app import build_bolt_app
from bot.socket_mode import SocketModeTransport
from handlers.context import Transport
from tests.fakes.socket_mode_server import Ack, FakeSocketModeSlack, SocketConnection

ADMIN, STRANGER = "U0ADMIN01", "U0STRANGE"
APP_TOKEN = "xapp-1-A0CTBOT-1-" + "f" * 32
WATCHDOG_SECONDS = 1  # the smallest the settings allow; the SDK then pings every second


def socket_mode_settings(tmp_path: Path, fake: FakeSocketModeSlack) -> Settings:
    config = tmp_path / "ctbot.toml"
    config.write_text(
        "[roles]\n"
        f'admins = ["{ADMIN}"]\n'
        'default = "none"\n'
        "\n"
        "[slack]\n"
        f"socket_watchdog_seconds = {WATCHDOG_SECONDS}\n"
        f'response_origins = ["{fake.base_url}"]\n',
        encoding="utf-8",
    )
    return load_settings(config, {
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_APP_TOKEN": APP_TOKEN,
        "SLACK_API_URL": fake.api_url,
        "CTBOT_STATE_DIR": str(tmp_path / "state"),
    })


async def kill_sdk_monitor(socket_bot: SocketBot) -> None:
    """What bolt-python #1529 describes: the SDK's session monitor task is gone."""
    monitor = socket_bot.transport._client.current_session_monitor
    assert monitor is not None
    monitor.cancel()
    with pytest.raises(asyncio.CancelledError):
        await monitor


async def eventually(condition: Callable[[], bool], *, timeout: float = 10.0,
                     what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class SocketBot:
    fake: FakeSocketModeSlack
    runtime: Runtime
    transport: SocketModeTransport

    async def command(self, text: str, *, user_id: str = ADMIN,
                      connection: SocketConnection | None = None) -> tuple[str, str]:
        """Push `/ct TEXT` as Slack would; returns (envelope_id, response_url key)."""
        key = secrets.token_hex(6)
        envelope_id = await self.fake.push_slash_command(
            text, user_id=user_id, response_url=self.fake.response_url(key),
            connection=connection)
        return envelope_id, key

    async def reply(self, key: str, *, timeout: float = 10.0) -> dict[str, Any]:
        calls = await self.fake.wait_for(lambda c: c.path == f"/response/{key}",
                                         timeout=timeout)
        return calls[0].body

    async def round_trip(self, text: str, *, user_id: str = ADMIN,
                         connection: SocketConnection | None = None
                         ) -> tuple[Ack, dict[str, Any]]:
        envelope_id, key = await self.command(text, user_id=user_id, connection=connection)
        ack = await self.fake.wait_for_ack(envelope_id, timeout=5)
        return ack, await self.reply(key, timeout=5)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSocketModeSlack]:
    fake = FakeSocketModeSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def socket_bot(tmp_path: Path, fake: FakeSocketModeSlack) -> AsyncIterator[SocketBot]:
    settings = socket_mode_settings(tmp_path, fake)
    assert settings.slack.socket_mode_enabled and settings.slack.app_token
    runtime = await Runtime.open(settings)
    try:
        bolt = build_bolt_app(runtime, transport=Transport.SOCKET_MODE)
        try:
            transport = SocketModeTransport(
                bolt.app, settings.slack.app_token,
                silence_seconds=settings.slack.socket_watchdog_seconds)
            try:
                # connect() retries forever while Slack is unreachable: do not hang here
                await asyncio.wait_for(transport.start(), 10)
                yield SocketBot(fake, runtime, transport)
            finally:
                await transport.stop()
        finally:
            await bolt.close()  # replies in flight, and the response_url session
    finally:
        await runtime.close()


async def test_slash_command_over_socket_mode_is_acked_and_answered(
        socket_bot: SocketBot, fake: FakeSocketModeSlack) -> None:
    conn = await fake.wait_for_connection()
    (opened,) = fake.connections_opened()
    assert opened.headers["Authorization"] == f"Bearer {APP_TOKEN}"  # the app token, not xoxb

    envelope_id, key = await socket_bot.command("whoami")
    ack = await fake.wait_for_ack(envelope_id, timeout=5)
    reply = await socket_bot.reply(key, timeout=5)

    assert ack.connection == conn.number
    assert ack.payload in (None, {})  # a plain ack; the answer goes to response_url
    assert ADMIN in reply["text"]
    assert "socket_mode" in reply["text"]
    assert reply["response_type"] == "ephemeral"
    assert len(fake.responses(key)) == 1
    assert fake.connection_count == 1
    assert socket_bot.transport.reconnects == 0


async def test_healthy_connection_is_kept(socket_bot: SocketBot,
                                          fake: FakeSocketModeSlack) -> None:
    """Pings answered for twice the watchdog limit: nothing is replaced."""
    conn = await fake.wait_for_connection()
    await eventually(lambda: conn.pings >= 8, timeout=5, what="eight answered pings")
    assert socket_bot.transport.reconnects == 0
    assert fake.connection_count == 1
    assert not conn.closed
    await socket_bot.round_trip("whoami", connection=conn)


async def test_dropped_connection_is_replaced_and_commands_flow_again(
        socket_bot: SocketBot, fake: FakeSocketModeSlack) -> None:
    first = await fake.wait_for_connection()
    await socket_bot.round_trip("whoami")

    await fake.drop(first)

    second = await fake.wait_for_connection(number=2, timeout=10)
    assert len(fake.connections_opened()) >= 2  # a fresh URL, not the dead one again
    assert second.ticket != first.ticket
    ack, reply = await socket_bot.round_trip("whoami", user_id=STRANGER)
    assert ack.connection >= second.number
    assert STRANGER in reply["text"]


async def test_silent_connection_is_replaced_and_commands_flow_again(
        socket_bot: SocketBot, fake: FakeSocketModeSlack) -> None:
    first = await fake.wait_for_connection()
    await socket_bot.round_trip("whoami")

    await fake.go_silent(first)

    second = await fake.wait_for_connection(number=2, timeout=10)
    # Replaced through a fresh apps.connections.open (by the watchdog or the SDK's own
    # monitor, whichever noticed first), not by reconnecting to the silent ticket.
    assert second.ticket != first.ticket
    assert len(fake.connections_opened()) >= 2
    await fake.wait_closed(first, timeout=10)  # the app let go of the silent socket
    ack, reply = await socket_bot.round_trip("whoami")
    assert ack.connection >= second.number
    assert ADMIN in reply["text"]


async def test_disconnect_message_moves_the_app_to_a_new_connection(
        socket_bot: SocketBot, fake: FakeSocketModeSlack) -> None:
    """Slack's routine refresh: it asks the app to move, then the old link goes away."""
    first = await fake.wait_for_connection()

    await fake.send_disconnect(reason="refresh_requested", connection=first)

    second = await fake.wait_for_connection(number=2, timeout=5)
    await fake.wait_closed(first, timeout=5)  # the app closed the old one itself
    ack, reply = await socket_bot.round_trip("whoami")
    assert ack.connection >= second.number
    assert ADMIN in reply["text"]


async def test_watchdog_reconnects_when_the_sdk_monitor_is_gone(
        socket_bot: SocketBot, fake: FakeSocketModeSlack) -> None:
    """bolt-python #1529: the SDK's own monitor task dies; only the watchdog is left."""
    first = await fake.wait_for_connection()
    await kill_sdk_monitor(socket_bot)

    await fake.drop(first)

    await eventually(lambda: socket_bot.transport.reconnects >= 1, timeout=10,
                     what="the watchdog to reconnect")
    second = await fake.wait_for_connection(number=2, timeout=5)
    ack, reply = await socket_bot.round_trip("whoami")
    assert ack.connection >= second.number
    assert ADMIN in reply["text"]


async def test_watchdog_restarts_a_session_whose_sdk_monitor_died(
        socket_bot: SocketBot, fake: FakeSocketModeSlack) -> None:
    """The socket stays up but nobody pings on it any more: the watchdog sees the silence."""
    first = await fake.wait_for_connection()
    await kill_sdk_monitor(socket_bot)

    await eventually(lambda: socket_bot.transport.reconnects >= 1, timeout=10,
                     what="the watchdog to notice the silence")
    second = await fake.wait_for_connection(number=2, timeout=5)
    await fake.wait_closed(first, timeout=5)
    monitor = socket_bot.transport._client.current_session_monitor
    assert monitor is not None
    assert not monitor.done()  # pinging again
    ack, reply = await socket_bot.round_trip("whoami")
    assert ack.connection >= second.number
    assert ADMIN in reply["text"]


async def test_watchdog_leaves_alone_a_session_the_sdk_has_just_restored(
        socket_bot: SocketBot, fake: FakeSocketModeSlack,
        caplog: pytest.LogCaptureFixture) -> None:
    """Both notice the dead socket; the SDK reconnects first (it holds the connect lock
    meanwhile); the watchdog, let in after it, must not throw the new session away."""
    caplog.set_level(logging.INFO, logger="bot.socket_mode")
    first = await fake.wait_for_connection()
    client = socket_bot.transport._client
    lock = client.connect_operation_lock
    async with lock:  # as the SDK's monitor does around its reconnect
        await fake.drop(first)
        await eventually(lambda: "connection lost" in caplog.text, timeout=5,
                         what="the watchdog to notice the dropped connection")
        client.wss_uri = await client.issue_new_wss_url()
        await client.connect()  # type: ignore[no-untyped-call]
        second = await fake.wait_for_connection(number=2, timeout=5)

    await eventually(lambda: "already replaced" in caplog.text, timeout=5,
                     what="the watchdog to see the new session")
    assert socket_bot.transport.reconnects == 0
    assert fake.connection_count == 2 and not second.closed
    ack, _ = await socket_bot.round_trip("whoami", connection=second)
    assert ack.connection == second.number
