"""GET /metrics over a real socket: the token, and what a stranger can send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bot.web import build_web_app

TOKEN = "s3cret-token"


@pytest.fixture
async def metrics_url() -> AsyncIterator[tuple[str, int]]:
    app = build_web_app(metrics=lambda: b"# TYPE ctbot_x gauge\nctbot_x 1.0\n",
                        metrics_token=TOKEN)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield "127.0.0.1", runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def raw_get(host: str, port: int, authorization: bytes | None) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if authorization is not None:
        request += b"Authorization: " + authorization + b"\r\n"
    writer.write(request + b"\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("authorization", [
    None, b"Bearer wrong", b"Bearer  " + TOKEN.encode(), b"Bearer" + TOKEN.encode(),
    b"Bearer \xff\xfe", b"Bearer " + TOKEN.encode() + b"\xff", b"Basic czNjcmV0",
])
async def test_metrics_without_the_token_is_401(metrics_url, authorization):
    status, _ = await raw_get(*metrics_url, authorization)
    assert status == 401


@pytest.mark.parametrize("scheme", [b"Bearer", b"bearer", b"BEARER"])
async def test_metrics_with_the_token_parse(metrics_url, scheme):
    status, body = await raw_get(*metrics_url, scheme + b" " + TOKEN.encode())
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["ctbot_x"].samples[0].value == 1.0
