"""A running ctbot web app on a real loopback socket, talking to a local fake Slack."""

from __future__ import annotations

import io
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.runtime import Runtime
from bot.settings import Settings, load_settings
from bot.slack_app import build_bolt_app
from bot.slack_guard import SlackRequestGuard
from bot.web import build_web_app
from handlers.context import Transport
from handlers.registry import Registry
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_payloads import signed_headers, slash_command_form

ADMIN, OPERATOR, VIEWER, STRANGER = "U0ADMIN01", "U0OPER01", "U0VIEW01", "U0STRANGE"


def write_config(path: Path, fake: FakeSlack | None = None) -> Path:
    """Roles for the test users; replies allowed to the fake Slack's origin only."""
    path.write_text(
        "[roles]\n"
        f'admins = ["{ADMIN}"]\n'
        f'operators = ["{OPERATOR}"]\n'
        f'viewers = ["{VIEWER}"]\n'
        'default = "none"\n'
        + (f'[slack]\nresponse_origins = ["{fake.base_url}"]\n' if fake else ""),
        encoding="utf-8",
    )
    return path


@dataclass
class SlackBot:
    url: str
    secret: str
    fake: FakeSlack
    runtime: Runtime
    session: aiohttp.ClientSession

    async def post_raw(self, body: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        data = io.BytesIO(body) if len(body) > 1024 * 1024 else body
        async with self.session.post(f"{self.url}/slack/events", data=data,
                                     headers=headers) as response:
            await response.read()
            return response

    async def command(self, text: str, *, user_id: str = ADMIN,
                      key: str | None = None) -> tuple[aiohttp.ClientResponse, str]:
        """POST a signed `/ct TEXT`; returns the response and the response_url key."""
        key = key or secrets.token_hex(6)
        body = slash_command_form(text, user_id=user_id,
                                  response_url=self.fake.response_url(key))
        return await self.post_raw(body, signed_headers(self.secret, body)), key

    async def reply(self, key: str, *, timeout: float = 10.0) -> dict[str, object]:
        calls = await self.fake.wait_for(lambda c: c.path == f"/response/{key}",
                                         timeout=timeout)
        return calls[0].body


def slack_settings(tmp_path: Path, fake: FakeSlack, secret: str) -> Settings:
    return load_settings(write_config(tmp_path / "ctbot.toml", fake), {
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_SIGNING_SECRET": secret,
        "SLACK_API_URL": fake.api_url,
        "CTBOT_STATE_DIR": str(tmp_path / "state"),
    })


@pytest.fixture
def registry_factory() -> Callable[[], Registry | None]:
    """Tests override this to add verbs of their own to the pipeline."""
    return lambda: None


@pytest.fixture
async def slack_bot(tmp_path: Path, fake_slack: FakeSlack,
                    registry_factory: Callable[[], Registry | None]
                    ) -> AsyncIterator[SlackBot]:
    secret = secrets.token_hex(16)
    settings = slack_settings(tmp_path, fake_slack, secret)
    runtime = await Runtime.open(settings, registry=registry_factory())
    bolt = build_bolt_app(runtime, transport=Transport.SLACK)
    app = build_web_app(bolt_app=bolt.app, guard=SlackRequestGuard(secret))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    session = aiohttp.ClientSession()
    try:
        yield SlackBot(f"http://127.0.0.1:{port}", secret, fake_slack, runtime, session)
    finally:
        await session.close()
        await runner.cleanup()
        await bolt.close()
        await runtime.close()
