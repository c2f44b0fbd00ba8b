"""A local fake of Slack's Socket Mode side, on top of the Web API fake.

Like real Slack: ``apps.connections.open``, called with the app-level token (xapp-…),
hands out a websocket URL with a fresh ticket; on connect the server says ``hello``,
then pushes envelopes that the app acknowledges with ``{"envelope_id": …}``.

    fake = FakeSocketModeSlack(); await fake.start()
    conn = await fake.wait_for_connection()
    eid = await fake.push_slash_command("whoami", user_id="U0ADMIN01",
                                        response_url=fake.response_url("k"))
    await fake.wait_for_ack(eid)
    await fake.drop()          # the TCP connection dies, no close frame
    await fake.go_silent()     # the socket stays open, nothing comes back, not even pongs

Only the server is fake: the bot's real slack_sdk SocketModeClient connects to it over
loopback with a real websocket.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from tests.fakes.slack_api import FakeSlack, RecordedCall, _read_body
from tests.fakes.slack_payloads import slash_command_form

log = logging.getLogger(__name__)

APP_ID = "A0CTBOT"
T = TypeVar("T")


@dataclass
class SocketConnection:
    """One websocket connection the app made, as the server sees it."""

    number: int  # 1 for the first connection, 2 for the next, …
    ticket: str
    ws: web.WebSocketResponse
    transport: Any  # asyncio.Transport of the TCP connection
    opened_at: float = field(default_factory=time.monotonic)
    silent: bool = False  # no pongs, no envelopes, incoming frames ignored
    closed: bool = False
    pings: int = 0  # pings received from the app (answered or not)
    received: list[dict[str, Any]] = field(default_factory=list)  # text frames, parsed


@dataclass
class Ack:
    envelope_id: str
    payload: dict[str, Any] | None
    connection: int
    at: float = field(default_factory=time.monotonic)


class FakeSocketModeSlack(FakeSlack):
    """FakeSlack plus Socket Mode: ``apps.connections.open`` and a websocket at /link."""

    def __init__(self, *, app_token_prefix: str = "xapp-") -> None:
        super().__init__()
        self.app_token_prefix = app_token_prefix
        self.connections: list[SocketConnection] = []
        self.acks: list[Ack] = []
        self.rejected_links = 0  # websocket handshakes with an unknown ticket
        self._tickets: set[str] = set()
        self._ticket_numbers = itertools.count(1)
        self._socket_changed = asyncio.Condition()
        self.extra_routes.append(web.get("/link", self._link))

    # --- what tests read ------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        return len(self.connections)

    @property
    def open_connections(self) -> list[SocketConnection]:
        return [c for c in self.connections if not c.closed]

    def connections_opened(self) -> list[RecordedCall]:
        """The apps.connections.open calls, accepted or not."""
        return self.of("apps.connections.open")

    async def wait_for_connection(self, *, number: int = 1,
                                  timeout: float = 10.0) -> SocketConnection:
        """The open, talking connection numbered ``number`` or later (the newest one)."""
        def newest() -> SocketConnection | None:
            live = [c for c in self.connections
                    if c.number >= number and not c.closed and not c.silent]
            return live[-1] if live else None

        return await self._wait(newest, timeout)

    async def wait_for_ack(self, envelope_id: str, *, timeout: float = 10.0) -> Ack:
        def found() -> Ack | None:
            return next((a for a in self.acks if a.envelope_id == envelope_id), None)

        return await self._wait(found, timeout)

    async def wait_closed(self, connection: SocketConnection, *,
                          timeout: float = 10.0) -> None:
        await self._wait(lambda: True if connection.closed else None, timeout)

    # --- what tests do --------------------------------------------------------------

    async def push(self, envelope: dict[str, Any], *,
                   connection: SocketConnection | None = None) -> SocketConnection:
        """Send an envelope on ``connection`` (default: the newest talking one)."""
        conn = connection or await self.wait_for_connection()
        if conn.closed or conn.silent:
            raise RuntimeError(f"connection {conn.number} cannot carry envelopes")
        await conn.ws.send_str(json.dumps(envelope))
        return conn

    async def push_slash_command(self, text: str, *, user_id: str, response_url: str,
                                 command: str = "/ct", channel_id: str = "C0OPS",
                                 connection: SocketConnection | None = None,
                                 retry_attempt: int = 0) -> str:
        """Push a ``slash_commands`` envelope; returns its envelope_id."""
        form = slash_command_form(text, user_id=user_id, response_url=response_url,
                                  command=command, channel_id=channel_id)
        payload = dict(parse_qsl(form.decode()))
        payload.pop("is_enterprise_install", None)  # not part of the Socket Mode payload
        envelope_id = str(uuid.uuid4())
        await self.push({
            "envelope_id": envelope_id,
            "type": "slash_commands",
            "accepts_response_payload": True,
            "retry_attempt": retry_attempt,
            "retry_reason": "",
            "payload": payload,
        }, connection=connection)
        return envelope_id

    async def send_disconnect(self, *, reason: str = "refresh_requested",
                              connection: SocketConnection | None = None) -> None:
        """Slack's polite way of ending a connection: the app should open a new one."""
        await self.push({"type": "disconnect", "reason": reason,
                         "debug_info": {"host": "applink-fake"}}, connection=connection)

    async def drop(self, connection: SocketConnection | None = None) -> SocketConnection:
        """Kill the TCP connection abruptly: no close frame, a reset instead of a FIN."""
        conn = connection or await self.wait_for_connection()
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:  # SO_LINGER 0: close() sends RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.transport.abort()
        await self._mark_closed(conn)
        return conn

    async def go_silent(self, connection: SocketConnection | None = None) -> SocketConnection:
        """Keep the socket open but answer nothing any more: no pongs, no envelopes."""
        conn = connection or await self.wait_for_connection()
        conn.silent = True
        async with self._socket_changed:
            self._socket_changed.notify_all()
        return conn

    async def stop(self) -> None:
        for conn in self.open_connections:  # handlers waiting on sockets would stall cleanup
            conn.transport.abort()
            await self._mark_closed(conn)
        await super().stop()

    # --- the server side ------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["method"] != "apps.connections.open":
            return await super()._api(request)
        body = await _read_body(request)
        await self.record(RecordedCall(request.path, "apps.connections.open", body,
                                       dict(request.headers)))
        auth = request.headers.get("Authorization", "")
        if not auth:
            return web.json_response({"ok": False, "error": "not_authed"})
        if not auth.removeprefix("Bearer ").startswith(self.app_token_prefix):
            return web.json_response({"ok": False, "error": "not_allowed_token_type"})
        ticket = f"{next(self._ticket_numbers)}-{uuid.uuid4().hex[:8]}"
        self._tickets.add(ticket)
        return web.json_response({"ok": True,
                                  "url": f"ws://127.0.0.1:{self.port}/link?ticket={ticket}"})

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            self.rejected_links += 1
            return web.Response(status=401, text="invalid ticket")
        # autoping off: pongs are sent by hand below, so that a connection can go silent.
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        async with self._socket_changed:
            conn = SocketConnection(number=len(self.connections) + 1, ticket=ticket, ws=ws,
                                    transport=request.transport)
            self.connections.append(conn)
            self._socket_changed.notify_all()
        log.info("fake socket mode: connection %d opened", conn.number)
        try:
            await ws.send_json({
                "type": "hello",
                "num_connections": len(self.open_connections),
                "debug_info": {"host": "applink-fake", "build_number": 1,
                               "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            })
            async for msg in ws:
                if msg.type is WSMsgType.PING:
                    conn.pings += 1
                    if not conn.silent:
                        await ws.pong(msg.data)
                elif msg.type is WSMsgType.TEXT and not conn.silent:
                    await self._received(conn, msg.data)
        except (ConnectionError, RuntimeError) as exc:  # the socket went away under us
            log.info("fake socket mode: connection %d: %s", conn.number, exc)
        finally:
            await self._mark_closed(conn)
            log.info("fake socket mode: connection %d closed", conn.number)
        return ws

    async def _received(self, conn: SocketConnection, data: str) -> None:
        message: dict[str, Any] = json.loads(data)
        conn.received.append(message)
        if "envelope_id" in message:
            async with self._socket_changed:
                self.acks.append(Ack(message["envelope_id"], message.get("payload"),
                                     conn.number))
                self._socket_changed.notify_all()

    async def _mark_closed(self, conn: SocketConnection) -> None:
        if conn.closed:
            return
        async with self._socket_changed:
            conn.closed = True
            self._socket_changed.notify_all()

    async def _wait(self, probe: Callable[[], T | None], timeout: float) -> T:
        async def waited() -> T:
            async with self._socket_changed:
                while (found := probe()) is None:
                    await self._socket_changed.wait()
                return found

        return await asyncio.wait_for(waited(), timeout)
