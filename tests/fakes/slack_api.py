"""A local fake of Slack's Web API that records every call.

Slack's servers are unreachable from here, so this — and only this — is faked: the bot's
real AsyncWebClient and Bolt's real response_url sender talk HTTP to it over loopback.

    fake = FakeSlack(); await fake.start()
    fake.api_url            -> "http://127.0.0.1:PORT/api/"   (SLACK_API_URL)
    fake.response_url("x")  -> "http://127.0.0.1:PORT/response/x"
    await fake.wait_for(lambda c: c.path == "/response/x")
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web


@dataclass
class RecordedCall:
    path: str
    method: str  # the Slack API method ("chat.postMessage") or "response_url"
    body: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    answer: dict[str, Any] = field(default_factory=dict)  # what the fake answered

    @property
    def ts(self) -> str | None:
        """The ts Slack gave a message this call posted."""
        ts = self.answer.get("ts")
        return str(ts) if ts else None


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []
        self._changed = asyncio.Condition()
        self._ts = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0
        # Overrides per API method: a dict answer, or a callable building one.
        self.answers: dict[str, dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self.extra_routes: list[web.RouteDef] = []
        # response_url keys that never answer (a destination that hangs).
        self.hanging: set[str] = set()
        self._release = asyncio.Event()  # lets hanging replies go when the fake stops

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def response_url(self, key: str) -> str:
        return f"{self.base_url}/response/{key}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/response/{key}", self._response)
        app.router.add_routes(self.extra_routes)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def of(self, method: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method]

    def responses(self, key: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.path == f"/response/{key}"]

    async def wait_for(self, predicate: Callable[[RecordedCall], bool], *,
                       timeout: float = 10.0, count: int = 1) -> list[RecordedCall]:
        async def matched() -> list[RecordedCall]:
            async with self._changed:
                while True:
                    found = [c for c in self.calls if predicate(c)]
                    if len(found) >= count:
                        return found
                    await self._changed.wait()

        return await asyncio.wait_for(matched(), timeout)

    async def record(self, call: RecordedCall) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await _read_body(request)
        call = RecordedCall(request.path, method, body, dict(request.headers))
        answer = self.answers.get(method)
        if request.headers.get("Authorization", "") == "":
            call.answer = {"ok": False, "error": "not_authed"}
        elif callable(answer):
            call.answer = answer(body)
        elif answer is not None:
            call.answer = answer
        else:
            call.answer = self._default_answer(method, body)
        await self.record(call)
        return web.json_response(call.answer)

    def _default_answer(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "url": "https://fake.slack.com/", "team": "Fake",
                    "user": "ctbot", "team_id": "T0FAKE", "user_id": "U0BOT",
                    "bot_id": "B0BOT", "is_enterprise_install": False}
        if method in ("chat.postMessage", "chat.update"):
            ts = body.get("ts") or f"1700000000.{next(self._ts):06d}"
            return {"ok": True, "channel": body.get("channel"), "ts": ts,
                    "message": {"text": body.get("text", "")}}
        return {"ok": True}

    async def _response(self, request: web.Request) -> web.Response:
        body = await _read_body(request)
        await self.record(RecordedCall(request.path, "response_url", body,
                                       dict(request.headers)))
        if request.match_info["key"] in self.hanging:
            await self._release.wait()  # until the fake stops
        return web.Response(text="ok")


async def _read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    if request.content_type == "application/json":
        data: dict[str, Any] = json.loads(raw)
        return data
    form = dict(parse_qsl(raw.decode()))
    for key, value in list(form.items()):
        if value.startswith(("[", "{")):
            with contextlib.suppress(ValueError):
                form[key] = json.loads(value)
    return form

